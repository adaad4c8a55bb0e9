#!/usr/bin/env bash
# The GPU evidence run on an air-gapped node (docs/gpu.md, "An air-gapped GPU node"): install the bundle's wheels
# into a scratch directory, unpack CIFAR-10 there, and run scripts/gpu_quick.py with both; its options pass through.
#
#   bash scripts/airgap_run.sh --out /tmp/gpu-quick [--budget 8 ...]
#
# AIRGAP_BUNDLE: the bundle (tools/airgap_bundle.py; default .airgap in this checkout). AIRGAP_SCRATCH: where the
# wheels and the data go (default /tmp/acdistill-airgap).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bundle="${AIRGAP_BUNDLE:-$repo/.airgap}"
scratch="${AIRGAP_SCRATCH:-/tmp/acdistill-airgap}"
if [[ ! -f "$bundle/data/cifar10_device_pack.npz" ]] || ! compgen -G "$bundle/wheels/*.whl" >/dev/null; then
    echo "error: no bundle in $bundle (wheels/*.whl, data/cifar10_device_pack.npz): run tools/airgap_bundle.py" >&2
    exit 2
fi
python3 -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$scratch/site" \
    "$bundle"/wheels/*.whl
python3 "$bundle/data/unpack_device_pack.py" "$bundle/data/cifar10_device_pack.npz" "$scratch/data"
export PYTHONPATH="$scratch/site" ACDISTILL_DATA_DIR="$scratch/data" DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
exec python3 "$repo/scripts/gpu_quick.py" "$@"
