"""PNG figures (matplotlib, Agg backend: no display needed); DVC renders the same data from the JSON beside them."""
from __future__ import annotations

from pathlib import Path

from acdistill.io import atomic_path


def eps_sweep_png(rows: list[dict], path: Path, *, title: str, attack: str, norm: str) -> None:
    """Accuracy against eps; L-inf budgets are labelled in 1/255 units, as papers write them."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    scale, unit = (255, " (x 1/255)") if norm == "Linf" else (1, "")
    eps = [r["eps"] * scale for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    ax.plot(eps, [r["accuracy"] for r in rows], marker="o")
    ax.set(xlabel=f"{norm} eps{unit}", ylabel=f"accuracy under {attack} (%)", title=title, ylim=(0, 100))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
