"""Model checkpoints: weights as safetensors plus a JSON sidecar that says how to rebuild the model.

Sidecar fields: format, arch, arch_kwargs, dataset, num_classes, mean, std, sha256 (of the weights file), code (the
acdistill version and source digest that wrote it), machine (its CPU, GPU and torch) and free-form `info` (the params
that produced it, its metrics).
`load_model` refuses weights whose hash does not match the sidecar, so a half-copied or swapped file is caught
before it is used.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from acdistill.errors import AcdistillError
from acdistill.io import atomic_path, write_json
from acdistill.models import create_model
from acdistill.provenance import code_info, machine_info

FORMAT = "acdistill-checkpoint-1"
# Prefixes that wrappers add to state-dict keys: DataParallel/DDP, torch.compile, and common training scripts.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")


def sidecar_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model: nn.Module, path: str | Path, *, dataset: str, info: dict[str, Any] | None = None) -> Path:
    """Write `path` (.safetensors) and its sidecar, each atomically; the weights go first so a sidecar never
    describes weights that are not there."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise AcdistillError(f"{path}: model checkpoints are written as .safetensors")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
        digest = sha256_file(tmp)
    kwargs = model.arch_kwargs
    write_json(sidecar_path(path), {
        "format": FORMAT, "arch": model.arch, "arch_kwargs": kwargs, "dataset": dataset,
        "num_classes": kwargs["num_classes"], "mean": kwargs.get("mean"), "std": kwargs.get("std"),
        "sha256": digest, "code": code_info(), "machine": machine_info(), "info": info or {},
    })
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
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


def load_model(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild an acdistill checkpoint (weights + sidecar) as an eval-mode nn.Module on `device`."""
    path = Path(path)
    if not path.is_file():
        raise AcdistillError(f"model file not found: {path}")
    meta = read_sidecar(path)
    if sha256_file(path) != meta["sha256"]:
        raise AcdistillError(f"{path}: sha256 does not match its sidecar (file changed or truncated)")
    model = create_model(meta["arch"], **meta["arch_kwargs"])
    load_weights_into(model, read_state_dict(path), path)
    return model.to(device).eval()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a .pt/.pth read with `weights_only=True` (never executes
    pickled code). Common containers ({'state_dict': ...}, {'model': ...}) and wrapper prefixes are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise AcdistillError(f"model file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise AcdistillError(f"{path}: corrupted safetensors file ({e})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0][:160]
            raise AcdistillError(f"{path}: refused, the file holds pickled objects other than weights "
                                 f"({first})") from None
        except (RuntimeError, EOFError, OSError) as e:
            raise AcdistillError(f"{path}: corrupted or not a PyTorch file ({str(e).splitlines()[0][:160]})") from None
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AcdistillError(f"{path}: not a state dict of tensors")
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strict load with a one-line reason on mismatch. Normalization buffers missing from third-party weights
    keep the model's own values (they come from the sidecar or the dataset, not from training)."""
    own = model.state_dict()
    norm_keys = {k for k in own if k.startswith("normalize.")}
    state = {**{k: own[k] for k in norm_keys}, **state}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} vs model "
                         f"{tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise AcdistillError(f"{source}: weights do not fit arch '{model.arch}': {'; '.join(parts)}")
    model.load_state_dict(state)
