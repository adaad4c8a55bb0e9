"""Write acdistill/teachers/robustbench_clean_acc.json: the clean accuracy RobustBench lists for each entry.

RobustBench keeps one JSON file per leaderboard entry in its repository (model_info/<dataset>/<threat>/<name>.json),
not in the package that pip installs; this table carries the `clean_acc` field of each, so that `fetch-teacher` can
compare a zoo teacher with the accuracy its entry states, offline.

    git clone https://github.com/RobustBench/robustbench && python tools/robustbench_clean_acc.py robustbench
"""

import json
import subprocess
import sys
from pathlib import Path

DATASETS = ("cifar10", "cifar100")
THREAT_MODELS = ("Linf", "L2", "corruptions")


def main(checkout: Path) -> None:
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    table: dict = {"source": f"RobustBench/robustbench model_info at {commit}"}
    for dataset in DATASETS:
        for threat in THREAT_MODELS:
            folder = checkout / "model_info" / dataset / threat
            entries = {p.stem: float(json.loads(p.read_text())["clean_acc"]) for p in sorted(folder.glob("*.json"))}
            if entries:
                table.setdefault(dataset, {})[threat] = entries
    out = Path(__file__).resolve().parents[1] / "acdistill" / "teachers" / "robustbench_clean_acc.json"
    out.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    print(f"wrote {out}: {sum(len(v) for d in DATASETS for v in table.get(d, {}).values())} entries")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
