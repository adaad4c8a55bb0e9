"""The cost estimates of `acdistill reproduce --dry-run`: GPU- and CPU-hours of a training run from the throughputs
measured in BENCHMARKS.md, scaled to other methods (by attack passes per step) and architectures (by forward FLOPs)
where nothing was measured; each estimate says which."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from acdistill.config import FINETUNE, Params, TrainParams
from acdistill.data import DATASETS
from acdistill.data.datasets import subset_indices
from acdistill.methods import METHODS
from acdistill.methods.base import Method
from acdistill.models import create_model
from acdistill.pipeline.sizing import attack_passes

# Measured throughputs (BENCHMARKS.md). GPU: seconds per epoch of 50 000 CIFAR-10 images on one H100 for a
# ResNet-18 student, bf16 + channels_last, eager (no step graph), batch 128, the papers' 10-step training attack.
# CPU: training images per second of a ResNet-20 student (ResNet-20 teacher) on the project's 2-core Xeon, fp32.
# Each with the forward-backward passes per image of the measured step: the 10-step attack and the update (11), or
# GACD's one feature-scattering step and the update (2).
GPU_EPOCH_S = {
    "rslad": (40.0, "GPU: ResNet-18 students on an H100, run 4 (WRN-34-10 teacher)", 11),
    "gacd": (39.1, "GPU: ResNet-18 students on an H100, run 4 (ResNet-18 teacher)", 2),
}
GPU_ARCH = "resnet18"
CPU_IMG_S = {
    "rslad": (59.66, "Training throughput, the same five commands on a second CPU", 11),
    "sat": (58.66, "Training throughput, the same five commands on a second CPU", 11),
    "gacd": (156.98, "Training throughput, the same five commands on a second CPU", 2),
}
CPU_ARCH = "resnet20"
# CPU attack passes (forward + backward of one image) per second on a ResNet-20: PGD-20's 32.8 img/s x 21 passes
# ("PGD-20 attack throughput: acdistill vs torchattacks", run 3). BENCHMARKS.md has no GPU attack rate.
CPU_PASSES_S = (32.8 * 21, "PGD-20 attack throughput, run 3")
# The measurement a method without its own is scaled from.
REFERENCE_METHOD = "rslad"
# The images of an epoch of the measured runs (CIFAR-10's training split), and of a dataset that registers no sizes.
MEASURED_EPOCH_IMAGES = 50000
UNKNOWN_SPLIT_SIZES = (50000, 10000)


@cache
def forward_gflop(arch: str, num_classes: int, image_size: int, channels: int) -> float | None:
    """GFLOP of one forward pass of one image (torch's FLOP counter on the meta device: nothing is allocated)."""
    try:
        with torch.device("meta"):
            model = create_model(arch, num_classes=num_classes).eval()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(torch.zeros(1, channels, image_size, image_size))
    except Exception:  # an architecture the counter cannot run on meta tensors (a robustbench model)
        return None
    return counter.get_total_flops() / 1e9


def passes_per_step(section: TrainParams) -> int:
    """Forward-backward passes of a training step per image: the attack's steps (for a method that perturbs),
    plus the update's."""
    method = METHODS.get(section.method)
    adversarial = method.perturb is not Method.perturb
    return (method.training_attack(section.method_params(), section.attack).steps if adversarial else 0) + 1


@dataclass(frozen=True)
class Estimate:
    gpu_hours: float
    cpu_hours: float
    basis: str  # "measured (<section>)" or "scaled (<from what>)"


def arch_ratio(arch: str, reference: str, params: Params) -> float | None:
    spec = DATASETS.get(params.data.dataset)
    # models see 3 channels whatever the files hold (grey images are repeated): data.datasets.to_model_layout
    a = forward_gflop(arch, spec.num_classes, spec.image_size, 3)
    b = forward_gflop(reference, spec.num_classes, spec.image_size, 3)
    return None if a is None or b is None else a / b


def seconds_per_image(device: str, method: str, passes: int) -> tuple[float, list[str]]:
    """Training seconds per image of `method` on `device` (GPU: the H100, a ResNet-18 student; CPU: the 2 cores, a
    ResNet-20 student): its measured rate, or the reference method's, scaled by attack passes per step where they
    differ from the measured runs'; and how it was found."""
    if device == "GPU":
        measured = {m: (s / MEASURED_EPOCH_IMAGES, w, n) for m, (s, w, n) in GPU_EPOCH_S.items()}
    else:
        measured = {m: (1 / rate, w, n) for m, (rate, w, n) in CPU_IMG_S.items()}
    source = method if method in measured else REFERENCE_METHOD
    seconds, where, measured_passes = measured[source]
    if source == method and passes == measured_passes:
        return seconds, [f"{device} measured ({where})"]
    scaled = f"{device} scaled from {source}'s measured rate by passes per step ({passes}/{measured_passes}; {where})"
    return seconds * passes / measured_passes, [scaled]


def train_estimate(section: TrainParams, arch: str, params: Params, images: int) -> tuple[float, float, list[str]]:
    """(GPU hours, CPU hours, how each was found) of training `section` for `arch`."""
    passes = passes_per_step(section)
    gpu_s, why = seconds_per_image("GPU", section.method, passes)
    ratio = arch_ratio(arch, GPU_ARCH, params)
    if arch != GPU_ARCH and ratio:
        # the GPU step is launch-bound at ResNet-18's size (BENCHMARKS.md): a smaller network is not faster
        gpu_s *= max(1.0, ratio)
        why.append(f"GPU scaled by forward FLOPs to {GPU_ARCH}'s ({ratio:.2f}, at least 1)")
    cpu_s, cpu_why = seconds_per_image("CPU", section.method, passes)
    cpu_ratio = arch_ratio(arch, CPU_ARCH, params)
    if arch != CPU_ARCH and cpu_ratio:
        cpu_s *= cpu_ratio
        cpu_why.append(f"CPU scaled by forward FLOPs to {CPU_ARCH}'s ({cpu_ratio:.2f})")
    work = section.epochs * images / 3600
    return work * gpu_s, work * cpu_s, why + cpu_why


def eval_cpu_hours(p: Params) -> float:
    """CPU hours of the point's evaluation, at most (every image attacked), from the measured attack pass rate
    scaled by forward FLOPs to ResNet-20's."""
    d = p.data
    n = min(x for x in (p.eval.n, d.test_subset and subset_size(d.test_subset), split_sizes(d.dataset)[1]) if x)
    passes = n + sum(attack_passes(a, p.eval.budget()) * min(p.eval.n_per_attack.get(a, n), n) for a in p.eval.attacks)
    ratio = arch_ratio(p.distill.student, CPU_ARCH, p) or 1.0
    return passes * ratio / CPU_PASSES_S[0] / 3600


def split_sizes(dataset: str) -> tuple[int, int]:
    """The images of the dataset's whole train and test splits, as its registration gives them."""
    return DATASETS.get(dataset).split_sizes or UNKNOWN_SPLIT_SIZES


def subset_size(subset: int | str | None) -> int | None:
    """The number of images a data subset names (a count, a range or an index file); None for the whole split."""
    indices = subset_indices(subset)
    return None if indices is None else len(indices)


def train_images(p: Params) -> int:
    return subset_size(p.data.train_subset) or split_sizes(p.data.dataset)[0]


def basis_of(why: list[str]) -> str:
    """'GPU measured|scaled, CPU measured|scaled: <the BENCHMARKS.md sections, or from what each was scaled>'; a
    device's estimate is measured when every rate of it was used as measured."""
    kinds = [
        f"{device} {'scaled' if any(device + ' scaled' in w for w in why) else 'measured'}" for device in ("GPU", "CPU")
    ]
    return f"{', '.join(kinds)}: {'; '.join(why)}"


def estimate_row(p: Params, point: dict[str, Any]) -> Estimate:
    gpu_h, cpu_h, why = train_estimate(p.distill, p.distill.student, p, train_images(p))
    if point.get(FINETUNE):
        aft = p.aft.for_student(p.distill.epochs, p.distill.student)  # null epochs: a tenth of distill's
        g, c, w = train_estimate(aft, p.distill.student, p, train_images(p))
        gpu_h, cpu_h, why = gpu_h + g, cpu_h + c, why + [f"aft: {x}" for x in w]
    cpu_h += eval_cpu_hours(p)
    return Estimate(gpu_h, cpu_h, basis_of(why))
