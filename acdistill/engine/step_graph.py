"""The whole training step (attack, loss, backward, optimizer step) captured once as a CUDA graph and replayed.

At batch 128 a ResNet-18 step launches over 3000 small kernels, and the CPU's cost per launch, not the GPU, sets
the pace (BENCHMARKS.md). torch.compile's CUDA graphs (`compile: reduce-overhead`) cover the networks' forward
and backward only; the attack's steps, the losses and the optimizer still launch from Python. A replay of the
whole step is one launch.

What a replay repeats is what ran during the capture: Python-side state read by the step is frozen at that
moment, and tensors the step reads must be updated in place, never rebound. A method declares that it keeps to
this (`Method.cuda_graphs = "whole_step"`); the trainer captures anew every epoch (`release`), so state set per epoch
(`on_epoch_start`) is safe.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from acdistill.data import Batch

Step = Callable[[Batch], dict[str, torch.Tensor]]


class GraphedStep:
    """`step` run eagerly for the run's first `warmup` full batches (lazy initialisation, cuDNN's algorithm search,
    torch.compile and the optimizer's momentum buffers all happen outside the capture), then captured on the next
    full batch and replayed for every later one. Batches of another size (an epoch's last) run eagerly.

    The eager steps and the capture run on `stream`, one side stream for the whole run: autograd ties each
    parameter's gradient accumulation to the stream it first ran on, and a capture fails if that is another one
    (an H100 run did, with the default stream).

    Each call returns the step's loss terms; after a replay they are the graph's output tensors, overwritten by
    the next replay, so a caller reads (or queues work on) them before calling again."""

    def __init__(self, step: Step, batch_size: int, stream: torch.cuda.Stream, warmup: int = 3):
        self.step, self.batch_size, self.stream, self.warmup = step, batch_size, stream, warmup
        self.eager_full_batches = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: Batch | None = None
        self.terms: dict[str, torch.Tensor] = {}

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if len(batch) != self.batch_size:
            return self._eager(batch)
        if self.graph is None and self.eager_full_batches < self.warmup:
            self.eager_full_batches += 1
            return self._eager(batch)
        if self.graph is None:
            self._capture(batch)
        else:
            for static, fresh in ((self.static.x, batch.x), (self.static.y, batch.y), (self.static.index, batch.index)):
                static.copy_(fresh, non_blocking=True)
        self.graph.replay()
        return self.terms

    def release(self) -> None:
        """Drop the graph: the next full batch is captured anew (no eager warm-up again)."""
        self.graph, self.static, self.terms = None, None, {}

    def _eager(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            terms = self.step(batch)
        torch.cuda.current_stream().wait_stream(self.stream)
        return terms

    def _capture(self, batch: Batch) -> None:
        # Fresh tensors, not the batch itself: per-input caches (the teacher's logits) must miss during the capture,
        # or the graph would leave out the work they skipped.
        self.static = Batch(batch.x.clone(), batch.y.clone(), batch.index.clone())
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.stream):
            self.terms = self.step(self.static)
