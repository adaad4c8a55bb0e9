"""The training loop shared by teacher training, distillation and adversarial fine-tuning.

Per step it asks the method for x' (`perturb`) and a dict of named loss terms (`loss`), and minimizes their sum.
Per epoch it logs every term's mean, the learning rate, and clean / PGD accuracy on a held-out slice (in dvclive's
files, `acdistill.engine.curves`), then writes a resumable state file atomically. Epoch e's data order,
augmentation and attack noise are a pure function of (seed, e), so a run resumed at an epoch boundary replays exactly
what an uninterrupted run does.
"""

from __future__ import annotations

import io
import itertools
import math
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from acdistill import progress
from acdistill.attacks import EVAL_ATTACKS, ce_objective, pgd
from acdistill.config import SpeedParams, TrainParams, fingerprint
from acdistill.data import Batch, ImageSet, iterate
from acdistill.distributed import Ranks
from acdistill.engine.curves import open_curves
from acdistill.engine.evaluate import correct_mask
from acdistill.engine.step_graph import GraphedStep, Step
from acdistill.errors import AcdistillError, Interrupted, warn
from acdistill.io import write_files
from acdistill.methods import Method
from acdistill.progress import console


def lr_factor(cfg: TrainParams, epoch_progress: float) -> float:
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch_progress / cfg.epochs))
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch_progress >= m for m in cfg.milestones)
    return 1.0


# Loss terms stay on the device and are read (a host sync) every CHECK_EVERY steps and at the epoch's end: a sync
# per step left the GPU idle while the CPU queued the next step.
CHECK_EVERY = 10
RANK_SEED_STRIDE = 7919  # rank r draws its attack noise from seed + r * stride; rank 0 is a single process's


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def compile_networks(method: Method, mode: bool | str) -> None:
    """torch.compile the student and teacher in place (nn.Module.compile): their state dicts keep their keys.
    Static shapes: a run sees two batch sizes (full and an epoch's last), and a graph per size beats a dynamic one,
    which would also be compiled and recorded (CUDA graphs) anew once the second size appears."""
    for net in (method.student, method.teacher):
        if net is not None:
            net.compile(mode=None if mode is True else mode, dynamic=False)


def configure_backends(speed: SpeedParams, device: torch.device) -> None:
    """Process-wide backend choices of a run: cuDNN's algorithm search is a global switch in torch."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = speed.cudnn_benchmark


def make_optimizer(params: list[torch.Tensor], cfg: TrainParams, device: torch.device) -> torch.optim.SGD:
    """SGD with momentum; on CUDA the fused kernel, one launch per step where the multi-tensor path takes a dozen
    (a ResNet-18 step at batch 128 waits on launches, BENCHMARKS.md)."""
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        fused=True if device.type == "cuda" else None,
    )


def check_settings(
    cfg: TrainParams, speed: SpeedParams, device: torch.device, method: type[Method], ranks: Ranks = Ranks()
) -> None:
    """The training settings that `device`, the method or the number of ranks cannot run, as an AcdistillError:
    called by the stages before they create any file, and by Trainer."""
    if cfg.sync_bn and device.type != "cuda":
        raise AcdistillError(f"sync_bn: torch's SyncBatchNorm runs on CUDA only, not on {device.type}")
    if speed.amp and device.type == "cpu" and not torch.backends.mkldnn.is_available():
        raise AcdistillError("speed.amp: bf16 autocast needs oneDNN on CPU; run without it")
    if speed.compile == "reduce-overhead" and method.cuda_graphs == "none":
        raise AcdistillError(
            f"speed.compile: reduce-overhead (CUDA graphs) does not work with {method.name}, "
            "which runs its networks outside their forward; use compile: true"
        )
    if speed.step_graph and device.type == "cuda":
        if method.cuda_graphs != "whole_step":
            raise AcdistillError(
                f"speed.step_graph: {method.name} keeps per-step state outside its tensors, "
                "which a replayed step would not update; run it without step_graph"
            )
        if speed.compile == "reduce-overhead":
            raise AcdistillError(
                "speed.step_graph already replays the whole step; use it with compile: true, "
                "not compile: reduce-overhead"
            )
        if ranks.world > 1:
            raise AcdistillError("speed.step_graph works in a single process only; run torchrun without it")


class Trainer:
    """The one training loop of every method (mdistiller's design): each step sums the method's dict of named
    losses, and each epoch logs them, monitors clean and PGD accuracy on held-out images, and saves a resumable
    state. Used by every training stage (acdistill.pipeline.common.train_and_save)."""

    def __init__(
        self,
        method: Method,
        cfg: TrainParams,
        *,
        seed: int,
        device: torch.device,
        speed: SpeedParams = SpeedParams(),
        state_path: Path | None = None,
        live_dir: Path | None = None,
        label: str = "train",
        context: dict[str, Any] | None = None,
        ranks: Ranks = Ranks(),
    ):
        """`context`: whatever else decides the result (data, teacher hash, architecture); a saved state is
        resumed only if it and `cfg` are unchanged. `speed`: how the steps run (not part of the fingerprint).
        `ranks`: the torchrun processes training together; only rank 0 monitors, logs and saves. `state_path`: the
        resumable state (None: none is kept); `live_dir`: the dvclive curves (None: none). Raises AcdistillError for
        settings the device or the method cannot run (e.g. CUDA step graphs on a CPU)."""
        self.method, self.cfg, self.speed, self.seed, self.device, self.ranks = method, cfg, speed, seed, device, ranks
        method.ranks = ranks
        self.state_path, self.live_dir, self.label = state_path, live_dir, label
        self.model = method.student
        self.ddp: torch.nn.Module | None = None  # under torchrun, DDP over the student and the method (fit builds it)
        method.to(device)
        check_settings(cfg, speed, device, type(method), ranks)
        if cfg.sync_bn and ranks.world > 1:  # one process has the whole batch already
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if speed.channels_last:
            self.model.to(memory_format=torch.channels_last)
        step_graphs = speed.step_graph and device.type == "cuda"
        if speed.step_graph and not step_graphs:
            warn(f"{label}: speed.step_graph needs a CUDA device; the steps run without it on {device}")
        if speed.compile:
            compile_networks(method, speed.compile)
        configure_backends(speed, device)
        self.params = list(self.model.parameters()) + list(method.parameters())
        self.optimizer = make_optimizer(self.params, cfg, device)
        self.graphed_step = (
            GraphedStep(self.train_step, cfg.batch_size, torch.cuda.Stream(device)) if step_graphs else None
        )
        self.fingerprint = fingerprint(cfg, seed=seed, **(context or {}))

    def _autocast(self):
        if not self.speed.amp:
            return nullcontext()
        # autocast's cache of bf16 weights would hand a captured step the copies made during its capture.
        return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=self.graphed_step is None)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            if self.graphed_step is None:
                group["lr"] = lr
            elif isinstance(group["lr"], torch.Tensor):  # a captured step reads it from device memory
                group["lr"].fill_(lr)
            else:
                group["lr"] = torch.tensor(lr, device=self.device)

    def train_step(self, batch: Batch, share: float = 1.0) -> dict[str, torch.Tensor]:
        """One optimizer step on `batch`; returns the loss terms. `share`: this rank's weight in the global mean
        (under torchrun: its images times the world size over the global batch)."""
        with self._autocast():
            x_adv = self.method.perturb(batch)  # the attack's input gradients: outside DDP's forward
            terms = self.method.loss(batch, x_adv) if self.ddp is None else self.ddp(batch, x_adv)
        total = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        # Under torchrun DDP averages the ranks' gradients during this backward; `share` weighs each rank's mean so
        # that the average is the global batch's mean even when the ranks hold different numbers of images.
        (total * share if self.ddp is not None else total).backward()
        self.optimizer.step()
        return terms

    def step_function(self) -> Step:
        """`train_step`, or with speed.step_graph its captured replay (GraphedStep)."""
        return self.graphed_step or self.train_step

    def _load_state(self) -> tuple[int, list[dict]]:
        if self.state_path is None or not self.state_path.is_file():
            return 0, []
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        if state.get("fingerprint") != self.fingerprint:
            warn(f"{self.label}: {self.state_path} was written with other settings; starting over")
            return 0, []
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.method.load_state_dict(state["method"])
        except (RuntimeError, KeyError, ValueError) as e:  # torch's report of mismatched keys spans many lines
            raise AcdistillError(
                f"{self.state_path} does not fit this run ({' '.join(str(e).split())[:200]}); delete it to start over"
            ) from None
        return state["epoch"], state["history"]

    def _save_state(self, epoch: int, history: list[dict]) -> None:
        if self.state_path is None or not self.ranks.main:
            return
        # serialized in memory, so that a write that fails (no space) is the OSError that names its cause, which
        # torch.save reports as an "unexpected pos" of its zip writer
        buffer = io.BytesIO()
        torch.save(
            {
                "fingerprint": self.fingerprint,
                "epoch": epoch,
                "history": history,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "method": self.method.state_dict(),
            },
            buffer,
        )
        write_files({self.state_path: buffer.getvalue()})

    def monitor(self, data: ImageSet | None) -> dict[str, float]:
        if data is None or len(data) == 0:
            return {}
        steps = self.cfg.monitor_steps
        monitored = replace(self.cfg.attack.budget(), steps=steps)

        def pgd_attack(model, x, y, budget):
            objective = ce_objective(model, y)
            return pgd(objective, x, eps=budget.eps, step_size=budget.step_size, steps=budget.steps, start="uniform")

        torch.manual_seed(self.seed)
        out = {}
        # the PGD monitor of a large model takes minutes: shown as a loop of its own, inside the epochs' display
        with progress.task(f"{self.label}: monitor (clean, pgd{steps})", 2 * len(data)) as task:
            for name, attack in (("clean_acc", EVAL_ATTACKS.get("natural").run), (f"pgd{steps}_acc", pgd_attack)):
                correct = correct_mask(
                    self.model,
                    data,
                    attack,
                    budget=monitored,
                    batch_size=256,
                    device=self.device,
                    on_batch=task.advance,
                )
                out[name] = round(100.0 * correct.float().mean().item(), 2)
        return out

    def fit(
        self,
        train_set: ImageSet,
        monitor_set: ImageSet | None = None,
        *,
        augment: bool = True,
        resume: bool = True,
        max_steps: int | None = None,
    ) -> list[dict[str, Any]]:
        """Train for cfg.epochs epochs (those after a resumed state's), monitoring on `monitor_set` after each;
        returns the per-epoch history, one {"epoch": n, "loss/<name>": ..., "clean_acc": %, ...} per epoch, the
        resumed epochs' included. train_set: uint8 or [0, 1] float images [N, 3, H, W]; `augment`: random crop and
        flip. A state saved with other settings (cfg, context, data) is not resumed: training starts over, and says
        so. Ctrl-C raises acdistill.errors.Interrupted, naming the last saved epoch. `max_steps` ends each epoch
        after that many steps: a timing run (acdistill.pipeline.sizing), which sees the whole `train_set` (GACD's
        memory bank is as large as in the run it times) in less time than an epoch."""
        cfg = self.cfg
        if self.device.type != "cpu":  # resident uint8 images (150 MB for CIFAR-10): batching and crops run there
            train_set = train_set.to(self.device)
        self.method.setup(train_set)
        self.method.to(self.device)  # what setup built (memory banks)
        start_epoch, history = self._load_state() if resume else (0, [])
        if self.ranks.world > 1:  # every rank starts from rank 0's weights and buffers
            self.ddp = self.ranks.data_parallel(self.model, self.method, self.device)
        steps_per_epoch = min(math.ceil(len(train_set) / cfg.batch_size), max_steps or math.inf)
        if start_epoch and self.ranks.main:
            console.print(f"{self.label}: resuming after epoch {start_epoch} of {cfg.epochs} ({self.state_path})")
        curves = None
        if self.live_dir is not None and self.ranks.main:
            # Curves are rewritten from the saved history: DVC deletes a stage's plots before rerunning it.
            curves = open_curves(self.live_dir)
            for record in history:
                curves.log(record)
        self.model.train()
        saved = start_epoch
        total = (cfg.epochs - start_epoch) * steps_per_epoch
        try:
            with progress.task(self.label, total, "batches") as task:
                for epoch in range(start_epoch, cfg.epochs):
                    record = self._epoch(epoch, train_set, augment, steps_per_epoch, task)
                    record.update(self.monitor(monitor_set if self.ranks.main else None))
                    history.append(record)
                    if self.ranks.main:
                        console.print(
                            f"{self.label} epoch {epoch + 1}/{cfg.epochs}: "
                            + ", ".join(
                                f"{k} {v:.4g}"
                                for k, v in record.items()
                                if k != "epoch" and not k.startswith(self.method.log_only_prefixes)
                            ),
                            soft_wrap=True,  # one line per epoch in logs too, where rich would wrap at 80 columns
                        )
                    if curves is not None:
                        curves.log(record)
                    self._save_state(epoch + 1, history)
                    saved = epoch + 1
                    self.ranks.barrier()  # no rank runs ahead of the saved state
        except KeyboardInterrupt:
            if not saved:
                raise Interrupted(
                    f"{self.label}: interrupted in epoch 1 of {cfg.epochs}; no epoch was saved, a rerun starts over"
                ) from None
            kept = f"; run the same command to resume ({self.state_path})" if self.state_path else ""
            raise Interrupted(f"{self.label}: interrupted after epoch {saved} of {cfg.epochs}{kept}") from None
        if curves is not None:
            curves.end()
        self.model.eval()
        return history

    def _check_finite(self, terms: dict[str, torch.Tensor], epoch: int) -> None:
        """Stop on a NaN or inf term (summed over the epoch so far: one bad step makes its sum non-finite), before
        the epoch's state is saved; under torchrun every rank stops together, as none may wait for the others."""
        bad = [name for name, value in terms.items() if not torch.isfinite(value)]
        bad_anywhere = self.ranks.sum(torch.tensor([float(len(bad))])).item() if self.ranks.world > 1 else len(bad)
        if not bad_anywhere:
            return
        what = f"loss term '{bad[0]}' is {terms[bad[0]].item()}" if bad else "a loss term on another rank is not finite"
        raise AcdistillError(
            f"{self.label}: {what} in epoch {epoch + 1}; the last good checkpoint is kept (lower the lr?)"
        )

    def _epoch(
        self, epoch: int, data: ImageSet, augment: bool, steps_per_epoch: int, task: progress.Task
    ) -> dict[str, Any]:
        cfg = self.cfg
        torch.manual_seed(_epoch_seed(self.seed, epoch) + RANK_SEED_STRIDE * self.ranks.rank)  # own attack noise
        self.method.on_epoch_start(epoch, cfg.epochs)
        sums: dict[str, torch.Tensor] = {}  # on the device, weighted by batch size
        seen, loss = 0, ""
        start = time.perf_counter()
        memory_format = torch.channels_last if self.speed.channels_last else torch.contiguous_format
        train_step = self.step_function()
        if self.graphed_step is not None:
            self.graphed_step.release()  # captured anew: on_epoch_start may have changed what the step reads
        batches = iterate(
            data, cfg.batch_size, shuffle=True, augment=augment, seed=_epoch_seed(self.seed, epoch), device=self.device
        )
        for step, batch in enumerate(itertools.islice(batches, steps_per_epoch)):
            global_size = len(batch)
            if global_size < self.ranks.world:  # an epoch's last few images cannot give every rank one: skipped
                continue
            batch = self.ranks.shard(batch)
            batch.x = batch.x.contiguous(memory_format=memory_format)
            self._set_lr(cfg.lr * lr_factor(cfg, epoch + step / steps_per_epoch))
            if self.ranks.world > 1:  # each rank's mean, weighted by its share: the average is the global mean's
                terms = train_step(batch, len(batch) * self.ranks.world / global_size)
            else:
                terms = train_step(batch)
            seen += len(batch)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().double() * len(batch)
            if step % CHECK_EVERY == 0:
                self._check_finite(sums, epoch)
                loss = f", loss {sum(sums.values()).item() / seen:.3f}"
            task.advance(1, f"epoch {epoch + 1}/{cfg.epochs}, batch {step + 1}/{steps_per_epoch}{loss}")
        self._check_finite(sums, epoch)
        counts = [torch.tensor(float(seen), dtype=torch.float64), *(v.cpu() for v in sums.values())]
        totals = self.ranks.sum(torch.stack(counts))
        seen, sums = totals[0].item(), dict(zip(sums, totals[1:].tolist()))
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": cfg.lr * lr_factor(cfg, epoch)}
        record.update({f"loss/{k}": v / seen for k, v in sums.items()})
        record["loss/total"] = sum(v for k, v in record.items() if k.startswith("loss/"))
        record["images_per_s"] = seen / (time.perf_counter() - start)
        record.update(self.method.on_epoch_end())
        return record
