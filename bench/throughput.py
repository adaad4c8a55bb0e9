"""Training throughput of one distillation method, three ways, measured side by side in one process:

- pipeline: the real `Trainer` over an in-memory training set (batched augmentation, lr schedule, loss logging),
- bare compute: the same method's perturb + loss + backward + optimizer step in a tight loop on one resident batch,
- reference: the loop the public reference code writes (zibojia/RSLAD: a torch DataLoader with per-image PIL
  transforms, fp32, the attack as `rslad_inner_loss`), for the methods it covers (rslad, sat).

    python -m bench.throughput --method rslad --model resnet20 --json

The three loops take turns, `--repeats` rounds, and each keeps its best round, so that a slow moment of the machine
or the order of the loops does not decide a ratio. overhead = bare / pipeline images per second (1.0 = no
pipeline cost); speedup = pipeline / reference.

Arithmetic: the FLOPs of one bare step are counted once (torch's FlopCounterMode: convolutions and matrix products,
forward and backward), so each loop's images/s converts to achieved TFLOP/s. On a GPU the run also times a large
matrix product in bf16 and in tf32 (what cuDNN uses for fp32 convolutions by default) as the measured ceiling, and
reports each loop's fraction of the ceiling of its own precision.
`--epoch-images N` also times one whole epoch of the pipeline over N images (50000: an epoch of CIFAR-10).
`--smoke` runs a seconds-long version (small_cnn, batch 8) to check the harness, not to time anything.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from acdistill.budgets import TrainAttack
from acdistill.config import SpeedParams, TrainParams
from acdistill.data import ImageSet, iterate
from acdistill.engine import Trainer, resolve_device
from acdistill.methods import METHODS
from acdistill.models import create_model
from acdistill.provenance import cpu_name

REFERENCE_METHODS = ("rslad", "sat")
WARMUP_STEPS = 5  # untimed steps: torch.compile, cuDNN's search and cuda_graph's 3 eager steps happen there


def training_set(n: int, seed: int = 0) -> ImageSet:
    """Random uint8 images: the timing does not depend on pixel values, and no dataset download is needed."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageSet("bench", images, torch.randint(0, 10, (n,), generator=g), torch.arange(n), 10, "random")


def build(args, cfg: TrainParams, device: torch.device):
    torch.manual_seed(0)
    student = create_model(args.model).to(device)
    teacher = create_model(args.teacher or args.model).to(device).eval().requires_grad_(False)
    cls = METHODS.get(args.method)
    return cls(student, teacher if cls.needs_teacher else None, cfg.method_params(), cfg.attack)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Peak:
    """Peak device memory of the loop run inside it (CUDA only; on CPU the process's peak RSS is reported)."""

    def __init__(self, device: torch.device):
        self.device, self.mb = device, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mb = max(self.mb, torch.cuda.max_memory_allocated(self.device) / 2**20)


def speed_of(args, fast_paths: bool = True) -> SpeedParams:
    """The speed section the command line asks for; without `fast_paths`, no torch.compile and no CUDA graphs."""
    return SpeedParams(
        amp=args.amp,
        channels_last=args.channels_last,
        cudnn_benchmark=args.cudnn_benchmark,
        compile=args.compile if fast_paths else False,
        step_graph=args.cuda_graph and fast_paths,
    )


def pipeline_rate(args, cfg: TrainParams, data: ImageSet, device: torch.device) -> float:
    trainer = Trainer(build(args, cfg, device), cfg, seed=0, device=device, speed=speed_of(args))
    # Warm-up: full batches and a last, partial one, so that torch.compile has seen both shapes, and cuda_graph
    # has run its eager steps, before the clock runs. An epoch then costs one capture, as each real epoch does.
    trainer.fit(data.take(WARMUP_STEPS * cfg.batch_size + len(data) % cfg.batch_size), augment=True, resume=False)
    sync(device)
    start = time.perf_counter()
    trainer.fit(data, augment=True, resume=False)
    sync(device)
    return len(data) / (time.perf_counter() - start)


def bare_step(args, cfg: TrainParams, data: ImageSet, device: torch.device, *, fast_paths: bool = True):
    """The trainer, and a function that runs its own training step (`Trainer.step_function`, so with cuda_graph its
    replay) on one resident batch. `fast_paths=False` leaves out torch.compile and CUDA graphs, whose kernels a
    FLOP count cannot see."""
    trainer = Trainer(build(args, cfg, device), cfg, seed=0, device=device, speed=speed_of(args, fast_paths))
    trainer.method.setup(data.to(device))
    batch = next(iterate(data, cfg.batch_size, device=device))
    if args.channels_last:
        batch.x = batch.x.contiguous(memory_format=torch.channels_last)
    trainer.model.train()
    train_step = trainer.step_function()
    return trainer, lambda: train_step(batch)


def bare_rate(args, cfg: TrainParams, data: ImageSet, device: torch.device) -> float:
    _, step = bare_step(args, cfg, data, device)
    for _ in range(WARMUP_STEPS):
        step()
    sync(device)
    steps = len(data) // cfg.batch_size
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


class CountFlops(TorchDispatchMode):
    """The formulas of torch's FlopCounterMode (convolutions, matrix products, forward and backward) without its
    module hooks, which break `autograd.grad` with respect to a leaf: the attack's input."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def kernel_profile(args, cfg: TrainParams, data: ImageSet, device: torch.device, steps: int = 3) -> dict:
    """GPU kernels of the bare step, from torch.profiler: launches and summed kernel time per step. Against the
    step's unprofiled time this says how busy the GPU is; a low fraction means the step waits on the CPU."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    _, step = bare_step(args, cfg, data, device)
    for _ in range(WARMUP_STEPS):
        step()
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync(device)
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    return {
        "kernels_per_step": round(len(kernels) / steps),
        "kernel_ms_per_step": round(sum(e.device_time for e in kernels) / 1e3 / steps, 2),
    }


def flops_per_image(args, cfg: TrainParams, data: ImageSet, device: torch.device) -> float:
    """FLOPs of one bare training step (attack included), per image."""
    _, step = bare_step(args, cfg, data, device, fast_paths=False)
    with CountFlops() as counter:
        step()
    return counter.total / cfg.batch_size


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 100) -> float:
    """Measured ceiling: an n x n x n product on random data (fp32 inputs run on the tensor cores as tf32), the
    median of `reps` products timed with CUDA events after a warm-up long enough for the clocks to settle."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        for _ in range(reps // 2):
            a @ b
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    finally:
        torch.set_float32_matmul_precision(precision)
    return 2 * n**3 / float(np.median(times)) / 1e12


class PILDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: a PIL image through the transform pipeline."""

    def __init__(self, data: ImageSet, transform):
        from PIL import Image

        self.images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in data.images]
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def reference_rate(args, cfg: TrainParams, data: ImageSet, device: torch.device) -> float:
    """zibojia/RSLAD's training loop (resnet18_rslad_cifar10.py with rslad_loss.py), with our models and budget,
    under the cuDNN flags that script sets (`cudnn.deterministic = True`) unless `--reference-cudnn-default`."""
    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = not args.reference_cudnn_default, False
    try:
        return _reference_rate(args, cfg, data, device)
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


def _reference_rate(args, cfg: TrainParams, data: ImageSet, device: torch.device) -> float:
    from torchvision import transforms

    torch.manual_seed(0)
    student = create_model(args.model).to(device).train()
    teacher = create_model(args.teacher or args.model).to(device).eval()
    optimizer = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    transform = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
    )
    loader = torch.utils.data.DataLoader(
        PILDataset(data, transform), batch_size=cfg.batch_size, shuffle=True, num_workers=args.workers
    )
    a = cfg.attack

    def kl_loss(a_, b_):
        return -a_ * b_ + torch.log(b_ + 1e-5) * b_

    def step(x, y):
        if args.method == "rslad":
            with torch.no_grad():
                teacher_logits = teacher(x)
            student.eval()
            x_adv = x.detach() + 0.001 * torch.randn(x.shape, device=device).detach()
            for _ in range(a.steps):
                x_adv.requires_grad_()
                with torch.enable_grad():
                    loss_kl = torch.sum(
                        F.kl_div(F.log_softmax(student(x_adv), dim=1), F.softmax(teacher_logits, 1), reduction="none")
                    )
                grad = torch.autograd.grad(loss_kl, [x_adv])[0]
                x_adv = torch.clamp(
                    torch.min(
                        torch.max(x_adv.detach() + a.step_size * torch.sign(grad.detach()), x - a.eps), x + a.eps
                    ),
                    0.0,
                    1.0,
                )
            student.train()
            optimizer.zero_grad()
            adv_logits, nat_logits = student(x_adv), student(x)
            target = F.softmax(teacher_logits.detach(), dim=1)
            loss = 5 / 6.0 * torch.mean(kl_loss(F.log_softmax(adv_logits, dim=1), target)) + 1 / 6.0 * torch.mean(
                kl_loss(F.log_softmax(nat_logits, dim=1), target)
            )
        else:  # sat: attack_pgd of rslad_loss.py, then CE on the adversarial batch
            x_adv = torch.clamp(x.detach() + torch.zeros_like(x).uniform_(-a.eps, a.eps), 0, 1)
            for _ in range(a.steps):
                x_adv.requires_grad_()
                F.cross_entropy(student(x_adv), y).backward()
                x_adv = torch.clamp(x_adv + a.step_size * torch.sign(x_adv.grad.detach()), 0, 1)
                x_adv = (x + torch.clamp(x_adv.detach() - x, -a.eps, a.eps)).detach()
            optimizer.zero_grad()
            loss = F.cross_entropy(student(x_adv), y)
        loss.backward()
        optimizer.step()

    def on_device(x, y):  # the reference's .cuda() after each batch
        return x.to(device), y.to(device)

    # The first batch warms up, outside the clock with the workers' start: a real epoch spreads that over its steps.
    batches = iter(loader)
    step(*on_device(*next(batches)))
    sync(device)
    start, seen = time.perf_counter(), 0
    for x, y in batches:
        step(*on_device(x, y))
        seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - start)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="rslad")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--teacher", default=None, help="teacher architecture (default: the student's)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps of each loop per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the three loops; the best round counts")
    parser.add_argument("--attack-steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for the pipeline and bare loops")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=False,
        metavar="MODE",
        help="torch.compile the networks of the pipeline and bare loops (optionally: a mode, such as reduce-overhead)",
    )
    parser.add_argument(
        "--cuda-graph", action="store_true", help="capture the whole training step as a CUDA graph (speed.step_graph)"
    )
    parser.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="cuDNN algorithm search for the pipeline and bare loops (speed.cudnn_benchmark)",
    )
    parser.add_argument(
        "--reference-cudnn-default",
        action="store_true",
        help="run the reference loop under torch's default cuDNN flags, not its script's cudnn.deterministic = True",
    )
    parser.add_argument("--profile", action="store_true", help="also count the bare step's GPU kernels and their time")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--epoch-images",
        type=int,
        default=0,
        help="also time one pipeline epoch over this many images (50000: CIFAR-10's training set)",
    )
    parser.add_argument(
        "--gacd-k",
        type=int,
        default=64,
        help="GACD's negatives per anchor (its default and the presets' is 16384), capped by the "
        "method at the other-class images of the training set",
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-long run: checks the harness, times nothing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.teacher, args.batch_size, args.steps, args.attack_steps, args.workers, args.repeats = (
            "small_cnn",
            None,
            8,
            2,
            1,
            0,
            1,
        )
        args.gacd_k = min(args.gacd_k, args.batch_size * args.steps - 1)
    extra = {"gacd": {"k": args.gacd_k}}.get(args.method, {})
    device = resolve_device(args.device)
    cfg = TrainParams(
        method=args.method,
        epochs=1,
        batch_size=args.batch_size,
        monitor_n=0,
        schedule="constant",
        attack=TrainAttack(eps=8 / 255, step_size=2 / 255, steps=args.attack_steps),
        **({args.method: extra} if extra else {}),
    )
    data = training_set(args.batch_size * args.steps)
    loops = {"pipeline": pipeline_rate, "bare": bare_rate}
    if args.method in REFERENCE_METHODS:
        loops["reference"] = reference_rate
    rounds = {name: [] for name in loops}
    peaks = {name: Peak(device) for name in loops}
    for _ in range(args.repeats):
        for name, rate in loops.items():
            with peaks[name]:
                rounds[name].append(rate(args, cfg, data, device))
    pipeline, bare = max(rounds["pipeline"]), max(rounds["bare"])
    reference = max(rounds["reference"]) if "reference" in rounds else None
    epoch = {}
    if args.epoch_images:
        with peaks["pipeline"]:
            rate = pipeline_rate(args, cfg, training_set(args.epoch_images, seed=1), device)
        epoch = {
            "epoch_images": args.epoch_images,
            "epoch_s": round(args.epoch_images / rate, 2),
            "epoch_img_s": round(rate, 2),
        }
    flops = flops_per_image(args, cfg, data, device)
    kernels = kernel_profile(args, cfg, data, device) if args.profile and device.type == "cuda" else {}
    if kernels:
        kernels["gpu_busy_fraction_of_bare_step"] = round(
            kernels["kernel_ms_per_step"] / (1e3 * cfg.batch_size / bare), 3
        )
    # fp32 (no --amp) convolutions run as tf32 on CUDA by default, and the reference loop is fp32.
    ceilings = (
        {"bf16": matmul_tflops(device, torch.bfloat16), "tf32": matmul_tflops(device, torch.float32)}
        if device.type == "cuda"
        else {}
    )

    def tflops(img_s: float | None, precision: str) -> dict:
        if img_s is None:
            return {}
        out = {"tflops": round(flops * img_s / 1e12, 3)}
        if precision in ceilings:
            out["fraction_of_ceiling"] = round(out["tflops"] / ceilings[precision], 3)
        return out

    ours = "bf16" if args.amp else "tf32"
    result = {
        "method": args.method,
        "model": args.model,
        "teacher": args.teacher or args.model,
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "repeats": args.repeats,
        "attack_steps": args.attack_steps,
        "amp_bf16": args.amp,
        "channels_last": args.channels_last,
        "pipeline_img_s": round(pipeline, 2),
        "bare_img_s": round(bare, 2),
        "overhead": round(bare / pipeline, 3),
        "reference_img_s": round(reference, 2) if reference else None,
        "speedup_vs_reference": round(pipeline / reference, 3) if reference else None,
        "rounds_img_s": {k: [round(r, 2) for r in v] for k, v in rounds.items() if v},
        **epoch,
        "gflop_per_image": round(flops / 1e9, 3),
        "arithmetic": {
            "pipeline": tflops(pipeline, ours),
            "bare": tflops(bare, ours),
            "reference": tflops(reference, "tf32"),
            **({"epoch": tflops(epoch["epoch_img_s"], ours)} if epoch else {}),
        },
        "matmul_ceiling_tflops": {k: round(v, 1) for k, v in ceilings.items()},
        **kernels,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_device_mb": {k: round(v.mb, 1) for k, v in peaks.items()} if device.type == "cuda" else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "compile": args.compile,
        "cuda_graph": args.cuda_graph,
        "cudnn_benchmark": args.cudnn_benchmark,
        "reference_cudnn": "torch default" if args.reference_cudnn_default else "deterministic, as its script",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": cpu_name(),
        "numpy": np.__version__,
    }
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
