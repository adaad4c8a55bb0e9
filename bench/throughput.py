"""Training throughput of one distillation method, three ways, measured side by side in one process:

- pipeline: the real `Trainer` over an in-memory training set (batched augmentation, lr schedule, loss logging),
- bare compute: the same method's perturb + loss + backward + optimizer step in a tight loop on one resident batch,
- reference: the loop the public reference code writes (zibojia/RSLAD: a torch DataLoader with per-image PIL
  transforms, fp32, the attack as `rslad_inner_loss`), for the methods it covers (rslad, sat).

    python -m bench.throughput --method rslad --model resnet20 --json

The three loops take turns, `--repeats` rounds, and each keeps its best round, so that a slow moment of the machine
or the order of the loops does not decide a ratio. overhead = bare / pipeline images per second (1.0 = no
pipeline cost); speedup = pipeline / reference.
`--smoke` runs a seconds-long version (small_cnn, batch 8) to check the harness, not to time anything.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from acdistill.config import TrainAttack, TrainParams
from acdistill.data import ImageSet, iterate
from acdistill.engine import Trainer
from acdistill.methods import METHODS
from acdistill.models import create_model

REFERENCE_METHODS = ("rslad", "sat")


def training_set(n: int, seed: int = 0) -> ImageSet:
    """Random uint8 images: the timing does not depend on pixel values, and no dataset download is needed."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageSet("bench", images, torch.randint(0, 10, (n,), generator=g), torch.arange(n), 10, "random")


def build(args, cfg: TrainParams):
    torch.manual_seed(0)
    student = create_model(args.model)
    teacher = create_model(args.teacher or args.model).eval().requires_grad_(False)
    cls = METHODS.get(args.method)
    method = cls(student, teacher if cls.needs_teacher else None, cfg.method_params(), cfg.attack)
    return method


def pipeline_rate(args, cfg: TrainParams, data: ImageSet) -> float:
    method = build(args, cfg)
    trainer = Trainer(method, cfg, seed=0, device=torch.device("cpu"))
    trainer.fit(data.take(cfg.batch_size), augment=True, resume=False)  # warm-up: one step
    start = time.perf_counter()
    trainer.fit(data, augment=True, resume=False)
    return len(data) / (time.perf_counter() - start)


def bare_rate(args, cfg: TrainParams, data: ImageSet) -> float:
    method = build(args, cfg)
    method.setup(data)
    optimizer = torch.optim.SGD(list(method.student.parameters()) + method.parameters(), lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    batch = next(iterate(data, cfg.batch_size))
    method.student.train()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp)

    def step():
        with autocast:
            terms = method.loss(batch, method.perturb(batch))
        optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        optimizer.step()

    step()  # warm-up
    steps = len(data) // cfg.batch_size
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * cfg.batch_size / (time.perf_counter() - start)


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


def reference_rate(args, cfg: TrainParams, data: ImageSet) -> float:
    """zibojia/RSLAD's training loop (resnet18_rslad_cifar10.py with rslad_loss.py), with our models and budget."""
    from torchvision import transforms

    torch.manual_seed(0)
    student = create_model(args.model).train()
    teacher = create_model(args.teacher or args.model).eval()
    optimizer = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor()])
    loader = torch.utils.data.DataLoader(PILDataset(data, transform), batch_size=cfg.batch_size, shuffle=True,
                                         num_workers=args.workers)
    a = cfg.attack

    def kl_loss(a_, b_):
        return -a_ * b_ + torch.log(b_ + 1e-5) * b_

    def step(x, y):
        if args.method == "rslad":
            with torch.no_grad():
                teacher_logits = teacher(x)
            student.eval()
            x_adv = x.detach() + 0.001 * torch.randn(x.shape).detach()
            for _ in range(a.steps):
                x_adv.requires_grad_()
                with torch.enable_grad():
                    loss_kl = torch.sum(F.kl_div(F.log_softmax(student(x_adv), dim=1), F.softmax(teacher_logits, 1),
                                                 reduction="none"))
                grad = torch.autograd.grad(loss_kl, [x_adv])[0]
                x_adv = torch.clamp(torch.min(torch.max(x_adv.detach() + a.step_size * torch.sign(grad.detach()),
                                                        x - a.eps), x + a.eps), 0.0, 1.0)
            student.train()
            optimizer.zero_grad()
            adv_logits, nat_logits = student(x_adv), student(x)
            target = F.softmax(teacher_logits.detach(), dim=1)
            loss = 5 / 6.0 * torch.mean(kl_loss(F.log_softmax(adv_logits, dim=1), target)) + 1 / 6.0 * torch.mean(
                kl_loss(F.log_softmax(nat_logits, dim=1), target))
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

    warm = next(iter(loader))
    step(*warm)
    start = time.perf_counter()
    for x, y in loader:
        step(x.float(), y)
    return len(data) / (time.perf_counter() - start)


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
    parser.add_argument("--smoke", action="store_true", help="seconds-long run: checks the harness, times nothing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.teacher, args.batch_size, args.steps, args.attack_steps, args.workers, args.repeats = (
            "small_cnn", None, 8, 2, 1, 0, 1)
    extra = {"gacd": {"k": min(64, args.batch_size * args.steps - 1)}}.get(args.method, {})
    cfg = TrainParams(method=args.method, epochs=1, batch_size=args.batch_size, monitor_n=0, amp=args.amp,
                      channels_last=args.channels_last, schedule="constant",
                      attack=TrainAttack(eps=8 / 255, step_size=2 / 255, steps=args.attack_steps),
                      **({args.method: extra} if extra else {}))
    data = training_set(args.batch_size * args.steps)
    rounds = {"pipeline": [], "bare": [], "reference": []}
    for _ in range(args.repeats):
        rounds["pipeline"].append(pipeline_rate(args, cfg, data))
        rounds["bare"].append(bare_rate(args, cfg, data))
        if args.method in REFERENCE_METHODS:
            rounds["reference"].append(reference_rate(args, cfg, data))
    pipeline, bare = max(rounds["pipeline"]), max(rounds["bare"])
    reference = max(rounds["reference"]) if rounds["reference"] else None
    result = {
        "method": args.method, "model": args.model, "teacher": args.teacher or args.model,
        "batch_size": args.batch_size, "timed_steps": args.steps, "repeats": args.repeats,
        "attack_steps": args.attack_steps,
        "amp_bf16": args.amp, "channels_last": args.channels_last,
        "pipeline_img_s": round(pipeline, 2), "bare_img_s": round(bare, 2),
        "overhead": round(bare / pipeline, 3),
        "reference_img_s": round(reference, 2) if reference else None,
        "speedup_vs_reference": round(pipeline / reference, 3) if reference else None,
        "rounds_img_s": {k: [round(r, 2) for r in v] for k, v in rounds.items() if v},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or
        platform.machine(), "numpy": np.__version__,
    }
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
