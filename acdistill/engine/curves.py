"""Per-epoch training curves in dvclive's file layout: through dvclive when it is installed, else written here.

The layout, as dvclive 3 writes it:
- `<dir>/plots/metrics/<name>.tsv` for each metric (`loss/nce` -> `plots/metrics/loss/nce.tsv`): a header
  `step<TAB><the name's last part>`, then one row per epoch, step 0 being the first;
- `<dir>/metrics.json`: each metric's last value, nested by the parts of its name, and the last `step`.

`dvc plots show` (dvc.yaml declares the `plots/metrics` directories) and `acdistill figures`
(`acdistill.analysis.read_dvclive_series`) read the files of either writer alike. Both start a run from empty
curves, as dvclive does; the trainer logs a resumed run's saved history again first.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Protocol


class Curves(Protocol):
    def log(self, record: dict[str, Any]) -> None:
        """One epoch's values (every key but `epoch`), as the next step."""

    def end(self) -> None:
        """After the last epoch."""


class DvcliveCurves:
    def __init__(self, live_dir: Path):
        from dvclive import Live

        self.live = Live(str(live_dir), save_dvc_exp=False, dvcyaml=None)

    def log(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key != "epoch":
                self.live.log_metric(key, value)
        self.live.next_step()

    def end(self) -> None:
        self.live.end()


class TsvCurves:
    """dvclive's files without dvclive (see the module docstring), written as each epoch is logged."""

    def __init__(self, live_dir: Path):
        self.dir, self.step, self.summary = live_dir, 0, {}
        shutil.rmtree(live_dir / "plots" / "metrics", ignore_errors=True)
        (live_dir / "metrics.json").unlink(missing_ok=True)

    def log(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key == "epoch":
                continue
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)  # as dvclive keeps them: JSON has no NaN
            path = self.dir / "plots" / "metrics" / f"{key}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            with path.open("a", encoding="utf-8", newline="") as f:
                writer = csv.writer(f, delimiter="\t", lineterminator=os.linesep)
                if new:
                    writer.writerow(["step", key.rsplit("/", 1)[-1]])
                writer.writerow([self.step, value])
            *parents, leaf = key.split("/")
            node = self.summary
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        self.summary["step"] = self.step
        (self.dir / "metrics.json").write_text(json.dumps(self.summary, indent=4) + "\n", encoding="utf-8")
        self.step += 1

    def end(self) -> None:
        pass


def open_curves(live_dir: Path) -> Curves:
    """The curves of one training run in `live_dir`: dvclive's writer when the package is installed, else
    `TsvCurves`, which writes the same files."""
    return DvcliveCurves(live_dir) if importlib.util.find_spec("dvclive") is not None else TsvCurves(live_dir)
