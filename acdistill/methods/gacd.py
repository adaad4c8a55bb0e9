from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from acdistill.attacks.ot import cosine_cost, sinkhorn_cost
from acdistill.budgets import PixelFloat
from acdistill.data import ImageSet
from acdistill.errors import AcdistillError, warn
from acdistill.losses import float32_math
from acdistill.methods.base import Method, MethodParams, TrainAttack, register_method, true_class_probability
from acdistill.models import feature_dim


class GACDParams(MethodParams):
    embed_dim: int = Field(128, ge=1, description="d of the L2-normalized embeddings (CRD's convention)")
    negatives: Literal["bank", "batch"] = Field(
        "bank",
        description=(
            "bank: k student embeddings of other classes read from a memory bank (CRD's estimator); they are constants "
            "to the gradient. batch: the paper's Algorithm 1, s- = f^s(x-) computed afresh, with gradients: the "
            "student's embeddings of the batch's clean images of other classes, all of them (k does not apply)"
        ),
    )
    k: int = Field(16384, gt=0, description="bank negatives per anchor, capped at the other-class samples available")
    tau: float = Field(0.1, gt=0, description="temperature of the critic")
    momentum: float = Field(0.5, ge=0, lt=1, description="memory-bank update: new row = m * old + (1 - m) * s")
    reweight: bool = Field(True, description="weight each sample by the teacher's probability of its class")
    symmetric: bool = Field(
        True,
        validate_default=True,
        description=(
            "add CRD's student-anchored half: s+ against teacher embeddings of other classes from a second bank. "
            "Eq. 10 alone, over a bank, gives the student no push away from its negatives, and its embeddings "
            "collapsed to one direction in the study (RESULTS.md)"
        ),
    )
    embed_bn: bool = Field(
        True,
        description=(
            "standardize each embedding dimension over the batch (batch norm without affine parameters) before the L2 "
            "normalization. Linear heads alone grew the features' common component until every embedding pointed one "
            "way (RESULTS.md); false gives CRD's plain linear heads"
        ),
    )
    ce_weight: float = Field(1.0, ge=0, description="weight of CE(S(x), y), which trains the classifier head")
    bank_dtype: Literal["float32", "float16"] = Field("float32", description="float16 halves the bank's memory")
    scatter_steps: int = Field(1, ge=0, description="feature-scattering attack steps (eps is distill.attack.eps)")
    scatter_step_size: PixelFloat = 8 / 255
    scatter_net: Literal["student", "teacher"] = Field("student", description="whose features are scattered")
    sinkhorn_reg: float = Field(0.01, gt=0)
    sinkhorn_iters: int = Field(100, ge=1)

    @field_validator("symmetric")
    @classmethod
    def _symmetric_needs_the_bank(cls, symmetric: bool, info: ValidationInfo) -> bool:
        if symmetric and info.data.get("negatives") == "batch":
            raise ValueError(
                "true needs negatives: bank (CRD's student-anchored half reads a bank of teacher "
                "embeddings); with negatives: batch, set symmetric: false"
            )
        return symmetric


def reweighted_nce(
    pos: torch.Tensor,
    neg: torch.Tensor,
    weight: torch.Tensor,
    *,
    tau: float,
    log_z: torch.Tensor,
    n_data: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 10 of the GACD paper, negated and averaged over the batch:
    -mean_i w_i [log h(t_i, s_i+) + sum_j log(1 - h(t_i, s_ij-))], h = P / (P + k/N), P = exp(t.s / tau) / Z.

    pos [B] and neg [B, k] are the dot products t.s of normalized embeddings; log_z = log Z. With `mask` [B, k]
    (bool), anchor i's negatives are the scores where mask[i] holds, and its k is their count.
    """
    k = torch.tensor(float(neg.shape[1]), device=neg.device) if mask is None else mask.sum(dim=1).to(neg.dtype)
    log_h_pos, log_not_h_neg = critic_log_terms(pos, neg, tau=tau, log_z=log_z, log_noise=torch.log(k / n_data))
    if mask is not None:
        log_not_h_neg = torch.where(mask, log_not_h_neg, 0.0)
    return -(weight * (log_h_pos + log_not_h_neg.sum(dim=1))).mean()


def critic_log_terms(
    pos: torch.Tensor, neg: torch.Tensor, *, tau: float, log_z: torch.Tensor, log_noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log h(t, s+) for each positive score and log(1 - h(t, s-)) for each negative score, with log_noise =
    log(k/N), one value or one per anchor [B], in the log domain (log h = log P - log(P + k/N)), so large
    t.s / tau cannot overflow."""
    log_p_pos, log_p_neg = pos / tau - log_z, neg / tau - log_z
    noise = log_noise.to(pos.dtype).expand_as(pos)
    log_h_pos = log_p_pos - torch.logaddexp(log_p_pos, noise)
    log_not_h_neg = noise[:, None] - torch.logaddexp(log_p_neg, noise[:, None])
    return log_h_pos, log_not_h_neg


def first_batch_log_z(
    pos: torch.Tensor, neg: torch.Tensor, *, tau: float, n_data: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """CRD's estimate of the normalizing constant, fixed from the first batch: Z = N * mean(exp(t.s / tau)) over
    every positive and negative score of the batch (with `mask`, the negatives where it holds)."""
    negatives = neg.flatten() if mask is None else neg[mask]
    scores = torch.cat([pos, negatives]).detach() / tau
    return torch.logsumexp(scores, dim=0) - math.log(scores.numel()) + math.log(n_data)


class MemoryBank(nn.Module):
    """N x d embeddings addressed by dataset index (`rows`, the state a resumed run restores), plus the other-class
    pools negatives are drawn from (derived from the training set's labels, so not saved)."""

    def __init__(self, data: ImageSet, dim: int, dtype: torch.dtype):
        super().__init__()
        n = len(data)
        self.n = n
        self.register_buffer("rows", F.normalize(torch.randn(n, dim), dim=1).to(dtype))
        # Dataset index -> bank row: subsets (e.g. an index file) need not be 0..N-1.
        row_of = torch.full((int(data.indices.max()) + 1,), -1, dtype=torch.long)
        row_of[data.indices.cpu()] = torch.arange(n)
        labels = data.labels.cpu()
        pools = [torch.nonzero(labels != c).flatten() for c in range(data.num_classes)]
        pool_size = torch.tensor([len(p) for p in pools])
        padded = torch.zeros(data.num_classes, int(pool_size.max()), dtype=torch.long)
        for c, pool in enumerate(pools):
            padded[c, : len(pool)] = pool
        for name, value in (("row_of", row_of), ("labels", labels), ("pool_size", pool_size), ("pools", padded)):
            self.register_buffer(name, value, persistent=False)

    def available(self) -> int:
        """Other-class samples of the class that has the fewest (among the classes present)."""
        present = torch.unique(self.labels)
        return int(self.pool_size[present].min())

    def sample_negatives(self, y: torch.Tensor, k: int) -> torch.Tensor:
        """[B, k] bank rows of other classes: for each anchor, k distinct rows drawn uniformly from its pool. CRD
        (HobbitLong/RepDistiller) draws without replacement too; it draws with replacement only where k exceeds the
        pool, which GACD's cap at `available()` rules out, so that case is refused."""
        pool_size = self.pool_size[y]
        if k > int(pool_size.min()):
            raise ValueError(f"{k} negatives asked of a pool of {int(pool_size.min())} other-class rows")
        # Random keys per row, positions past the row's pool last: the k smallest are a uniform draw without
        # replacement from the pool.
        keys = torch.rand(len(y), self.pools.shape[1], device=y.device)
        keys = keys.masked_fill(torch.arange(self.pools.shape[1], device=y.device) >= pool_size[:, None], 2.0)
        return torch.gather(self.pools[y], 1, keys.topk(k, dim=1, largest=False).indices)

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        rows = self.row_of[index]
        if (rows < 0).any():
            raise AcdistillError("gacd: a batch holds images that are not in the training set the bank was built for")
        return rows

    def class_cosines(self) -> tuple[float, float]:
        """Mean cosine between rows of the same class and between rows of different classes (pairs of distinct
        rows), from per-class sums: a bank whose rows collapse to one direction has both near 1."""
        rows, n = self.rows.float(), len(self.labels)
        sums = torch.zeros(int(self.labels.max()) + 1, rows.shape[1], device=rows.device).index_add_(
            0, self.labels, rows
        )
        counts = torch.bincount(self.labels).float()
        within = (sums.pow(2).sum() - n).item()  # rows are unit vectors: each one's product with itself is 1
        across = (sums.sum(0).pow(2).sum() - sums.pow(2).sum()).item()
        pairs_within, pairs_across = (counts * (counts - 1)).sum().item(), n * n - counts.pow(2).sum().item()
        return (
            within / pairs_within if pairs_within else math.nan,
            across / pairs_across if pairs_across else math.nan,
        )

    def update(self, rows: torch.Tensor, embeddings: torch.Tensor, momentum: float) -> None:
        mixed = momentum * self.rows[rows].float() + (1 - momentum) * embeddings.detach().float()
        # Out of place: this step's graph still holds the old rows for the negatives' gradient.
        self.rows = self.rows.index_put((rows,), F.normalize(mixed, dim=1).to(self.rows.dtype))


@register_method
class GACD(Method):
    """Guided adversarial contrastive distillation (the GACD paper's Algorithm 1 and Eq. 10, with CRD's critic).

    - x+ maximizes the entropic OT distance (Sinkhorn, cost 1 - cos) between the features of the clean batch and
      of the perturbed batch, label-free (feature scattering): `scatter_steps` signed steps from a uniform start.
      The cost is computed on the penultimate features, as the GACD paper describes its positives; the
      feature-scattering reference code (Zhang & Wang 2019) computes it on the logits instead.
    - t+ = normalize(W_t T.features(x+)), s+ = normalize(W_s S.features(x+)); W_t, W_s are trainable linear maps
      to `embed_dim`; the teacher backbone stays frozen. `embed_bn` standardizes W f over the batch before the
      normalization.
    - Negatives of other classes than the anchor's, by `negatives`:
      - bank: k rows of a memory bank of student embeddings, drawn without replacement. After each step the rows
        of the batch move toward its s+ (momentum, then renormalized): the bank holds what the student produced.
        Rows read from a bank are constants, so Eq. 10 alone gives the student no gradient from its negatives.
      - batch: as Algorithm 1 computes them, s- = f^s(x-) afresh in the step: the student's embeddings (same head)
        of every clean image of another class in the batch, with gradients, so their push reaches the student.
    - Critic h(t, s) = P / (P + k/N), P = exp(t.s / tau) / Z, Z fixed from the first batch (CRD's estimator; the
      paper writes h without Z). With batch negatives, k is each anchor's count of them.
    - Loss: reweighted NCE (weights w = softmax(T(x+))[y], detached; 1 with reweight false) + ce_weight CE(S(x), y).
    - `symmetric` adds CRD's other half, `nce_student_anchor`: s+ is the anchor, t+ its positive, and k rows of a
      bank of teacher embeddings (same negatives' indices, own Z) its negatives: with bank negatives, this half is
      what pushes the student's embeddings of different classes apart.

    Three variants have names:
    - paper-literal (`negatives: batch`, `symmetric: false`, `embed_bn: false`): Algorithm 1 and Eq. 10 as the
      paper writes them, with CRD's Z;
    - memory bank (`negatives: bank`, `symmetric: false`, `embed_bn: false`): the paper's loss over CRD's memory
      bank, the project's first reading of the paper, whose students' embeddings collapsed (RESULTS.md);
    - default (`negatives: bank`, `symmetric: true`, `embed_bn: true`): the memory bank with the two changes that
      ended the collapse.
    """

    name = "gacd"
    Params = GACDParams
    needs_teacher = True
    # cuda_graphs stays "none": features() runs outside the compiled forward, and the banks are rebound each step
    log_only_prefixes = ("bank/", "teacher_bank/")

    @classmethod
    def training_attack(cls, params: GACDParams, attack: TrainAttack) -> TrainAttack:
        return attack.model_copy(update={"steps": params.scatter_steps, "step_size": params.scatter_step_size})

    def __init__(self, student, teacher, params: GACDParams, attack):
        super().__init__(student, teacher, params, attack)
        t_dim, s_dim = (
            feature_dim(net, f"gacd: the {role}", f"the embedding head embed_{role[0]} takes them")
            for net, role in ((teacher, "teacher"), (student, "student"))
        )
        self.embed_t = nn.Linear(t_dim, params.embed_dim)
        self.embed_s = nn.Linear(s_dim, params.embed_dim)
        self.bank: MemoryBank | None = None  # student embeddings: the teacher anchors' negatives
        self.teacher_bank: MemoryBank | None = None  # teacher embeddings: the student anchors' negatives
        self.k = params.k
        self.n_data = 0  # N of the critic's k/N: the training set's size, known at setup
        # log Z of each critic, fixed from the first batch. Whether they are fixed is a Python flag (saved as the
        # module's extra state): testing the tensors would read them back from the device at every step.
        self.register_buffer("log_z", torch.zeros(()))
        self.register_buffer("log_z_student_anchor", torch.zeros(()))
        self.z_fixed = False

    def setup(self, train_set: ImageSet) -> None:
        p = self.params
        self.n_data = len(train_set)
        if p.negatives == "batch":  # each step's batch holds the negatives
            return
        self.bank = MemoryBank(train_set, p.embed_dim, getattr(torch, p.bank_dtype))
        if p.symmetric:
            self.teacher_bank = MemoryBank(train_set, p.embed_dim, getattr(torch, p.bank_dtype))
        available = self.bank.available()
        if p.k > available:
            warn(
                f"gacd: k={p.k} negatives asked, but the training set has only {available} images of other "
                f"classes for some class; using k={available}"
            )
        self.k = min(p.k, available)

    def on_epoch_end(self) -> dict[str, float]:
        """The banks' geometry (dvclive only): collapsed embeddings show as cosines near 1 within and across
        classes, as in the study (RESULTS.md)."""
        out = {}
        for name, bank in self.banks().items():
            out[f"{name}/cos_same_class"], out[f"{name}/cos_other_class"] = bank.class_cosines()
        return {k: v for k, v in out.items() if not math.isnan(v)}  # nan: no pair of rows to average (tiny sets)

    def banks(self) -> dict[str, MemoryBank]:
        """The memory banks setup() built: none with batch negatives."""
        return {name: bank for name, bank in (("bank", self.bank), ("teacher_bank", self.teacher_bank)) if bank}

    def get_extra_state(self) -> dict[str, bool]:
        return {"z_fixed": self.z_fixed}

    def set_extra_state(self, state: dict[str, bool]) -> None:
        self.z_fixed = state["z_fixed"]

    def perturb(self, batch):
        net = self.student if self.params.scatter_net == "student" else self.teacher

        def objective():
            with torch.no_grad():
                clean = net.features(batch.x)
            return lambda x_adv: sinkhorn_cost(
                cosine_cost(clean, net.features(x_adv)), self.params.sinkhorn_reg, self.params.sinkhorn_iters
            )

        return self.run_attack(objective, batch.x, "uniform")

    def loss(self, batch, x_adv):
        p = self.params
        with torch.no_grad():
            t_features = self.teacher.features(x_adv)
            weight = (
                true_class_probability(self.teacher.head(t_features), batch.y)
                if p.reweight
                else torch.ones(len(batch), device=x_adv.device)
            )
        t_embedded, s_embedded = self.embed_t(t_features), self.embed_s(self.student.features(x_adv))
        if p.negatives == "batch":
            clean = self.student.features(batch.x)  # the negatives' features, and CE's
            terms = self.batch_contrast(t_embedded, s_embedded, self.embed_s(clean), batch.y, weight)
            return {**terms, "ce": p.ce_weight * F.cross_entropy(self.student.head(clean), batch.y)}
        if batch.index is None:
            raise AcdistillError("gacd needs each image's dataset index to address its memory bank")
        assert self.bank is not None, "setup() builds the bank"
        terms, t, s = self.contrast_terms(t_embedded, s_embedded, self.bank.sample_negatives(batch.y, self.k), weight)
        # Every rank moves the rows of the whole batch, so the banks stay identical.
        rows = self.ranks.gather(self.bank.lookup(batch.index))[0]
        self.bank.update(rows, self.ranks.gather(s.detach())[0], p.momentum)
        if self.teacher_bank is not None:
            self.teacher_bank.update(rows, self.ranks.gather(t.detach())[0], p.momentum)
        return {**terms, "ce": p.ce_weight * F.cross_entropy(self.student(batch.x), batch.y)}

    @float32_math
    def contrast_terms(
        self, t_embedded: torch.Tensor, s_embedded: torch.Tensor, neg_rows: torch.Tensor, weight: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The teacher-anchored NCE and, with `symmetric`, the student-anchored one (each Z fixed on its first call),
        and the normalized embeddings t, s."""
        if self.params.embed_bn:
            t_embedded, s_embedded = self.standardize(t_embedded), self.standardize(s_embedded)
        t, s = F.normalize(t_embedded, dim=1), F.normalize(s_embedded, dim=1)
        pos = (t * s).sum(dim=1)
        fixed = self.z_fixed
        terms = {}
        terms["nce"], log_z = self.contrast(t, self.bank, neg_rows, pos, weight, self.log_z if fixed else None)
        if self.teacher_bank is not None:
            terms["nce_student_anchor"], log_z_s = self.contrast(
                s, self.teacher_bank, neg_rows, pos, weight, self.log_z_student_anchor if fixed else None
            )
        if not fixed:
            self.log_z = log_z
            if self.teacher_bank is not None:
                self.log_z_student_anchor = log_z_s
            self.z_fixed = True
        return terms, t, s

    @float32_math
    def batch_contrast(
        self,
        t_embedded: torch.Tensor,
        s_embedded: torch.Tensor,
        neg_embedded: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The teacher-anchored NCE with Algorithm 1's negatives: for anchor t+_i, the student's embeddings of the
        clean images of other classes in the batch (every rank's), taken with their gradients (Z fixed on the first
        call)."""
        if self.params.embed_bn:
            t_embedded, s_embedded, neg_embedded = map(self.standardize, (t_embedded, s_embedded, neg_embedded))
        t, s = F.normalize(t_embedded, dim=1), F.normalize(s_embedded, dim=1)
        negatives = self.ranks.gather(F.normalize(neg_embedded, dim=1), grad=True)[0]
        pos, neg = (t * s).sum(dim=1), t @ negatives.T
        mask = y[:, None] != self.ranks.gather(y)[0][None, :]
        if not self.z_fixed:  # from the whole first batch, on every rank alike
            self.log_z = first_batch_log_z(
                *(self.ranks.gather(v.detach())[0] for v in (pos, neg)),
                tau=self.params.tau,
                n_data=self.n_data,
                mask=self.ranks.gather(mask.to(torch.uint8))[0].bool(),
            )
            self.z_fixed = True
        return {
            "nce": reweighted_nce(
                pos, neg, weight, tau=self.params.tau, log_z=self.log_z, n_data=self.n_data, mask=mask
            )
        }

    def standardize(self, embedded: torch.Tensor) -> torch.Tensor:
        """Each dimension to zero mean and unit variance over the whole batch, every rank's rows included, so that
        no direction is common to all embeddings. No running statistics: the heads serve only in training."""
        batch = self.ranks.gather(embedded, grad=True)[0]
        mean, var = batch.mean(dim=0), batch.var(dim=0, unbiased=False)
        return (embedded - mean) / torch.sqrt(var + 1e-5)

    def contrast(
        self,
        anchor: torch.Tensor,
        bank: MemoryBank,
        neg_rows: torch.Tensor,
        pos: torch.Tensor,
        weight: torch.Tensor,
        log_z: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 10 for these anchors against the bank's sampled rows; returns it and log Z (set on the first call)."""
        # anchor . bank^T, then the sampled columns: B x N scores cost far less memory than B x k x d gathered rows.
        neg = torch.gather(anchor @ bank.rows.float().T, 1, neg_rows)
        if log_z is None:  # from the whole first batch, on every rank alike
            log_z = first_batch_log_z(
                self.ranks.gather(pos.detach())[0],
                self.ranks.gather(neg.detach())[0],
                tau=self.params.tau,
                n_data=bank.n,
            )
        return reweighted_nce(pos, neg, weight, tau=self.params.tau, log_z=log_z, n_data=bank.n), log_z
