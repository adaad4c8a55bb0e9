"""The training loop shared by teacher training, distillation and adversarial fine-tuning.

Per step it asks the method for x' (`perturb`) and a dict of named loss terms (`loss`), and minimizes their sum.
Per epoch it logs every term's mean, the learning rate, and clean / PGD accuracy on a held-out slice (dvclive),
then writes a resumable state file atomically. Epoch e's data order, augmentation and attack noise are a pure
function of (seed, e), so a run resumed at an epoch boundary replays exactly what an uninterrupted run does.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from acdistill.attacks import EVAL_ATTACKS, Budget, ce_objective, pgd
from acdistill.config import TrainParams, fingerprint
from acdistill.data import ImageSet, iterate
from acdistill.engine.evaluate import correct_mask
from acdistill.errors import AcdistillError
from acdistill.io import atomic_path
from acdistill.methods import Method

console = Console(stderr=True)


def lr_factor(cfg: TrainParams, epoch_progress: float) -> float:
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch_progress / cfg.epochs))
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch_progress >= m for m in cfg.milestones)
    return 1.0


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


class Trainer:
    def __init__(self, method: Method, cfg: TrainParams, *, seed: int, device: torch.device,
                 state_path: Path | None = None, live_dir: Path | None = None, label: str = "train",
                 context: dict[str, Any] | None = None):
        """`context`: whatever else decides the result (data, teacher hash, architecture); a saved state is
        resumed only if it and `cfg` are unchanged."""
        self.method, self.cfg, self.seed, self.device = method, cfg, seed, device
        self.state_path, self.live_dir, self.label = state_path, live_dir, label
        self.model = method.student
        if cfg.amp and device.type == "cpu" and not torch.backends.mkldnn.is_available():
            raise AcdistillError("amp: bf16 autocast needs oneDNN on CPU; run without --amp")
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        params = list(self.model.parameters()) + method.parameters()
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.fingerprint = fingerprint(cfg, seed=seed, **(context or {}))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.cfg.amp else nullcontext()

    def _load_state(self) -> tuple[int, list[dict]]:
        if self.state_path is None or not self.state_path.is_file():
            return 0, []
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        if state.get("fingerprint") != self.fingerprint:
            console.print(f"[yellow]{self.label}: {self.state_path} was written with other settings; starting over")
            return 0, []
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        return state["epoch"], state["history"]

    def _save_state(self, epoch: int, history: list[dict]) -> None:
        if self.state_path is None:
            return
        with atomic_path(self.state_path) as tmp:
            torch.save({"fingerprint": self.fingerprint, "epoch": epoch, "history": history,
                        "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "method": self.method.state_dict()}, tmp)

    def monitor(self, data: ImageSet | None) -> dict[str, float]:
        if data is None or len(data) == 0:
            return {}
        self.model.eval()
        a = self.cfg.attack
        steps = self.cfg.monitor_steps

        def pgd_attack(model, x, y, budget):
            return pgd(ce_objective(model, y), x, eps=budget.eps, step_size=a.step_size, steps=steps, start="uniform")

        torch.manual_seed(self.seed)
        out = {}
        for name, attack in (("clean_acc", EVAL_ATTACKS.get("natural").run), (f"pgd{steps}_acc", pgd_attack)):
            correct = correct_mask(self.model, data, attack, budget=Budget(a.eps), batch_size=256,
                                   device=self.device)
            out[name] = round(100.0 * correct.float().mean().item(), 2)
        self.model.train()
        return out

    def fit(self, train_set: ImageSet, monitor_set: ImageSet | None = None, *, augment: bool = True,
            resume: bool = True) -> list[dict[str, Any]]:
        cfg = self.cfg
        self.method.setup(train_set)
        start_epoch, history = self._load_state() if resume else (0, [])
        steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
        if start_epoch:
            console.print(f"{self.label}: resuming after epoch {start_epoch} of {cfg.epochs} ({self.state_path})")
        live = None
        if self.live_dir is not None:
            from dvclive import Live

            # Curves are rewritten from the saved history: DVC deletes a stage's plots before rerunning it.
            live = Live(str(self.live_dir), save_dvc_exp=False, dvcyaml=None)
            for record in history:
                self._log(live, record)
        self.model.train()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(self.label, total=(cfg.epochs - start_epoch) * steps_per_epoch, info="")
            for epoch in range(start_epoch, cfg.epochs):
                record = self._epoch(epoch, train_set, augment, steps_per_epoch, bar, task)
                record.update(self.monitor(monitor_set))
                history.append(record)
                console.print(f"{self.label} epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in record.items()
                    if k != "epoch" and not k.startswith(self.method.log_only_prefixes)))
                if live is not None:
                    self._log(live, record)
                self._save_state(epoch + 1, history)
        if live is not None:
            live.end()
        self.model.eval()
        return history

    @staticmethod
    def _log(live, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key != "epoch":
                live.log_metric(key, value)
        live.next_step()

    def _epoch(self, epoch: int, data: ImageSet, augment: bool, steps_per_epoch: int, bar: Progress,
               task) -> dict[str, Any]:
        cfg = self.cfg
        torch.manual_seed(_epoch_seed(self.seed, epoch))
        self.method.on_epoch_start(epoch, cfg.epochs)
        sums: dict[str, float] = {}
        seen = 0
        start = time.perf_counter()
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for step, batch in enumerate(iterate(data, cfg.batch_size, shuffle=True, augment=augment,
                                             seed=_epoch_seed(self.seed, epoch), device=self.device)):
            batch.x = batch.x.contiguous(memory_format=memory_format)
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg, epoch + step / steps_per_epoch)
            with self._autocast():
                x_adv = self.method.perturb(batch)
                terms = self.method.loss(batch, x_adv)
            total = sum(terms.values())
            for name, value in terms.items():
                if not torch.isfinite(value):
                    raise AcdistillError(f"{self.label}: loss term '{name}' is {value.item()} in epoch {epoch + 1}; "
                                         f"the last good checkpoint is kept (lower the lr?)")
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            seen += len(batch)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.item() * len(batch)
            bar.update(task, advance=1, info=f"epoch {epoch + 1} loss {total.item():.3f}")
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": cfg.lr * lr_factor(cfg, epoch)}
        record.update({f"loss/{k}": v / seen for k, v in sums.items()})
        record["loss/total"] = sum(v for k, v in record.items() if k.startswith("loss/"))
        record["images_per_s"] = seen / (time.perf_counter() - start)
        record.update(self.method.on_epoch_end())
        return record
