"""Teachers from outside acdistill: a released checkpoint file, a URL, or a RobustBench model-zoo entry.

`import_teacher` builds the model (see `acdistill.formats` for files, `acdistill.models.zoo` for the zoo), measures
its clean accuracy on the first 500 test images, compares it with the accuracy its source states (RobustBench lists
one per entry, in `robustbench_clean_acc.json`; a file's may be given as `teacher.expected_clean_acc`), and writes
the checkpoint with a sidecar that records where the teacher came from and what was checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from acdistill.checkpoint import load_model, save_model, sha256_file, sidecar_path
from acdistill.config import Params, TeacherParams
from acdistill.data import DATASETS, load_split
from acdistill.engine import evaluate
from acdistill.errors import AcdistillError, warn
from acdistill.formats import OWN, build, detect, read_released
from acdistill.io import atomic_path
from acdistill.models import ImageClassifier, assemble
from acdistill.models.zoo import PREFIX, load_zoo_network, robustbench_dataset, split_head, zoo_entry
from acdistill.serialization import read_torch_file

CACHE_DIR = Path(os.environ.get("ACDISTILL_CACHE", Path.home() / ".cache" / "acdistill"))
CHECK_IMAGES = 500
# Points of clean accuracy below the source's statement that mean a wrong setup rather than the check's sampling
# noise (500 images: a standard error of about 2 points) or RobustBench's full test set against its first images.
ACCURACY_GAP = 5.0
CLEAN_ACC_TABLE = Path(__file__).with_name("robustbench_clean_acc.json")
# Below this multiple of chance accuracy, a teacher whose source states no accuracy is named as suspicious.
CHANCE_FACTOR = 1.5


def download(url: str, sha256: str) -> Path:
    """Fetch `url` into a cache keyed by its sha256; the file appears only once its hash is verified."""
    sha256 = sha256.lower()
    target = CACHE_DIR / sha256 / Path(url.split("?")[0]).name
    if target.is_file():
        return target
    digest = hashlib.sha256()
    received = 0
    with atomic_path(target, claim=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                expected = response.headers.get("Content-Length")
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    f.write(chunk)
                    received += len(chunk)
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise AcdistillError(f"download of {url} failed ({e.__class__.__name__}: {e})") from None
        if expected is not None and expected.isdigit() and received != int(expected):
            raise AcdistillError(f"download of {url} was cut off: {received} of {expected} bytes; nothing was kept")
        if digest.hexdigest() != sha256:
            raise AcdistillError(
                f"{url}: sha256 {digest.hexdigest()} does not match the expected {sha256}; nothing was kept"
            )
    return target


def zoo_path(t: TeacherParams, dataset: str) -> Path:
    """Where robustbench keeps an entry's weights: <model_dir>/<dataset>/<threat_model>/<name>.pt."""
    z = t.robustbench
    return Path(z.model_dir) / robustbench_dataset(dataset) / z.threat_model / f"{z.name}.pt"


def zoo_file(t: TeacherParams, dataset: str) -> Path:
    """The entry's weights file: the one already in the model directory (no network), or a download through
    robustbench's own downloader, written beside its destination and renamed into place once complete (and once
    its sha256 matches `teacher.sha256`, when given)."""
    z = t.robustbench
    entry = zoo_entry(z.name, dataset, z.threat_model)
    path = zoo_path(t, dataset)
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
        if t.sha256 and sha256_file(tmp) != t.sha256.lower():
            raise AcdistillError(
                f"the download of {z.name} has sha256 {sha256_file(tmp)}, not teacher.sha256 "
                f"{t.sha256}; nothing was kept"
            )
    return path


def expected_clean_acc(name: str, dataset: str, threat_model: str) -> float | None:
    """The clean accuracy (percent, full test set) that RobustBench's leaderboard lists for an entry."""
    table = json.loads(CLEAN_ACC_TABLE.read_text())
    return table.get(robustbench_dataset(dataset), {}).get(threat_model, {}).get(name)


def _check_sha256(path: Path, expected: str | None) -> str:
    if not path.is_file():
        raise AcdistillError(f"model file not found: {path}")
    digest = sha256_file(path)
    if expected and digest != expected.lower():
        raise AcdistillError(f"{path}: sha256 {digest} does not match teacher.sha256 {expected}")
    return digest


def open_teacher(t: TeacherParams, dataset: str, arch: str | None = None) -> tuple[ImageClassifier, dict[str, Any]]:
    """The teacher of a file, url or robustbench source, in eval mode on the CPU, and what to record of it.

    arch: an architecture the caller named, which the file must hold. Without it, `t.arch` is read only for a
    bare state dict in acdistill's layout: a checkpoint's sidecar and the released layouts name their own."""
    if t.source == "robustbench":
        z = t.robustbench
        path = zoo_file(t, dataset)
        digest = _check_sha256(path, t.sha256)
        read_torch_file(path)  # refuses pickled code before robustbench's loader opens the file
        network = load_zoo_network(z.name, dataset, z.threat_model, z.model_dir)
        body, head = split_head(network, DATASETS.get(dataset).num_classes, z.name)
        model = assemble(PREFIX + z.name, body, head, dataset=dataset, threat_model=z.threat_model)
        mean, std = model.normalization()
        return model.eval(), {
            "source": "robustbench",
            "robustbench": z.model_dump(),
            "file": str(path),
            "file_sha256": digest,
            "format": "robustbench",
            "normalization": f"inside robustbench's code (buffers: mean {mean}, std {std})",
            "expected_clean_acc": expected_clean_acc(z.name, dataset, z.threat_model),
        }
    path = Path(t.path) if t.source == "file" else download(t.url, t.sha256)
    digest = _check_sha256(path, t.sha256)
    if sidecar_path(path).is_file() and path.suffix == ".safetensors":
        model = load_model(
            path,
            arch=arch,
            format=t.format,
            normalize=t.normalization(),
            dataset=dataset,
            checkpoint_key=t.checkpoint_key,
        )
        return model, {
            "source": t.source,
            "file": str(path),
            "file_sha256": digest,
            "format": "acdistill checkpoint",
            "expected_clean_acc": t.expected_clean_acc,
        }
    raw = read_released(path, t.checkpoint_key)
    fmt = detect(raw, t.format)
    released = build(
        raw, fmt, arch=arch or (t.arch if fmt.name == OWN else None), normalize=t.normalization(), dataset=dataset
    )
    return released.model, {
        "source": t.source,
        "file": str(path),
        "file_sha256": digest,
        "format": released.format,
        "container": released.container,
        "normalization": released.normalization,
        "expected_clean_acc": t.expected_clean_acc,
    }


def import_teacher(
    params: Params,
    model: ImageClassifier,
    summary: dict[str, Any],
    *,
    out: Path,
    data_dir: Path | None,
    device: torch.device,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The fetch-teacher stage for every source but `train`, once `open_teacher` gave the teacher and its summary:
    check its clean accuracy on the first CHECK_IMAGES test images, then write `out` (+ sidecar, which records the
    returned summary). A gap of more than ACCURACY_GAP points below the source's stated accuracy is a warning, or an
    error (nothing written) with `teacher.strict_accuracy`. progress: as in `evaluate`."""
    t, d = params.teacher, params.data
    summary = dict(summary)
    check = load_split(d.dataset, False, d.test_subset, d.root, data_dir).take(CHECK_IMAGES)
    model.to(device)
    acc = evaluate(model, check, ["natural"], device=device, progress=progress)["natural"]["accuracy"]
    summary.update(arch=model.arch, clean_acc=acc, clean_acc_n=len(check))
    expected = summary["expected_clean_acc"]
    chance = 100 / DATASETS.get(d.dataset).num_classes
    if expected is None and acc < CHANCE_FACTOR * chance:
        warn(
            f"the teacher's clean accuracy, {acc:.2f} % on the first {len(check)} test images, is near chance "
            f"({chance:.0f} %) on {d.dataset}: a wrong dataset, format or normalization is the usual cause (give "
            "teacher.expected_clean_acc to have it checked)"
        )
    if expected is not None and acc < expected - ACCURACY_GAP:
        message = (
            f"the teacher's clean accuracy, {acc:.2f} % on the first {len(check)} test images, is "
            f"{expected - acc:.1f} points below the {expected:.2f} % its source states: a wrong format, "
            "normalization or dataset is the usual cause"
        )
        if t.strict_accuracy:
            raise AcdistillError(message + " (teacher.strict_accuracy)")
        warn(f"{message}; --strict-accuracy makes this an error")
    save_model(model.cpu(), out, dataset=d.dataset, info=summary)
    return summary
