"""Source `robustbench`: an entry of RobustBench's model zoo, built by robustbench's own code from its weights file,
with the clean accuracy that RobustBench's leaderboard lists for it (`robustbench_clean_acc.json`)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from acdistill.checkpoint import sha256_file
from acdistill.data import DATASETS
from acdistill.errors import AcdistillError, key_error
from acdistill.io import atomic_path
from acdistill.models import ImageClassifier, assemble
from acdistill.models.zoo import PREFIX, load_zoo_network, robustbench_dataset, split_head, zoo_entry
from acdistill.serialization import read_torch_file
from acdistill.teachers.base import TeacherSource, file_digest, register_source

if TYPE_CHECKING:
    from acdistill.config import TeacherParams

CLEAN_ACC_TABLE = Path(__file__).with_name("robustbench_clean_acc.json")


class ZooParams(BaseModel):
    """`teacher.robustbench`: a RobustBench model-zoo entry; its dataset is `data.dataset`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the entry's name in RobustBench, e.g. Zhang2019Theoretically")
    threat_model: Literal["Linf", "L2", "corruptions"] = "Linf"
    model_dir: str = Field(
        "models/robustbench",
        description=(
            "robustbench's model directory: the weights are <model_dir>/<dataset>/<threat_model>/<name>.pt, downloaded "
            "there when absent"
        ),
    )


def zoo_path(z: ZooParams, dataset: str) -> Path:
    """Where robustbench keeps an entry's weights: <model_dir>/<dataset>/<threat_model>/<name>.pt."""
    return Path(z.model_dir) / robustbench_dataset(dataset) / z.threat_model / f"{z.name}.pt"


def zoo_file(z: ZooParams, dataset: str, sha256: str | None) -> Path:
    """The entry's weights file: the one already in the model directory (no network), or a download through
    robustbench's own downloader, written beside its destination and renamed into place once complete (and once
    its sha256 matches `sha256`, when given)."""
    entry = zoo_entry(z.name, dataset, z.threat_model)
    path = zoo_path(z, dataset)
    if path.is_file():
        return path
    import robustbench.utils

    with atomic_path(path, claim=False) as tmp:
        try:  # robustbench prints the temporary file's name on stdout; gdown's progress bar stays on stderr
            with contextlib.redirect_stdout(io.StringIO()):
                robustbench.utils.download_gdrive_new(entry["gdrive_id"], str(tmp))
        except Exception as e:  # noqa: BLE001 - any failure of the downloader (no network, quota, an HTML page)
            raise AcdistillError(
                f"RobustBench model {z.name} is not at {path} and could not be downloaded "
                f"({e.__class__.__name__}); on a machine with network, get it from "
                f'https://drive.google.com/uc?id={entry["gdrive_id"]} (or run `python -c "from robustbench.utils '
                f"import load_model; load_model('{z.name}', model_dir='m', dataset='{dataset}', "
                f"threat_model='{z.threat_model}')\"`, which writes m/{dataset}/{z.threat_model}/{z.name}.pt), "
                f"then copy it to {path}"
            ) from None
        if sha256 and sha256_file(tmp) != sha256.lower():
            raise AcdistillError(
                f"the download of {z.name} has sha256 {sha256_file(tmp)}, not teacher.sha256 {sha256}; nothing was kept"
            )
    return path


def expected_clean_acc(name: str, dataset: str, threat_model: str) -> float | None:
    """The clean accuracy (percent, full test set) that RobustBench's leaderboard lists for an entry."""
    table = json.loads(CLEAN_ACC_TABLE.read_text())
    return table.get(robustbench_dataset(dataset), {}).get(threat_model, {}).get(name)


@register_source
class Robustbench(TeacherSource):
    name = "robustbench"
    Params = ZooParams

    def check(self, t: TeacherParams) -> None:
        if t.section("robustbench") is None:
            raise key_error("source", "source 'robustbench' needs 'robustbench: {name: ...}'")
        for key in ("normalize", "checkpoint_key", "expected_clean_acc"):
            if getattr(t, key) is not None:
                raise key_error(
                    key, f"'{key}' does not apply to source 'robustbench' (robustbench's code and leaderboard say it)"
                )
        if t.format != "auto":
            raise key_error("format", "'format' does not apply to source 'robustbench' (robustbench's code reads it)")

    def open(self, t: TeacherParams, dataset: str, arch: str | None) -> tuple[ImageClassifier, dict[str, Any]]:
        if arch is not None:
            raise AcdistillError("--arch does not apply to source robustbench: the entry names its architecture")
        z = t.section("robustbench")
        path = zoo_file(z, dataset, t.sha256)
        digest = file_digest(path, t.sha256)
        read_torch_file(path)  # refuses pickled code before robustbench's loader opens the file
        network = load_zoo_network(z.name, dataset, z.threat_model, z.model_dir)
        body, head = split_head(network, DATASETS.get(dataset).num_classes, z.name)
        model = assemble(PREFIX + z.name, body, head, dataset=dataset, threat_model=z.threat_model)
        mean, std = model.normalization()
        return model.eval(), {
            "source": self.name,
            "robustbench": z.model_dump(),
            "file": str(path),
            "file_sha256": digest,
            "format": "robustbench",
            "normalization": f"inside robustbench's code (buffers: mean {mean}, std {std})",
            "expected_clean_acc": expected_clean_acc(z.name, dataset, z.threat_model),
        }
