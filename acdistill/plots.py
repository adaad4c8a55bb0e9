"""PNG figures (matplotlib, Agg backend: no display needed). Each function takes plain data, so the data can be
tested apart from the drawing; DVC renders the same PNGs (and the JSON beside some of them) with `dvc plots show`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from acdistill.io import write_files

if TYPE_CHECKING:
    from acdistill.analysis import FeatureCloud


@contextmanager
def figure(path: Path, ncols: int = 1, *, width: float = 5.0, height: float = 3.6) -> Iterator[tuple]:
    """A figure of `ncols` panels, written atomically to `path` when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), dpi=120, squeeze=False, layout="constrained")
    try:
        yield fig, list(axes[0])
        png = io.BytesIO()
        fig.savefig(png, format="png")
        write_files({path: png.getvalue()})
    finally:
        plt.close(fig)


def eps_sweep_png(curves: dict[str, list[dict]], path: Path, *, title: str, attack: str, norm: str) -> None:
    """Accuracy against eps, one line per model; L-inf budgets are labelled in 1/255 units, as papers write them."""
    scale, unit = (255, " (x 1/255)") if norm == "Linf" else (1, "")
    with figure(path) as (fig, (ax,)):
        for name, rows in curves.items():
            ax.plot([r["eps"] * scale for r in rows], [r["accuracy"] for r in rows], marker="o", label=name)
        ax.set(xlabel=f"{norm} eps{unit}", ylabel=f"accuracy under {attack} (%)", title=title, ylim=(0, 100))
        if len(curves) > 1:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)


def correlation_png(panels: dict[str, np.ndarray], path: Path, *, title: str, class_names: list[str]) -> None:
    """|corr(teacher) - corr(student)| heatmaps on one shared colour scale, so the panels can be compared."""
    vmax = max(float(np.max(m)) for m in panels.values()) or 1.0
    with figure(path, len(panels), width=4.6, height=4.8) as (fig, axes):
        for ax, (name, matrix) in zip(axes, panels.items()):
            image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=vmax)
            ax.set_title(f"{name}\nmean {np.mean(matrix):.3f}", fontsize=10)
            ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
            ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
        fig.colorbar(image, ax=axes, shrink=0.8)
        fig.suptitle(title, fontsize=10)


def tsne_png(clouds: dict[str, FeatureCloud], path: Path, *, labels: tuple[str, str, str], title: str) -> None:
    """One panel per model: natural class a, natural class b, class b attacked toward a (the paper's Fig. 5)."""
    colours = ("tab:blue", "tab:green", "tab:red")
    with figure(path, len(clouds), width=4.0, height=4.0) as (fig, axes):
        for ax, (name, cloud) in zip(axes, clouds.items()):
            for group, (label, colour) in enumerate(zip(labels, colours)):
                pts = cloud.points[cloud.groups == group]
                ax.scatter(pts[:, 0], pts[:, 1], s=8, c=colour, label=label, alpha=0.7)
            ax.set_title(f"{name}\n{cloud.fooled:.0f} % of {labels[2]} fooled", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].legend(fontsize=8, loc="best")
        fig.suptitle(title, fontsize=10)


# Two palettes with no colour in common: a loss never looks like an accuracy on the other axis.
LOSS_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:olive", "tab:cyan", "tab:pink")
ACCURACY_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:gray")


def series_colours(names: list[str]) -> dict[str, str]:
    """A colour per curve: the loss terms (loss/...) from LOSS_COLOURS, the accuracies (..._acc) from
    ACCURACY_COLOURS, each in order (cycling past the palette's end)."""
    losses = [n for n in names if n.startswith("loss/")]
    accuracies = [n for n in names if n.endswith("_acc")]
    return {n: LOSS_COLOURS[i % len(LOSS_COLOURS)] for i, n in enumerate(losses)} | {
        n: ACCURACY_COLOURS[i % len(ACCURACY_COLOURS)] for i, n in enumerate(accuracies)
    }


def epoch_axis(ax, last_epoch: int) -> None:
    """Epochs 1..last_epoch on the x axis, with whole-epoch ticks only (also for a one-epoch run)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlim(0.5, last_epoch + 0.5)


def curves_png(stages: dict[str, dict[str, list[tuple[float, float]]]], path: Path) -> None:
    """Per training stage: its loss terms (left axis) and monitor accuracies (right axis) against epoch."""
    with figure(path, len(stages), width=4.6, height=4.4) as (fig, axes):
        for ax, (stage, series) in zip(axes, stages.items()):
            acc_ax = ax.twinx()
            terms = [n for n in series if n.startswith("loss/") and n != "loss/total"]
            if len(terms) == 1:  # the total is that one term: drawing both hides one line under the other
                series = {n: v for n, v in series.items() if n != "loss/total"}
            colours = series_colours(list(series))
            for name, points in series.items():
                steps, values = zip(*points)
                epochs = [s + 1 for s in steps]
                if name.startswith("loss/"):
                    ax.plot(epochs, values, marker="o", markersize=3, color=colours[name], label=name)
                elif name.endswith("_acc"):
                    style = {"marker": "o", "markersize": 3, "linestyle": "--", "color": colours[name]}
                    acc_ax.plot(epochs, values, label=f"{name} (%)", **style)
            ax.set(xlabel="epoch", ylabel="loss", title=stage)
            epoch_axis(ax, int(max(s + 1 for points in series.values() for s, _ in points)))
            acc_ax.set(ylabel="monitor accuracy (%)", ylim=(0, 100))
            handles = ax.get_legend_handles_labels()[0] + acc_ax.get_legend_handles_labels()[0]
            ax.legend(
                handles,
                [h.get_label() for h in handles],
                fontsize=7,
                ncol=2,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.2),
            )
            ax.grid(alpha=0.3)
