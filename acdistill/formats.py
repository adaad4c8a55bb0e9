"""Released checkpoints of robust models, read in the layout their project saved and mapped onto acdistill's
architectures, so that the rebuilt model computes the original's function.

Three steps, each named in the result so that `fetch-teacher` can print and record it:
1. `read_released`: the file (safetensors, or a PyTorch pickle read with weights_only), its container
   ({'state_dict': ...}, {'model': ...}, {'net': ...}, RobustBench's {'last': ..., 'best': ...}), the wrapper prefixes
   of DataParallel/DDP ('module.'), torch.compile ('_orig_mod.') and training scripts ('model.', 'net.'), stripped
   until none is left, and the input normalization the file carries (MadryLab's normalizer buffers, the mu/sigma of
   RobustBench's networks, acdistill's own normalize buffers);
2. `detect`: the format whose key layout the state dict has. Layouts that several projects share with different
   functions (the PreActResNet's shortcut, the DeepMind networks' activation) are ambiguous and need a named format;
3. `build`: the architecture the format reads from the weights' shapes, the normalization (the file's, or one the
   caller states: never a silent default), the class count against the dataset's, and a strict load.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from acdistill.data import DATASETS
from acdistill.errors import AcdistillError
from acdistill.models import ImageClassifier, create_model, function_kwargs
from acdistill.models.base import channel_values
from acdistill.registry import Registry
from acdistill.serialization import read_torch_file

State = dict[str, torch.Tensor]
# What a caller may say of the normalization: the dataset's statistics, none (inputs in [0, 1]), or (mean, std);
# `parse_normalize` also takes the "MEAN/STD" string of the command line and a {mean, std} mapping.
Normalize = Literal["dataset", "none"] | tuple[Sequence[float], Sequence[float]] | str | dict | None

CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "last")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
# (mean key, std key, who stores the input normalization under those names)
CARRIED_NORMALIZATION = (
    ("normalizer.new_mean", "normalizer.new_std", "MadryLab robustness normalizer"),
    ("mu", "sigma", "RobustBench mu/sigma"),
    ("normalize.mean", "normalize.std", "acdistill normalize"),
)


@dataclass(frozen=True)
class Format:
    """A released layout: which key set it has, what it maps to, and the normalization its project feeds it."""

    name: str
    source: str
    normalization_hint: str
    fits: Callable[[set[str]], bool]
    convert: Callable[[State], tuple[str, dict[str, Any], State]]  # -> (arch, builder kwargs, acdistill-named state)


FORMATS: Registry[Format] = Registry("checkpoint format")


@dataclass
class RawCheckpoint:
    path: Path
    state: State
    container: str  # how the state dict was reached, e.g. "['model'], prefix 'module.'"; "" for a bare one
    carried: tuple[list[float], list[float], str] | None  # (mean, std, whose buffers) found in the file


@dataclass
class Released:
    model: ImageClassifier
    format: str
    container: str
    normalization: str  # where the model's normalization came from


def _rename(state: State, rules: Sequence[tuple[str, str | Callable[[re.Match], str] | None]]) -> State:
    """Each key through the first rule whose regex matches it whole: a replacement (a template or a function of
    the match), or None to drop the key. A key no rule matches is kept, so the strict load names it."""
    out: State = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            match = re.fullmatch(pattern, key)
            if match:
                if replacement is not None:
                    out[replacement(match) if callable(replacement) else match.expand(replacement)] = value
                break
        else:
            out[key] = value
    return out


def _blocks_per_stage(keys: Iterable[str], pattern: str) -> list[int]:
    """[number of blocks of stage 1, of stage 2, ...] from keys whose prefix `pattern` captures (stage, index)."""
    count: dict[int, int] = {}
    for key in keys:
        match = re.match(pattern, key)
        if match:
            stage, index = int(match[1]), int(match[2])
            count[stage] = max(count.get(stage, 0), index + 1)
    return [count[s] for s in sorted(count)]


def _no_arch(what: str, blocks: list[int]) -> AcdistillError:
    return AcdistillError(f"a {what} with {blocks} blocks per stage is not an architecture acdistill has")


def _restaged(
    state: State,
    block: str,
    blocks: list[int],
    dropped: str,
    renames: list[tuple[str, str]],
    in_block: Callable[[str], str] = lambda rest: rest,
) -> State:
    """`state` of a layout that numbers its blocks by stage, from 1, in acdistill's key names. A key of a block
    (`block`: the regex of its stage and index, as `_blocks_per_stage` takes it; `blocks`: how many each stage has)
    moves to acdistill's flat `body.layers.<i>`, the rest of its name renamed by `in_block`. Of the other keys,
    those that `dropped` matches are left out and the others renamed by the (pattern, replacement) pairs
    `renames`."""
    offsets = [sum(blocks[:i]) for i in range(len(blocks))]
    staged = {
        f"body.layers.{offsets[int(m[1]) - 1] + int(m[2])}.{in_block(m[3])}": v
        for k, v in state.items()
        if (m := re.fullmatch(f"{block}(.*)", k))
    }
    return _rename({k: v for k, v in state.items() if not re.match(dropped, k)}, renames) | staged


def _trades_wrn(state: State) -> tuple[str, dict, State]:
    block = r"block(\d)\.layer\.(\d+)\."
    blocks = _blocks_per_stage(state, block)
    if len(blocks) != 3 or len(set(blocks)) != 1:
        raise _no_arch("WideResNet", blocks)
    width, rest = divmod(state["block1.layer.0.conv1.weight"].shape[0], 16)
    if rest:
        raise AcdistillError("a WideResNet whose first group is not 16 x k channels wide is not a WRN-d-k")
    # TRADES' class builds a `sub_block1` that its forward never uses.
    renames = [(r"conv1\.(.*)", r"body.conv1.\1"), (r"bn1\.(.*)", r"body.bn.\1"), (r"fc\.(.*)", r"linear.\1")]
    renamed = _restaged(
        state, block, blocks, r"(sub_)?block\d\.", renames, lambda rest: rest.replace("convShortcut", "shortcut")
    )
    return f"wrn_{6 * blocks[0] + 4}_{width}", {}, renamed


# The staged blocks of kuangliu's ResNets and of the PreActResNets derived from them.
LAYER_BLOCK = r"layer(\d)\.(\d+)\."


def _kuangliu_resnet(state: State) -> tuple[str, dict, State]:
    blocks = _blocks_per_stage(state, LAYER_BLOCK)
    bottleneck = "layer1.0.conv3.weight" in state
    arch = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34", (True, (3, 4, 6, 3)): "resnet50"}.get(
        (bottleneck, tuple(blocks))
    )
    if arch is None:
        raise _no_arch("bottleneck ResNet" if bottleneck else "ResNet", blocks)
    stem = [(r"conv1\.(.*)", r"body.stem.0.\1"), (r"bn1\.(.*)", r"body.stem.1.\1"), (r"linear\.(.*)", r"linear.\1")]
    return arch, {}, _restaged(state, LAYER_BLOCK, blocks, r"layer\d\.", stem)


def _kuangliu_mobilenetv2(state: State) -> tuple[str, dict, State]:
    return "mobilenet_v2", {}, _rename(state, [(r"linear\.(.*)", r"linear.\1"), (r"(.*)", r"body.\1")])


def _preact(shortcut: str) -> Callable[[State], tuple[str, dict, State]]:
    def convert(state: State) -> tuple[str, dict, State]:
        blocks = _blocks_per_stage(state, LAYER_BLOCK)
        if blocks != [2, 2, 2, 2]:
            raise _no_arch("PreActResNet", blocks)
        stem = [(r"conv1\.(.*)", r"body.stem.0.\1"), (r"bn\.(.*)", r"body.bn.\1"), (r"linear\.(.*)", r"linear.\1")]
        # The reference wraps the projection conv in a Sequential ('shortcut.0'); acdistill's is the bare conv.
        renamed = _restaged(
            state, LAYER_BLOCK, blocks, r"layer\d\.", stem, lambda rest: rest.replace("shortcut.0.", "shortcut.")
        )
        return "preact_resnet18", {"shortcut": shortcut, "final_bn": "bn.weight" in state}, renamed

    return convert


def _deepmind(activation: str) -> Callable[[State], tuple[str, dict, State]]:
    def convert(state: State) -> tuple[str, dict, State]:
        if "init_conv.weight" in state:
            blocks = _blocks_per_stage(state, r"layer\.(\d)\.block\.(\d+)\.")
            if len(blocks) != 3 or len(set(blocks)) != 1:
                raise _no_arch("DeepMind WideResNet", blocks)
            arch = f"dm_wrn_{6 * blocks[0] + 4}_{state['layer.0.block.0.conv_0.weight'].shape[0] // 16}"
        else:
            blocks = _blocks_per_stage(state, r"layer_(\d)\.(\d+)\.")
            depth = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}.get(tuple(blocks))
            if depth is None:
                raise _no_arch("DeepMind PreActResNet", blocks)
            arch = f"dm_preact_resnet{depth}"
        # acdistill's DeepMind networks keep the reference's module names.
        return (
            arch,
            {"activation": activation},
            _rename(state, [(r"logits\.(.*)", r"linear.\1"), (r"(.*)", r"body.\1")]),
        )

    return convert


def _has(*keys: str) -> Callable[[set[str]], bool]:
    return lambda present: set(keys) <= present


def _preact_layout(keys: set[str]) -> bool:
    return _has("conv1.weight", "layer1.0.bn1.weight", "layer1.0.conv1.weight", "linear.weight")(keys) and (
        "bn1.weight" not in keys
    )


def _deepmind_layout(keys: set[str]) -> bool:
    return "logits.weight" in keys and ("init_conv.weight" in keys or "conv_2d.weight" in keys)


def register_format(fmt: Format) -> Format:
    """Add a released checkpoint layout: `teacher.format: <fmt.name>` and automatic detection then read it."""
    return FORMATS.register(fmt.name)(fmt)


OWN = "acdistill"
register_format(
    Format(
        OWN,
        "acdistill's own key names (a bare state dict; give its architecture)",
        "acdistill's state dicts carry their normalize buffers",
        lambda keys: "linear.weight" in keys and any(k.startswith("body.") for k in keys),
        lambda state: ("", {}, state),
    )
)
register_format(
    Format(
        "trades-wrn",
        "WideResNet of TRADES, ARD, RSLAD and RobustBench's WideResNet (block1.layer.0...)",
        "TRADES, ARD and RSLAD feed [0, 1] inputs: none",
        _has("conv1.weight", "block1.layer.0.conv1.weight", "fc.weight"),
        _trades_wrn,
    )
)
register_format(
    Format(
        "kuangliu-resnet",
        "ResNet-18/34/50 of kuangliu/pytorch-cifar: RSLAD and ARD students, MadryLab robustness, RobustBench's ResNet",
        "RSLAD and ARD feed [0, 1] inputs: none",
        _has("conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "linear.weight"),
        _kuangliu_resnet,
    )
)
register_format(
    Format(
        "kuangliu-mobilenetv2",
        "MobileNetV2 of kuangliu/pytorch-cifar (RSLAD and ARD students)",
        "RSLAD and ARD feed [0, 1] inputs: none",
        _has("conv1.weight", "bn1.weight", "layers.0.conv1.weight", "conv2.weight", "linear.weight"),
        _kuangliu_mobilenetv2,
    )
)
register_format(
    Format(
        "kuangliu-preact",
        "PreActResNet-18 whose projection shortcut reads the pre-activated input "
        "(kuangliu/pytorch-cifar; RobustBench's PreActBlockV2 and out_shortcut=True, e.g. CIFAR-100 "
        "Rice2020Overfitting)",
        "as its training script normalized",
        _preact_layout,
        _preact("preact"),
    )
)
register_format(
    Format(
        "fast-adversarial-preact",
        "PreActResNet-18 whose projection shortcut reads the raw input "
        "(locuslab/fast_adversarial; RobustBench's PreActBlock, e.g. Wong2020Fast)",
        "fast_adversarial normalizes outside the network with CIFAR-10's statistics: dataset",
        _preact_layout,
        _preact("raw"),
    )
)
register_format(
    Format(
        "deepmind",
        "DeepMind's WideResNet / PreActResNet with Swish (SiLU) and TF padding (Gowal 2020, "
        "Rebuffi 2021; RSLAD's WRN-70-16 teacher)",
        "DeepMind's networks normalize with the training set's statistics (not stored in the file): dataset",
        _deepmind_layout,
        _deepmind("silu"),
    )
)
register_format(
    Format(
        "deepmind-relu",
        "as deepmind, with ReLU activations",
        "as deepmind: dataset",
        _deepmind_layout,
        _deepmind("relu"),
    )
)
AUTO = "auto"


def format_names() -> list[str]:
    return [AUTO, *FORMATS.names()]


def _unwrap(obj: Any, key: str | None, path: Path) -> tuple[State, list[str]]:
    """The state dict inside a checkpoint container, and the container keys that led to it."""
    steps: list[str] = []

    def is_state(x: Any) -> bool:
        return isinstance(x, dict) and bool(x) and all(isinstance(v, torch.Tensor) for v in x.values())

    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            held = sorted(k for k, v in obj.items() if isinstance(v, dict)) if isinstance(obj, dict) else []
            raise AcdistillError(f"{path}: no entry '{key}' (dict entries: {', '.join(held) or 'none'})")
        obj, steps = obj[key], [key]
    while not is_state(obj) and isinstance(obj, dict) and len(steps) < 3:
        # RobustBench's {'last', 'best'} files: its loader takes 'last', and so does acdistill unless told otherwise
        step = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if step is None:
            break
        obj = obj[step]
        steps.append(step)
    if not is_state(obj):
        raise AcdistillError(
            f"{path}: not a state dict of tensors, nor a known container of one ({', '.join(CONTAINER_KEYS)})"
        )
    return obj, steps


def read_state_dict(path: str | Path, checkpoint_key: str | None = None) -> tuple[State, str]:
    """The tensors of a .safetensors file or a PyTorch file (weights_only), unwrapped from their container and
    stripped of wrapper prefixes to a fixed point; and a description of what was unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise AcdistillError(f"model file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            obj: Any = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise AcdistillError(f"{path}: corrupted safetensors file ({e})") from None
    else:
        obj = read_torch_file(path)
    state, steps = _unwrap(obj, checkpoint_key, path)
    stripped = []
    while (prefix := next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)) is not None:
        state = {k[len(prefix) :]: v for k, v in state.items()}
        stripped.append(prefix)
    parts = ([f"entry {'/'.join(repr(s) for s in steps)}"] if steps else []) + (
        [f"prefix {''.join(stripped)!r} stripped"] if stripped else []
    )
    return dict(state), ", ".join(parts)


def _madrylab(state: State) -> State | None:
    """MadryLab's AttackerModel holds the network under 'model.' and again under 'attacker.model.', beside its
    normalizer: the network alone (normalizer kept), or None for any other layout."""
    if "normalizer.new_mean" not in state or not any(k.startswith("model.") for k in state):
        return None
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith(("model.", "normalizer."))}


def read_released(path: str | Path, checkpoint_key: str | None = None) -> RawCheckpoint:
    """Step 1 (see the module docstring)."""
    state, container = read_state_dict(path, checkpoint_key)
    inner = _madrylab(state)
    if inner is not None:
        state, container = inner, ", ".join(filter(None, [container, "MadryLab AttackerModel"]))
    carried = None
    for mean_key, std_key, whose in CARRIED_NORMALIZATION:
        if mean_key in state and std_key in state:
            carried = (state.pop(mean_key).flatten().tolist(), state.pop(std_key).flatten().tolist(), whose)
            break
    return RawCheckpoint(Path(path), state, container, carried)


def detect(raw: RawCheckpoint, fmt: str = AUTO) -> Format:
    """Step 2: the named format (which must fit the layout), or the one format whose layout fits."""
    keys = set(raw.state)
    fitting = [FORMATS.get(name) for name in FORMATS.names() if FORMATS.get(name).fits(keys)]
    if fmt != AUTO:
        chosen = FORMATS.get(fmt)
        if chosen not in fitting:
            found = f"it looks like {' or '.join(f.name for f in fitting)}" if fitting else "no known layout fits"
            raise AcdistillError(f"{raw.path}: not in the {fmt} layout ({found})")
        return chosen
    if not fitting:
        first = ", ".join(sorted(keys)[:4])
        raise AcdistillError(
            f"{raw.path}: no known checkpoint layout (keys such as {first}); known formats: "
            f"{', '.join(FORMATS.names())}"
        )
    if len(fitting) > 1:
        raise AcdistillError(
            f"{raw.path}: the layout is ambiguous, the same keys serve "
            f"{' and '.join(f'{f.name} ({f.source})' for f in fitting)}; name the format"
        )
    return fitting[0]


def parse_normalize(value: Any) -> str | tuple[list[float], list[float]] | None:
    """A stated normalization in any of its spellings: None, "none", "dataset", "MEAN/STD" with comma-separated
    values (one or three each), a (mean, std) pair, or {"mean": ..., "std": ...}. Returns None, "none", "dataset"
    or (mean, std) as lists of three finite floats, std positive; anything else is an AcdistillError naming it."""
    if value is None or value in ("none", "dataset"):
        return value
    try:
        if isinstance(value, str):
            mean, sep, std = value.partition("/")
            if not sep:
                raise ValueError("give none, dataset or MEAN/STD, e.g. 0.4914,0.4822,0.4465/0.2471,0.2435,0.2616")
            mean, std = [float(v) for v in mean.split(",")], [float(v) for v in std.split(",")]
        elif isinstance(value, dict) and set(value) == {"mean", "std"}:
            mean, std = value["mean"], value["std"]
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            mean, std = value
        else:
            raise ValueError("give none, dataset, MEAN/STD, (mean, std) or {mean, std}")
        mean, std = channel_values(mean, "mean"), channel_values(std, "std")
    except (TypeError, ValueError) as e:
        raise AcdistillError(f"normalize {value!r}: {e}") from None
    if min(std) <= 0:
        raise AcdistillError(f"normalize {value!r}: std must be positive")
    return mean, std


def normalization_values(normalize: Any, dataset: str | None) -> tuple[list[float], list[float]] | None:
    """(mean, std) lists of a stated normalization (see `parse_normalize`); None for None."""
    normalize = parse_normalize(normalize)
    if normalize is None or isinstance(normalize, tuple):
        return normalize
    if normalize == "none":
        return [0.0] * 3, [1.0] * 3
    if dataset is None:
        raise AcdistillError("normalize 'dataset' needs the dataset")
    spec = DATASETS.get(dataset)
    return channel_values(spec.mean, "mean"), channel_values(spec.std, "std")


def _describe(values: tuple[list[float], list[float]]) -> str:
    return f"mean {[round(v, 4) for v in values[0]]}, std {[round(v, 4) for v in values[1]]}"


def build(
    raw: RawCheckpoint, fmt: Format, *, arch: str | None = None, normalize: Normalize = None, dataset: str | None = None
) -> Released:
    """Step 3: the model, in eval mode on the CPU.

    arch: the architecture of a state dict in acdistill's layout (required there); for a released layout, which
    names its own architecture, a check. normalize: required unless the file carries its normalization, and then
    it must agree. dataset: its class count is checked against the file's head, and 'dataset' normalization uses
    its statistics."""
    inferred, kwargs, state = fmt.convert(raw.state)
    if fmt.name == OWN:
        if arch is None:
            raise AcdistillError(
                f"{raw.path}: no sidecar names the architecture of this state dict in acdistill's "
                "layout; give it (arch)"
            )
        hidden = function_kwargs(arch)
        if hidden:
            raise AcdistillError(
                f"{raw.path}: a bare state dict cannot say the {' or '.join(hidden)} of a {arch}; "
                "load it with its sidecar, or in its released format"
            )
        inferred = arch
    elif arch is not None and arch != inferred:
        raise AcdistillError(f"{raw.path}: this {fmt.name} file holds a {inferred}, not a {arch}")
    head = state.get("linear.weight")
    if head is None:
        raise AcdistillError(f"{raw.path}: no classifier head (linear.weight) after mapping the {fmt.name} layout")
    num_classes = head.shape[0]
    if dataset is not None and num_classes != DATASETS.get(dataset).num_classes:
        raise AcdistillError(
            f"{raw.path}: the file's head has {num_classes} classes but {dataset} has "
            f"{DATASETS.get(dataset).num_classes}"
        )
    requested = normalization_values(normalize, dataset)
    if raw.carried is not None:
        mean, std, whose = raw.carried
        if requested is not None and not (
            torch.allclose(torch.tensor(requested[0]), torch.tensor(mean), atol=1e-6)
            and torch.allclose(torch.tensor(requested[1]), torch.tensor(std), atol=1e-6)
        ):
            raise AcdistillError(
                f"{raw.path}: the file carries its normalization ({_describe((mean, std))}, "
                f"{whose}), not {_describe(requested)}; leave normalize unset"
            )
        values, origin = (mean, std), f"the file's {whose} buffers"
    elif requested is None:
        raise AcdistillError(
            f"{raw.path}: {fmt.name} weights do not record how their inputs were normalized; give "
            f"normalize: none, dataset or mean/std values ({fmt.normalization_hint})"
        )
    else:
        values, origin = requested, f"given ({normalize if normalize in ('none', 'dataset') else 'mean/std'})"
    model = create_model(inferred, num_classes=num_classes, mean=values[0], std=values[1], **kwargs)
    model.load_weights(state, raw.path)
    return Released(model.eval(), fmt.name, raw.container, f"{_describe(values)} from {origin}")


def open_released(
    path: str | Path,
    *,
    format: str = AUTO,
    arch: str | None = None,
    normalize: Normalize = None,
    dataset: str | None = None,
    checkpoint_key: str | None = None,
) -> Released:
    """read_released, detect and build in one call (see each)."""
    raw = read_released(path, checkpoint_key)
    return build(raw, detect(raw, format), arch=arch, normalize=normalize, dataset=dataset)
