"""params.yaml -> typed, validated objects. Unknown keys are errors that name the key and the file.

Numbers of pixel scale may be written as fractions ("8/255", see `acdistill.budgets`). Each method's own section
(e.g. ``distill.rslad``) is validated by that method's `Params` class, so a method's hyperparameters live in its own
file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from acdistill.attacks import EVAL_ATTACKS
from acdistill.budgets import LARGEST_EPS, Budget, Eps, PixelFloat, Strict, TrainAttack, pixel_scale_hint
from acdistill.data import DATASETS
from acdistill.data.datasets import RANGE, subset_indices
from acdistill.errors import AcdistillError, close_names, key_error, unknown_name
from acdistill.formats import format_names, parse_normalize
from acdistill.methods import METHODS
from acdistill.models.registry import resolve
from acdistill.registry import Registry
from acdistill.teachers import TEACHER_SOURCES


class SpeedParams(Strict):
    """How the training stages compute, not what: every key is left out of fingerprints, so a run may resume, and
    an ablation reuse its points, with any of them switched. Measured in BENCHMARKS.md."""

    amp: bool = Field(
        False,
        description=(
            "bf16 autocast of the networks: faster on GPUs with bf16 tensor cores (and on CPUs with oneDNN); the "
            "losses stay fp32"
        ),
    )
    channels_last: bool = Field(
        False, description=("NHWC memory for the student and the batches: the layout tensor-core convolutions prefer")
    )
    compile: bool | Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        False, description="torch.compile the student's and teacher's forward (true: mode 'default'): fused kernels"
    )
    step_graph: bool = Field(
        False,
        description=(
            "CUDA: capture the whole training step (attack, loss, backward, optimizer step) once per epoch as a CUDA "
            "graph and replay it for every batch: no host launch overhead"
        ),
    )
    cudnn_benchmark: bool = Field(
        False,
        description=(
            "CUDA: cuDNN times its convolution algorithms once per shape and keeps the fastest (results then vary "
            "between runs in the last bits)"
        ),
    )


def _known_arch(name: str) -> str:
    resolve(name)  # an unknown name: its AcdistillError (a ValueError) lists the close names and every choice
    return name


Arch = Annotated[str, AfterValidator(_known_arch)]  # an architecture name of acdistill.models


class Sectioned(BaseModel):
    """A params section whose keys besides its fields are the sub-sections of registered things, each validated by
    the thing's own `Params`: a method's `distill.<method>`, a teacher source's `teacher.<source>`. Any other key is
    unknown, and named with the close keys. A subclass names its registry (`_registry`), the field that chooses the
    run's thing (`chooser`) and what the things are called (`kind`)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    chooser: ClassVar[str]
    kind: ClassVar[str]
    _sections: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @classmethod
    def _registry(cls) -> Registry:
        raise NotImplementedError

    def _refuse_moved(self, key: str) -> None:
        """A hook for keys that once lived here: raise ValueError saying where they went."""

    @model_validator(mode="after")
    def _validate_sections(self) -> Sectioned:
        registry = self._registry()
        takes = [name for name in registry.names() if registry.get(name).Params is not None]
        for key, value in (self.model_extra or {}).items():
            self._refuse_moved(key)
            if key not in takes:
                close = close_keys(key, [*key_paths(type(self)), *takes])
                guess = f"; did you mean {' or '.join(close)}?" if close else ""
                raise key_error(key, f"unknown key '{key}'{guess} (not a field, nor a {self.kind}: {', '.join(takes)})")
            params = registry.get(key).Params
            try:
                self._sections[key] = params.model_validate(value or {})
            except ValidationError as e:
                inner = ".".join([key, *map(str, _first_error(e)["loc"])])
                raise key_error(inner, f"{key}.{_describe(e, params)}") from None
        return self

    @model_serializer(mode="wrap")
    def _dump_the_run_section(self, handler, info):
        """The run's sub-section as validated, defaults filled in: the same settings written two ways (`tau: 0.1` or
        nothing, 0.1 being the default) dump, and so fingerprint, the same. Other things' sections are left out: the
        run never reads them, so editing `gacd` must not invalidate an ARD checkpoint or ablate point."""
        chosen = getattr(self, self.chooser)
        data = {k: v for k, v in handler(self).items() if k not in self._sections}
        if chosen in self._sections:
            data[chosen] = self._sections[chosen].model_dump(mode=info.mode)
        return data

    def section(self, name: str | None = None) -> BaseModel | None:
        """The validated sub-section of `name` (default: the run's chosen thing); where none was given, its `Params`
        with their defaults, or None when it has no `Params` or they have no default for some key."""
        name = name or getattr(self, self.chooser)
        if name in self._sections:
            return self._sections[name]
        params = self._registry().get(name).Params
        try:
            return params.model_validate({}) if params is not None else None
        except ValidationError:
            return None


class TrainParams(Sectioned):
    """One training run (teacher training, distillation, adversarial fine-tuning). Besides the keys below, a
    section may hold one sub-section per method name with that method's params."""

    chooser: ClassVar[str] = "method"
    kind: ClassVar[str] = "method"

    method: str
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[int] = Field(default_factory=list, description="epochs at which 'step' multiplies lr by gamma")
    gamma: float = Field(0.1, gt=0)
    attack: TrainAttack = TrainAttack()
    sync_bn: bool = Field(
        False,
        description=(
            "under torchrun on CUDA: batch norm over the whole global batch (SyncBatchNorm), not each rank's slice"
        ),
    )
    monitor_n: int = Field(200, ge=0, description="held-out test images for per-epoch clean / PGD accuracy")
    monitor_steps: int = Field(10, ge=1)

    @classmethod
    def _registry(cls) -> Registry:
        return METHODS

    @model_validator(mode="after")
    def _known_method(self) -> TrainParams:
        METHODS.get(self.method)
        return self

    def _refuse_moved(self, key: str) -> None:
        if key in SpeedParams.model_fields or key == "cuda_graph":
            moved = "step_graph" if key == "cuda_graph" else key
            raise ValueError(f"'{key}' is now set once for every training stage, as speed.{moved}")

    def method_params(self) -> BaseModel:
        return self.section()


class DataParams(Strict):
    dataset: str = "cifar10"
    train_subset: int | str | None = Field(
        4000, description="first N images, a range A:B (images A to B-1), a path to an index file, or null"
    )
    test_subset: int | str | None = 1000
    val_subset: int | str | None = Field(
        None,
        description=(
            "training images held out for choosing settings (eval.split: val): a range A:B or an index file; none of "
            "them may be in train_subset"
        ),
    )
    root: str = Field("data", description="torchvision download directory")
    augment: bool = True

    @model_validator(mode="after")
    def _known_dataset(self) -> DataParams:
        DATASETS.get(self.dataset)
        if isinstance(self.val_subset, int):
            raise ValueError(
                f"val_subset: {self.val_subset} would be the first training images; held-out images are a range A:B "
                "(e.g. 10000:11000) or an index file"
            )
        for key in ("train_subset", "test_subset", "val_subset"):
            value = getattr(self, key)
            bounds = RANGE.fullmatch(value) if isinstance(value, str) else None
            if bounds and int(bounds[2]) <= int(bounds[1]):
                raise ValueError(f"{key}: range {value} takes the images A to B - 1, so B must exceed A")
        return self

    def by_content(self) -> dict[str, Any]:
        """The section as fingerprints take it: a subset given as an index file is its path and the sha256 of the
        indices it holds, so that a file rewritten between two runs counts as other data."""
        dumped = self.model_dump(mode="json")
        for key in ("train_subset", "test_subset", "val_subset"):
            value = dumped[key]
            if isinstance(value, str) and not RANGE.fullmatch(value):
                indices = subset_indices(value)
                dumped[key] = {"index_file": value, "sha256": hashlib.sha256(indices.tobytes()).hexdigest()}
        return dumped

    def for_training(self) -> dict[str, Any]:
        """What decides a trained model (see `by_content`): every key but val_subset, which only evaluations read."""
        return {k: v for k, v in self.by_content().items() if k != "val_subset"}


class TeacherTrain(TrainParams):
    method: str = "sat"


class Normalization(Strict):
    """Per-channel input statistics: three values each, std positive (see `acdistill.formats.parse_normalize`)."""

    mean: list[float]
    std: list[float]


def _normalization_input(value: Any) -> Any:
    """Any spelling `parse_normalize` takes ("MEAN/STD" on the command line, a {mean, std} mapping) -> the
    field's value, so that a bad one gets its own message rather than pydantic's account of the union."""
    if isinstance(value, str) and value in ("none", "dataset"):
        return value
    try:
        parsed = parse_normalize(value)
    except AcdistillError as e:
        raise ValueError(str(e)) from None
    return parsed if parsed is None else {"mean": parsed[0], "std": parsed[1]}


class TeacherParams(Sectioned):
    """Where the teacher comes from: `source` names a registered `acdistill.teachers.TeacherSource`; a source's own
    settings are its sub-section (`robustbench: {name: ...}`)."""

    chooser: ClassVar[str] = "source"
    kind: ClassVar[str] = "source's section"

    source: str = Field(
        "train", description="a source of acdistill.teachers: train, file, url, robustbench or one registered"
    )
    arch: Arch = Field(
        "resnet20",
        description=(
            "the architecture to train (source train), or of a bare state dict in acdistill's own key layout; released "
            "layouts name their own"
        ),
    )
    path: str | None = Field(None, description="local checkpoint file (source: file)")
    url: str | None = None
    sha256: str | None = Field(
        None,
        pattern="^[0-9a-fA-F]{64}$",
        description=(
            "expected sha256 of the weights file: required with source url, checked when given for file and robustbench"
        ),
    )
    format: str = Field("auto", description="the file's checkpoint layout; auto detects it (see `acdistill formats`)")
    checkpoint_key: str | None = Field(
        None,
        description=(
            "the entry of the file's container that holds the weights (e.g. best); null: state_dict, model, net or last"
        ),
    )
    normalize: Annotated[Literal["dataset", "none"] | Normalization | None, BeforeValidator(_normalization_input)] = (
        Field(
            None,
            description=(
                "input normalization of third-party weights: none ([0, 1] inputs), dataset (data.dataset's "
                "statistics) or {mean, std}; null: the file's own (an error for a file that records none). Training "
                "uses dataset"
            ),
        )
    )
    expected_clean_acc: float | None = Field(
        None,
        ge=0,
        le=100,
        description=("the clean accuracy (percent) the file's source states; robustbench entries have RobustBench's"),
    )
    strict_accuracy: bool = Field(
        False, description=("a clean accuracy more than 5 points below the stated one is an error instead of a warning")
    )
    cross_dataset: bool = Field(
        False,
        description=(
            "distill from a teacher (adv-finetune: fine-tune a student) whose checkpoint names another dataset than "
            "data.dataset (with as many classes), on purpose; false refuses it"
        ),
    )
    train: TeacherTrain = TeacherTrain()

    @classmethod
    def _registry(cls) -> Registry:
        return TEACHER_SOURCES

    @field_validator("source")
    @classmethod
    def _known_source(cls, name: str) -> str:
        if name not in TEACHER_SOURCES:
            raise ValueError(unknown_name("teacher source", name, TEACHER_SOURCES.names()))
        return name

    @model_validator(mode="after")
    def _source_fields(self) -> TeacherParams:
        TEACHER_SOURCES.get(self.source).check(self)
        if self.format not in format_names():
            raise ValueError(unknown_name("format", self.format, format_names()))
        return self

    def normalization(self) -> str | tuple[list[float], list[float]] | None:
        """`normalize` as `acdistill.formats` takes it."""
        if isinstance(self.normalize, Normalization):
            return self.normalize.mean, self.normalize.std
        return self.normalize


class DistillParams(TrainParams):
    method: str = "rslad"
    student: Arch = Field("resnet20", description="student architecture")


class AftParams(TrainParams):
    """Adversarial fine-tuning (AFT) of a distilled student: a short PGD-AT with a small lr, as the GACD paper
    fine-tunes its students."""

    method: str = "sat"
    lr: float = Field(0.01, gt=0)
    epochs: int | None = Field(
        None,
        ge=1,
        description=(
            "null: a tenth of the epochs the fine-tuned student was distilled for (read from its checkpoint), rounded "
            "down, at least 1"
        ),
    )

    def for_student(self, distill_epochs: int | None, student: str) -> AftParams:
        """This section with `epochs` set: as given, else from the student's distillation epochs (None when its
        checkpoint records none, e.g. a fetched teacher)."""
        if self.epochs is not None:
            return self
        if distill_epochs is None:
            raise AcdistillError(
                f"aft.epochs is not set, and {student} records no distillation epochs to take "
                f"a tenth of; set aft.epochs (or --epochs)"
            )
        return self.model_copy(update={"epochs": max(1, distill_epochs // 10)})


class SweepParams(Strict):
    """Accuracy against eps for one attack: the curve of Carlini et al.'s checklist, as DVC plot data and a PNG."""

    attack: str = "pgd20"
    eps: list[Eps] = Field([0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255], min_length=2)
    n: int | None = Field(None, ge=1, description="first n test images; null for eval.n")


class SanityParams(Strict):
    """Gradient-masking checks run by `attack-eval --sanity` (see acdistill/engine/sanity.py)."""

    n: int = Field(200, ge=1, description="first n test images")
    steps: int = Field(20, ge=1, description="PGD steps of the base attack")
    more_steps_factor: int = Field(5, ge=2, description="the longest run has steps x this")
    square_queries: int = Field(1000, ge=1, description="queries of the black-box Square attack")
    tolerance: float = Field(1.0, ge=0, description="accuracy points a check allows for random-start noise")
    huge_eps_max_accuracy: float = Field(2.0, ge=0, le=100, description="percent allowed when eps covers the image")


class EvalParams(Strict):
    attacks: list[str] = Field(["natural", "fgsm", "pgd20"], min_length=1)
    split: Literal["test", "val"] = Field(
        "test", description="test: data.test_subset; val: data.val_subset, training images held out from training"
    )
    n: int | None = Field(1000, ge=1, description="first n test images; null for the whole test subset")
    cross_dataset: bool = Field(
        False,
        description=(
            "evaluate (attack-eval, figures) a model whose checkpoint names another dataset than data.dataset, on "
            "purpose; false refuses it"
        ),
    )
    batch_size: int = Field(256, ge=1)
    eps: Eps = 8 / 255
    norm: Literal["Linf", "L2"] = "Linf"
    steps: int | None = Field(None, ge=1, description="iterations of every iterative attack; null for their own")
    n_per_attack: dict[str, int] = Field(
        default_factory=dict,
        description=("attack -> run it on only the first N of the n images (a costly one, e.g. aa-fast: 500)"),
    )
    sweep: SweepParams | None = None
    sanity: SanityParams = SanityParams()

    @model_validator(mode="after")
    def _valid_budget(self) -> EvalParams:
        largest = max([self.eps] + (self.sweep.eps if self.sweep else []))
        if largest > LARGEST_EPS[self.norm]:
            raise ValueError(f"an L-inf eps must be at most 1: {pixel_scale_hint(largest)}")
        for name in self.attacks + ([self.sweep.attack] if self.sweep else []):
            EVAL_ATTACKS.get(name).check(self.budget())
        for name, n in self.n_per_attack.items():
            EVAL_ATTACKS.get(name)
            if n < 1:
                raise ValueError(f"n_per_attack: {name}: {n} images; give at least 1")
        return self

    def budget(self) -> Budget:
        """The evaluation attacks' threat model: eps, norm, and steps (None: each attack's own)."""
        return Budget(self.eps, self.norm, self.steps)


class ProbeParams(Strict):
    """transfer-probe: a linear head on the frozen features of a model, trained and attacked on a target dataset."""

    dataset: str = Field("mnist", description="target dataset (the offline mirror holds mnist)")
    train_subset: int | str | None = Field(5000, description="first N target train images, an index file, or null")
    test_subset: int | str | None = 1000
    root: str = Field("data", description="torchvision download directory")
    epochs: int = Field(30, ge=1, description="head epochs over the cached features")
    lr: float = Field(0.01, gt=0, description="Adam learning rate of the head")
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(256, ge=1)
    attacks: list[str] = ["natural", "pgd7"]
    eps: PixelFloat = 8 / 255

    @model_validator(mode="after")
    def _known(self) -> ProbeParams:
        DATASETS.get(self.dataset)
        for name in self.attacks:
            EVAL_ATTACKS.get(name).check(Budget(self.eps))
        return self


class FiguresParams(Strict):
    """The GACD paper's analysis figures (`acdistill figures`), on the first test images of `data`."""

    n: int = Field(500, ge=2, description="test images for the logit-correlation heatmaps")
    tsne_classes: tuple[int, int] = Field(
        (2, 9), description="natural classes a, b; b is attacked toward a (CIFAR-10 bird and truck, as in the paper)"
    )
    tsne_per_class: int = Field(100, ge=2, description="images per class in the t-SNE")
    batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _two_classes(self) -> FiguresParams:
        a, b = self.tsne_classes
        if a == b or min(a, b) < 0:
            raise ValueError("tsne_classes needs two different class indices")
        return self


# Keys a grid point may change: the ablation distills students from the one teacher and evaluates them.
ABLATE_SECTIONS = ("seed", "data", "distill", "eval")
# A point key, not a params key: `adv_finetune: true` also fine-tunes the point's distilled student with the
# `aft` section (whose keys a point may then set) and evaluates the fine-tuned one.
FINETUNE = "adv_finetune"
# A point key of explicit points: the point's label, and the name of a link to its run directory.
NAME = "name"
# A point key: the held-out accuracy by which ablate.search chooses this point's setting (default: search.by).
SEARCH_BY = "search_by"
# Point keys that are not params keys.
POINT_KEYS = (FINETUNE, NAME, SEARCH_BY)


class SearchParams(Strict):
    """ablate.search: before the points run, choose one setting of each point (e.g. its lr) on held-out training
    images (data.val_subset): a run per value at the first seed, evaluated there, the value with the highest
    accuracy under `by` kept. The seeds then run at that value; the chosen value's run is the first seed's."""

    key: str = Field(description="the dotted params key to choose, e.g. distill.lr")
    values: list[Any] = Field(min_length=2, description="the values tried, for every point that does not set key")
    by: str = Field("pgd20", description="the attack whose held-out accuracy is maximized (a point's search_by wins)")
    attacks: list[str] | None = Field(None, description="the held-out evaluation's attacks; null: natural and by")

    @model_validator(mode="after")
    def _known_attacks(self) -> SearchParams:
        for name in [self.by, *(self.attacks or [])]:
            EVAL_ATTACKS.get(name)
        if self.attacks is not None and self.by not in self.attacks:
            raise ValueError(f"search.by '{self.by}' must be one of search.attacks")
        return self

    def attacks_for(self, by: str) -> list[str]:
        return list(dict.fromkeys([*(self.attacks or ["natural"]), by]))


class SlurmParams(Strict):
    """Where ablate.cluster slurm sends each point: a Slurm job through submitit (its parameters, by their names)."""

    partition: str | None = Field(None, description="the Slurm partition (null: the cluster's default)")
    timeout_min: int = Field(24 * 60, ge=1, description="the job's time limit in minutes")
    gpus_per_node: int = Field(1, ge=0, description="GPUs per point")
    cpus_per_task: int = Field(8, ge=1)
    mem_gb: int | None = Field(None, ge=1, description="memory per point in GB (null: the partition's default)")
    additional_parameters: dict[str, Any] = Field(
        default_factory=dict, description="any other sbatch option, e.g. {account: myproject, qos: high}"
    )


class AblateParams(Strict):
    """ablate: one distill + attack-eval run per point: the product of the grid's value lists, then the
    explicit points."""

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted params key -> values to try")
    points: list[dict[str, Any]] = Field(
        default_factory=list,
        description=(
            "explicit points run after the grid's, each {dotted key: value}; adv_finetune: true fine-tunes the "
            "distilled student with the aft section and evaluates that"
        ),
    )
    fixed: dict[str, Any] = Field(default_factory=dict, description="dotted overrides shared by every point")
    sort_by: str | None = Field(None, description="a result column to sort by (descending); null: grid order")
    jobs: int = Field(
        1,
        ge=1,
        description=(
            "points run at once, each in its own process (submitit) with its own GPU, or a share of the CPU "
            "cores; 1 runs them one after another in this process"
        ),
    )
    cluster: Literal["local", "slurm"] = Field(
        "local",
        description=(
            "local: with jobs > 1, the processes run on this machine; slurm: each point is a Slurm job, at most "
            "`jobs` at once"
        ),
    )
    slurm: SlurmParams = SlurmParams()
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description=(
            "two or more seeds: run every point once per seed and report each accuracy's mean with its 95 % interval "
            "over seeds and images; null: one run per point at the params' seed, intervals over the images"
        ),
    )
    compare: list[tuple[str, str]] = Field(
        default_factory=list,
        description=(
            "pairs of point names [A, B]: the table gives A - B per attack with its 95 % interval, and says whether "
            "it is within noise (with ablate.only, the pairs of points it runs)"
        ),
    )
    only: list[str] | None = Field(
        None, description="names of the explicit points to run, and no other (not the grid's); null: every point"
    )
    search: SearchParams | None = None
    strict: bool = Field(
        False,
        description=(
            "refuse a grid or points key the point does not read (another method's section, aft without "
            "adv_finetune); false: warn"
        ),
    )
    keep_weights: list[str] = Field(
        default_factory=list,
        description=(
            "names of points whose students later stages read: a finished point whose weights are missing (a clone "
            "holds only the committed results) is trained again"
        ),
    )

    @field_validator("compare", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if isinstance(value, list) and not all(isinstance(p, list | tuple) and len(p) == 2 for p in value):
            raise ValueError(f"takes pairs of point names, e.g. [[ard, sat], [rslad, sat]]; got {value}")
        return value

    @model_validator(mode="after")
    def _keys(self) -> AblateParams:
        given = {**self.grid, **{k: [v] for k, v in self.fixed.items()}}
        if self.seeds is not None and len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"seeds must differ: {', '.join(map(str, self.seeds))}")
        if self.seeds is not None and len(self.seeds) == 1:
            raise ValueError(
                f"one seed ({self.seeds[0]}) gives no interval over seeds; without seeds each run's interval is over "
                f"its test images only: set seed: {self.seeds[0]} instead, or give two or more seeds"
            )
        names = [point[NAME] for point in self.points if NAME in point]
        for first, second in self.compare:
            if first == second:
                raise ValueError(f"compare: [{first}, {second}] compares a point with itself")
        for name in [n for pair in self.compare for n in pair] + self.keep_weights + (self.only or []):
            if name not in names:
                raise ValueError(f"no point named '{name}'; named points: {', '.join(names) or 'none'}")
        for name in names:
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
                raise ValueError(f"point name {name!r}: use letters, digits and . _ + - only")
        if len(set(names)) < len(names):
            raise ValueError(f"point names must differ: {', '.join(names)}")
        for point in self.points:
            given.update({k: [v] for k, v in point.items() if k != NAME})
        if NAME in self.grid:
            raise ValueError(f"'{NAME}' names an explicit point; a grid point is named by its values")
        if self.search is not None:
            given.setdefault(self.search.key, self.search.values)
        for key, values in given.items():
            if key == FINETUNE:
                if not all(isinstance(v, bool) for v in values):
                    raise ValueError(f"'{FINETUNE}' takes true or false")
            elif key == SEARCH_BY:
                if self.search is None:
                    raise ValueError(f"'{SEARCH_BY}' names the attack of ablate.search, which is not set")
            elif key.split(".")[0] not in (*ABLATE_SECTIONS, "aft", "speed"):
                raise ValueError(
                    f"'{key}': a grid point can change only {', '.join(ABLATE_SECTIONS)}, aft and speed (the teacher "
                    "is fixed)"
                )
            if not values:
                raise ValueError(f"'{key}' has no values")
            if key == "seed" and self.seeds is not None:
                raise ValueError("'seed' is set by ablate.seeds; a point, the grid or ablate.fixed cannot set it too")
        return self


class Params(Strict):
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    speed: SpeedParams = SpeedParams()
    data: DataParams = DataParams()
    teacher: TeacherParams = TeacherParams()
    distill: DistillParams = DistillParams()
    aft: AftParams = AftParams()
    eval: EvalParams = EvalParams()
    probe: ProbeParams = ProbeParams()
    figures: FiguresParams = FiguresParams()
    ablate: AblateParams = AblateParams()

    # What these params were validated from (the file's mapping with its overrides), and the prefix that names the
    # file in errors: an ablation point's params are these with the point's values, validated again.
    _raw: dict | None = PrivateAttr(default=None)
    _where: str = PrivateAttr(default="")

    def with_overrides(self, overrides: dict[str, Any], where: str | None = None) -> Params:
        """These params with dotted overrides ({"distill.gacd.k": 256}) applied to what they were read from (every
        method's section included), validated again; an error starts with `where` (default: the params file)."""
        raw = self._raw if self._raw is not None else self.model_dump(mode="json")
        return _validated(raw, overrides, self._where if where is None else where)


def fingerprint(model: BaseModel | dict, **context: Any) -> str:
    """Stable hash of validated params plus context: a resumable run only continues one with the same settings."""
    payload = {"params": model.model_dump(mode="json") if isinstance(model, BaseModel) else model, **context}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ParamsLoader(yaml.SafeLoader):
    """yaml.safe_load's loader without YAML 1.1's base-60 numbers, so that a range like 2:30 stays the string it
    reads as, not the integer 150."""


ParamsLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:int", r"[-+]?(?:0b[0-1_]+|0[0-7_]+|(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?$|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)$"
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?$|[-+]?\.(?:inf|Inf|INF)$|\.(?:nan|NaN|NAN)$",
        "-+0123456789.",
    ),
):
    ParamsLoader.add_implicit_resolver(_tag, re.compile(_pattern, re.X), list(_first))


def read_yaml(text: str) -> Any:
    """A params file's or an override's YAML, as safe_load reads it but for base-60 numbers (ParamsLoader)."""
    return yaml.load(text, Loader=ParamsLoader)  # a SafeLoader: no Python objects, as safe_load


def parse_override(text: str) -> tuple[str, Any]:
    """'distill.ard.tau=10' -> ('distill.ard.tau', 10); the value is read as YAML (safe_load)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise AcdistillError(f"override '{text}' is not KEY=VALUE (e.g. distill.epochs=2)")
    try:
        return key.strip(), read_yaml(raw)
    except yaml.YAMLError:
        raise AcdistillError(f"override '{text}': value is not valid YAML") from None


def _apply(raw: dict, dotted: str, value: Any, where: str) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        if node.get(part) is None:  # absent, or an optional section switched off with null
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise AcdistillError(f"{where}cannot set '{dotted}': '{part}' is not a section")
        node = child
    node[leaf] = value


def _describe(err: ValidationError, model: type[BaseModel]) -> str:
    """'section.key: what is wrong' for the first error of validating `model` (pydantic lists them all; one line is
    what users read). An unknown key gets the close keys of `model` ('distil.method' -> 'distill.method')."""
    first = _first_error(err)
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        given = first.get("input")
        dotted = f"{loc}.{next(iter(dotted_items(given)))}" if isinstance(given, dict) and given else loc
        close = close_keys(dotted, key_paths(model))
        msg = "unknown key" + (f"; did you mean {' or '.join(close)}?" if close else "")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


def _first_error(err: ValidationError) -> dict[str, Any]:
    """The error a user reads first: an unknown key, when there is one (a typo of a required key is also a missing
    key, and the unknown one says what to fix), else pydantic's first."""
    errors = err.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key `model` accepts, sections included ('distill', 'distill.attack.eps'), with the registered
    things' sub-sections ('distill.gacd.k', 'teacher.robustbench.name')."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        for section in _models_in(field.annotation):
            paths += key_paths(section, f"{prefix}{name}.")
    if issubclass(model, Sectioned):
        registry = model._registry()
        for name in registry.names():
            if registry.get(name).Params is not None:
                paths += key_paths(registry.get(name).Params, f"{prefix}{name}.")
    return paths


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def dotted_items(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping by dotted keys, as `-S` sets them: {'method': 'kd', 'attack': {'eps': 1}} -> {'method': 'kd',
    'attack.eps': 1} (an empty mapping is a leaf)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= dotted_items(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def close_keys(key: str, paths: list[str]) -> list[str]:
    """The keys a mistyped dotted key could be, up to three. The first part that names no key is matched against
    its section's keys, the rest kept ('distil.method' -> 'distill.method', 'distill.attack.esp' ->
    'distill.attack.eps'); a last part that is a key of a section below is named there ('distill.eps' ->
    'distill.attack.eps')."""
    valid = set(paths)
    parts = key.split(".")
    bad = next((i for i in range(len(parts)) if ".".join(parts[: i + 1]) not in valid), len(parts) - 1)
    parent = ".".join(parts[:bad])
    siblings = [p.rpartition(".")[2] for p in paths if p.rpartition(".")[0] == parent]
    fixed = [".".join([*parts[:bad], name]) for name in close_names(parts[bad], siblings)]
    whole = [".".join([f, *parts[bad + 1 :]]) for f in fixed]
    close = [k for k in whole if k in valid] or fixed
    if bad == len(parts) - 1:
        below = f"{parent}." if parent else ""
        close += [p for p in paths if p.startswith(below) and p.endswith(f".{parts[-1]}")]
    return list(dict.fromkeys(close))[:3]


def load_params(
    path: str | Path | None = "params.yaml",
    overrides: dict[str, Any] | None = None,
    given_as: dict[str, str] | None = None,
) -> Params:
    """Read params.yaml (a missing default file means all defaults), apply dotted overrides, validate. An error
    names the params file when there is one, or, for a key an override set, how it was given (`given_as`:
    {"distill.method": "--method foo"}, as the command line wrote it)."""
    raw: dict = {}
    where = ""
    if path is not None:
        p = Path(path)
        if p.is_file():
            where = f"{p}: "
            try:
                raw = read_yaml(p.read_text()) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark else ""
                raise AcdistillError(f"{p}: invalid YAML{where}") from None
            if not isinstance(raw, dict):
                raise AcdistillError(f"{p}: expected a mapping of sections at the top level")
        elif str(path) != "params.yaml":
            raise AcdistillError(f"params file not found: {p}")
    return _validated(raw, overrides or {}, where, given_as or {})


def _blamed(err: ValidationError, given_as: dict[str, str]) -> str | None:
    """The override the first error is about (its key, a key inside its section, or its section), as given."""
    first = _first_error(err)
    parts = [str(p) for p in first["loc"]]
    if "key" in first.get("ctx", {}):  # a section's error about one of its sub-sections' keys
        parts.append(first["ctx"]["key"])
    loc = ".".join(parts)
    for key in sorted(given_as, key=len, reverse=True):
        if key == loc or loc.startswith(f"{key}.") or key.startswith(f"{loc}."):
            return given_as[key]
    return None


def _validated(raw: dict, overrides: dict[str, Any], where: str, given_as: dict[str, str] | None = None) -> Params:
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        _apply(raw, key, value, where)  # a None value sets null (e.g. `-S eval.sweep=null` turns the sweep off)
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        given = _blamed(e, given_as or {})
        described = _describe(e, Params)
        raise AcdistillError(f"{given}: {described}" if given else f"{where}{described}") from None
    params._raw, params._where = raw, where
    return params
