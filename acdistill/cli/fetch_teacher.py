"""acdistill fetch-teacher: a teacher from a local file, from a URL (sha256 required), or trained locally."""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from pathlib import Path
from typing import Annotated, Optional

import typer

from acdistill.checkpoint import load_weights_into, read_state_dict, save_model
from acdistill.cli.common import (DataDirOpt, DeviceOpt, EpochsOpt, ForceOpt, ParamsOpt, ResumeOpt, SetOpt,
                                  check_outputs, device_of, echo, load, monitor_split, new_model, train_and_save,
                                  user_errors, writes)
from acdistill.data import DATASETS
from acdistill.engine import evaluate
from acdistill.errors import AcdistillError
from acdistill.io import atomic_path, write_json

CACHE_DIR = Path(os.environ.get("ACDISTILL_CACHE", Path.home() / ".cache" / "acdistill"))


def download(url: str, sha256: str) -> Path:
    """Fetch `url` into a cache keyed by its sha256; the file appears only once its hash is verified."""
    sha256 = sha256.lower()
    target = CACHE_DIR / sha256 / Path(url.split("?")[0]).name
    if target.is_file():
        return target
    digest = hashlib.sha256()
    received = 0
    with atomic_path(target) as tmp:
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
            raise AcdistillError(f"{url}: sha256 {digest.hexdigest()} does not match the expected {sha256}; "
                                 "nothing was kept")
    return target


def fetch_teacher(
    params_file: ParamsOpt = Path("params.yaml"),
    source: Annotated[Optional[str], typer.Option(help="train, file or url (default: params teacher.source)")] = None,
    path: Annotated[Optional[Path], typer.Option(help="local .safetensors or .pt (source file)")] = None,
    url: Annotated[Optional[str], typer.Option(help="download URL (source url, needs --sha256)")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="expected sha256 of the download")] = None,
    arch: Annotated[Optional[str], typer.Option(help="teacher architecture (see `acdistill models`)")] = None,
    epochs: EpochsOpt = None,
    out: Annotated[Path, typer.Option(help="teacher checkpoint to write")] = Path("models/teacher.safetensors"),
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")] = Path("metrics/teacher.json"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = True,
    force: ForceOpt = False,
    set_: SetOpt = None,
) -> None:
    """Get the robust teacher: load it (file / url) or train it locally (natural, sat or trades)."""
    params = load(params_file, set_, **{"teacher.source": source, "teacher.path": str(path) if path else None,
                                        "teacher.url": url, "teacher.sha256": sha256, "teacher.arch": arch,
                                        "teacher.train.epochs": epochs})
    t = params.teacher
    check_outputs(out, metrics, force)
    dev = device_of(params, device)
    model = new_model(t.arch, params, DATASETS.get(params.data.dataset).num_classes,
                      normalize=t.normalize == "dataset")
    if t.source == "train":
        from acdistill.methods import METHODS

        if METHODS.get(t.train.method).needs_teacher:
            raise AcdistillError(f"teacher.train.method '{t.train.method}' needs a teacher itself; "
                                 "use natural, sat or trades")
        train_and_save("teacher", t.train, params, student=model, teacher=None, data_dir=data_dir, device=dev,
                       out=out, metrics=metrics, resume=resume, force=force, context={})
        return
    weights = Path(t.path) if t.source == "file" else download(t.url, t.sha256)
    load_weights_into(model, read_state_dict(weights), weights)
    model.to(dev).eval()
    monitor = monitor_split(params, data_dir, t.train.monitor_n)
    check = evaluate(model, monitor, ["natural"], device=dev)["natural"]["accuracy"] if len(monitor) else None
    summary = {"source": t.source, "file": str(weights), "clean_acc": check}
    save_model(model, out, dataset=params.data.dataset, info=summary)
    write_json(metrics, summary)
    echo(f"fetch-teacher: {weights} -> {out} (clean accuracy on {len(monitor)} held-out images: {check})")


def register(app: typer.Typer) -> None:
    app.command("fetch-teacher")(user_errors(writes("out", "metrics")(fetch_teacher)))
