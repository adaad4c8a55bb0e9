"""Model checkpoints: weights as safetensors plus a JSON sidecar that says how to rebuild the model.

Sidecar fields: format, arch, arch_kwargs, dataset, num_classes, mean and std (the input normalization as the model's
buffers hold it), sha256 (of the weights file), code (the acdistill version and source digest that wrote it),
machine (its CPU, GPU and torch) and free-form `info` (the params that produced it, its metrics; for an imported
teacher, its source, format and checks).
`load_model` refuses weights whose hash does not match the sidecar, so a half-copied or swapped file is caught
before it is used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from acdistill.errors import AcdistillError
from acdistill.formats import AUTO, OWN, Normalize, normalization_values, open_released, read_state_dict
from acdistill.io import json_text, settle, write_files
from acdistill.models import ImageClassifier, create_model
from acdistill.provenance import code_info, machine_info

FORMAT = "acdistill-checkpoint-1"


def sidecar_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model: ImageClassifier, path: str | Path, *, dataset: str, info: dict[str, Any] | None = None) -> Path:
    """Write `path` (.safetensors) and its sidecar as one (acdistill.io.write_files): a reader through `load_model`
    sees the old pair or the new one, never new weights with the old sidecar, even after a kill between the
    two. Raises AcdistillError (one line, naming the file and the cause) when a file cannot be written (no
    space, a file-size limit), and then leaves the old pair as it was."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise AcdistillError(f"{path}: model checkpoints are written as .safetensors")
    weights = safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    kwargs = model.arch_kwargs
    mean, std = model.normalization()
    sidecar = json_text(
        {
            "format": FORMAT,
            "arch": model.arch,
            "arch_kwargs": kwargs,
            "dataset": dataset,
            "num_classes": kwargs["num_classes"],
            "mean": mean,
            "std": std,
            "sha256": hashlib.sha256(weights).hexdigest(),
            "code": code_info(),
            "machine": machine_info(),
            "info": info or {},
        }
    )
    write_files({path: weights, sidecar_path(path): sidecar})
    return path


def _from_sidecar(path: Path) -> ImageClassifier:
    meta = read_sidecar(path)
    if sha256_file(path) != meta["sha256"]:
        raise AcdistillError(f"{path}: sha256 does not match its sidecar (file changed or truncated)")
    model = create_model(meta["arch"], **meta["arch_kwargs"])
    state, _ = read_state_dict(path)
    model.load_weights(state, path)
    return model


def _check_stated(
    model: ImageClassifier,
    path: Path,
    *,
    arch: str | None,
    format: str | None,
    normalize: Normalize,
    dataset: str | None,
    checkpoint_key: str | None,
) -> None:
    """What a caller states of an acdistill checkpoint must agree with its sidecar: it is never overridden."""
    meta = read_sidecar(path)
    if format not in (None, AUTO, OWN):
        raise AcdistillError(f"{path} is an acdistill checkpoint (it has a sidecar), not a {format} file")
    if checkpoint_key is not None:
        raise AcdistillError(f"{path} is an acdistill checkpoint, a bare state dict with no entry '{checkpoint_key}'")
    if arch is not None and arch != model.arch:
        raise AcdistillError(f"{path} holds a {model.arch} (its sidecar says), not a {arch}")
    if dataset is not None and dataset != meta["dataset"]:
        raise AcdistillError(f"{path} was trained on {meta['dataset']} (its sidecar says), not {dataset}")
    stated = normalization_values(normalize, dataset or meta["dataset"])
    if stated is not None and not torch.allclose(torch.tensor(stated), torch.tensor(model.normalization()), atol=1e-6):
        mean, std = model.normalization()
        raise AcdistillError(
            f"{path} normalizes with mean {[round(v, 4) for v in mean]}, std "
            f"{[round(v, 4) for v in std]} (its sidecar says); leave normalize unset"
        )


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar (`<path without .safetensors>.json`) of the checkpoint whose weights are at `path`, once an
    interrupted write of the pair is finished (acdistill.io.settle): a dict with at least arch, arch_kwargs, sha256
    (of the weights file) and dataset, plus info (the run's stage, method, epochs...), code and machine. Raises
    AcdistillError when the sidecar is missing, is not JSON, or lacks one of those keys."""
    settle(path)
    side = sidecar_path(path)
    if not side.is_file():
        raise AcdistillError(f"{path}: no sidecar {side} (acdistill checkpoints come as .safetensors + .json)")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise AcdistillError(f"{side}: corrupted sidecar, invalid JSON ({e.msg} at line {e.lineno})") from None
    missing = [k for k in ("arch", "arch_kwargs", "sha256", "dataset") if k not in meta]
    if missing:
        raise AcdistillError(f"{side}: sidecar lacks {', '.join(missing)}")
    return meta


def load_model(
    path: str | Path,
    device: torch.device | str = "cpu",
    *,
    arch: str | None = None,
    format: str | None = None,
    normalize: Normalize = None,
    dataset: str | None = None,
    checkpoint_key: str | None = None,
) -> ImageClassifier:
    """A model from a checkpoint, in eval mode on `device`.

    An acdistill checkpoint (a .safetensors with its .json sidecar) is rebuilt from its sidecar, after checking
    the weights' sha256 against it; the keyword arguments, when given, must agree with it. Any other state dict
    is read as `acdistill.formats.open_released` does (.safetensors, or .pt/.pth read with weights_only):
    - format: its key layout, "auto" (the default) to detect it; `acdistill formats` lists them;
    - arch: the architecture of a state dict in acdistill's own layout (released layouts name theirs);
    - normalize: "none", "dataset", (mean, std) or "MEAN/STD", required when the file records no normalization;
    - dataset: the dataset whose class count the head must have, and whose statistics "dataset" means;
    - checkpoint_key: the container entry holding the weights (default: state_dict, model, net or last).

    Raises AcdistillError (one line) for a missing, corrupted, ambiguous or mismatched file."""
    path = Path(path)
    settle(path)
    if path.is_dir():
        raise AcdistillError(f"{path} is a directory, not a model file")
    if not path.is_file():
        raise AcdistillError(f"model file not found: {path}")
    if path.suffix == ".safetensors" and sidecar_path(path).is_file():
        model = _from_sidecar(path)
        _check_stated(
            model, path, arch=arch, format=format, normalize=normalize, dataset=dataset, checkpoint_key=checkpoint_key
        )
    else:
        model = open_released(
            path, format=format or AUTO, arch=arch, normalize=normalize, dataset=dataset, checkpoint_key=checkpoint_key
        ).model
    return model.to(device).eval()
