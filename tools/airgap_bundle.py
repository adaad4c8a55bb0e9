"""Build what an air-gapped GPU node needs besides the checkout, and check that it all fits what may travel.

The node (docs/gpu.md, "An air-gapped GPU node") has Python 3.12, torch, torchvision, numpy, scipy, scikit-learn,
matplotlib, Pillow, pyyaml, rich, typer, tabulate and safetensors, and no internet. The bundle holds:
- wheels/: the packages acdistill imports that the node lacks, downloaded for CPython 3.12 on x86-64 Linux
  (`pip download --no-deps --only-binary=:all: --python-version 3.12 ...`), pyautoattack's without its examples/
  (a 44 MB test model that acdistill never reads);
- data/: CIFAR-10 as cifar10_device_pack.npz and its decoder unpack_device_pack.py, from the data directory.

Then it sums the checkout (the files git sees: tracked, and untracked but not ignored), the wheels and the data, and
refuses a total over the limit (64 MiB by default), writing nothing. The bundle is written to a temporary directory
beside OUT and renamed to OUT only once it fits.

    python tools/airgap_bundle.py [OUT] [--data-dir DIR] [--limit-mib 64]    # OUT: .airgap in the checkout
    python tools/airgap_bundle.py --check [OUT]                              # sum an existing bundle again
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
# One version of each, as pip installs them together with --no-deps. pydantic and its own dependencies (acdistill's
# params are pydantic models; typing-extensions because pydantic needs >= 4.16, newer than the node may have), POT
# 0.9.6.post1 (1.5 MB; 0.9.7.post1 is 33 MB with a BSP-OT extension acdistill does not use) and pyautoattack.
WHEELS = (
    "pydantic==2.14.3",
    "pydantic-core==2.50.4",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "typing-extensions==4.16.0",
    "pot==0.9.6.post1",
    "pyautoattack==0.2.0",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
DATA_FILES = ("cifar10_device_pack.npz", "unpack_device_pack.py")
SLIMMED = {"pyautoattack": "pyautoattack/examples/"}  # wheel name prefix -> the folder left out


class BundleError(Exception):
    """A one-line refusal: printed as `error: ...`, exit 2."""


def download_wheels(into: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(into), *WHEELS]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr.strip() or "no output").splitlines()
        raise BundleError(f"pip download failed: {lines[-1]}")


def slim_wheel(wheel: Path, folder: str) -> None:
    """Rewrite `wheel` without the files under `folder`, and without their lines in its RECORD (which lists every
    file of a wheel with its hash: pip checks the files against it, not that it lists more)."""
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename.startswith(folder):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                kept = [line for line in data.decode().splitlines(keepends=True) if not line.startswith(folder)]
                data = "".join(kept).encode()
            dst.writestr(info, data)
    slim.replace(wheel)


def checkout_files(*exclude: Path) -> list[Path]:
    """The files git sees in the checkout (tracked, and untracked but not ignored), less those under `exclude`."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    files = [REPO / name for name in listed.split("\0") if name]
    skip = [e.resolve() for e in exclude]
    return [f for f in files if f.is_file() and not any(f.resolve().is_relative_to(e) for e in skip)]


def size(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files)


def report(bundle: Path, shown: Path, limit_mib: float) -> None:
    """Print the sizes of the checkout and of the bundle's parts; a total over the limit is a BundleError."""
    checkout = checkout_files(bundle, shown)
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    data = [bundle / "data" / name for name in DATA_FILES]
    missing = [str(shown / p.relative_to(bundle)) for p in data if not p.is_file()]
    if not wheels or missing:
        raise BundleError(f"{shown} is not a complete bundle: no wheels/*.whl, or missing {', '.join(missing)}")
    total = size(checkout) + size(wheels) + size(data)
    print(f"checkout: {size(checkout) / MIB:.2f} MiB in {len(checkout)} files (git ls-files --cached --others)")
    print(f"wheels: {size(wheels) / MIB:.2f} MiB")
    for wheel in wheels:
        print(f"  {wheel.name}: {wheel.stat().st_size / MIB:.2f} MiB")
    print(f"data: {size(data) / MIB:.2f} MiB ({', '.join(DATA_FILES)})")
    if total > limit_mib * MIB:
        raise BundleError(f"checkout, wheels and data come to {total / MIB:.2f} MiB, over the {limit_mib:g} MiB limit")
    print(f"total: {total / MIB:.2f} MiB of at most {limit_mib:g} MiB")


def build(out: Path, data_dir: Path, limit_mib: float) -> None:
    missing = [name for name in DATA_FILES if not (data_dir / name).is_file()]
    if missing:
        raise BundleError(f"no {' or '.join(missing)} in the data directory {data_dir} (--data-dir)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would pass to OUT
    try:
        download_wheels(staging / "wheels")
        for wheel in (staging / "wheels").glob("*.whl"):
            for prefix, folder in SLIMMED.items():
                if wheel.name.startswith(f"{prefix}-"):
                    slim_wheel(wheel, folder)
        (staging / "data").mkdir()
        for name in DATA_FILES:
            shutil.copy2(data_dir / name, staging / "data" / name)
        report(staging, out, limit_mib)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / ".airgap", help="the bundle's directory")
    default_data = os.environ.get("ACDISTILL_DATA_DIR") or REPO.parent / "shared" / "data"
    parser.add_argument("--data-dir", type=Path, default=Path(default_data), help="where the device pack lies")
    parser.add_argument("--limit-mib", type=float, default=64.0, help="what may travel, checkout included")
    parser.add_argument("--check", action="store_true", help="only sum the checkout and an existing bundle")
    args = parser.parse_args()
    try:
        if args.check:
            report(args.out, args.out, args.limit_mib)
        else:
            build(args.out, args.data_dir, args.limit_mib)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
