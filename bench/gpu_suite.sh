#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one go: bench.throughput on ResNet-18 students at the presets' settings, one JSON
# file per configuration under $OUT (default bench-out/). Each configuration runs in its own process, under its own
# time limit, so that one failure does not lose the others.
#
#   bash bench/gpu_suite.sh            # all configurations
#   bash bench/gpu_suite.sh rslad-fp32 # only those whose names are given
set -u
out=${OUT:-bench-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv >"$out/gpu.csv"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >>"$out/gpu.csv"

rslad=(--method rslad --model resnet18 --teacher wrn_34_10 --steps 30 --repeats 2)  # rslad-wrn34-resnet18-cifar10
gacd=(--method gacd --model resnet18 --teacher resnet18 --gacd-k 16384 --steps 30 --repeats 2)  # gacd-resnet18-cifar10
declare -A configs=(
    [rslad-fp32]="${rslad[*]}"
    [rslad-bf16]="${rslad[*]} --amp --channels-last --epoch-images 50000"
    [gacd-bf16]="${gacd[*]} --amp --channels-last --epoch-images 50000"
    [rslad-bf16-compile]="${rslad[*]} --amp --channels-last --compile"
    [rslad-bf16-profile]="${rslad[*]} --amp --channels-last --profile"
    [rslad-bf16-graphs]="${rslad[*]} --amp --channels-last --compile reduce-overhead --profile --epoch-images 50000"
    [gacd-bf16-graphs]="${gacd[*]} --amp --channels-last --compile reduce-overhead --profile"
    [rslad-bf16-graphs-refdefault]="${rslad[*]} --amp --channels-last --compile reduce-overhead --reference-cudnn-default"
    [rslad-bf16-graphs-cudnn]="${rslad[*]} --amp --channels-last --compile reduce-overhead --cudnn-benchmark --profile --epoch-images 50000"
    [rslad-bf16-stepgraph]="${rslad[*]} --amp --channels-last --compile --cuda-graph --cudnn-benchmark --profile --epoch-images 50000"
    [sat-bf16-stepgraph]="--method sat --model resnet18 --steps 30 --repeats 2 --amp --channels-last --compile --cuda-graph --cudnn-benchmark --epoch-images 50000"
    [rslad-bf16-stepgraph-eager]="${rslad[*]} --amp --channels-last --cuda-graph --cudnn-benchmark --epoch-images 50000"
)
order=(rslad-fp32 rslad-bf16 gacd-bf16 rslad-bf16-compile rslad-bf16-profile rslad-bf16-graphs gacd-bf16-graphs
       rslad-bf16-graphs-refdefault rslad-bf16-graphs-cudnn rslad-bf16-stepgraph rslad-bf16-stepgraph-eager
       sat-bf16-stepgraph)
[ $# -gt 0 ] && order=("$@")
for name in "${order[@]}"; do
    start=$(date +%s)
    # shellcheck disable=SC2086  # the options are words
    timeout "${LIMIT:-300}" python3 -m bench.throughput --device cuda --json ${configs[$name]} \
        >"$out/$name.json" 2>"$out/$name.err"
    echo "$name: exit $?, $(($(date +%s) - start)) s"
    tail -n 3 "$out/$name.err" | grep -i error
done
python3 - "$out" <<'EOF'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    try:
        r = json.loads(f.read_text())
    except ValueError:
        continue
    a = r["arithmetic"]
    print(f"{f.stem}: pipeline {r['pipeline_img_s']} img/s, bare {r['bare_img_s']}, overhead {r['overhead']}, "
          f"reference {r['reference_img_s']}, speedup {r['speedup_vs_reference']}, epoch {r.get('epoch_s')} s, "
          f"GFLOP/img {r['gflop_per_image']}, arithmetic {a}, ceilings {r['matmul_ceiling_tflops']}, "
          f"peak MB {r['peak_device_mb']}, kernels {r.get('kernels_per_step')} / {r.get('kernel_ms_per_step')} ms "
          f"busy {r.get('gpu_busy_fraction_of_bare_step')}")
EOF
