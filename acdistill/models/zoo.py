"""RobustBench model-zoo entries as acdistill models (`robustbench:<name>`), built by robustbench's own code.

robustbench (the optional extra `pip install acdistill[robustbench]`) is imported only when a zoo model is named.
Its package imports `autoattack`, the module name of the AutoAttack code on GitHub; the same code is published on
PyPI as `pyautoattack`. When no `autoattack` module is installed, `import_robustbench` registers `pyautoattack`
under that name first, so robustbench's imports resolve to the PyPI package.

A zoo network is split into the `features` / `head` of every acdistill model at its last linear layer: that layer
becomes the head and is replaced by the identity inside the network, whose output is then the features. The split
is checked on a probe batch, so an entry whose output is not a linear layer of its features (an ensemble that
averages probabilities, a model that post-processes its logits) is refused rather than distilled wrongly.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from acdistill.data import DATASETS
from acdistill.errors import AcdistillError, close_names
from acdistill.serialization import numpy_metadata_allowed

PREFIX = "robustbench:"
THREAT_MODELS = ("Linf", "L2", "corruptions")


def import_robustbench() -> ModuleType:
    """The robustbench package, with its `autoattack` import served by `pyautoattack` (see the module docstring).
    Raises AcdistillError with the install command when it is missing or broken."""
    if importlib.util.find_spec("robustbench") is None:
        raise AcdistillError("RobustBench models need the robustbench extra: pip install 'acdistill[robustbench]'")
    if importlib.util.find_spec("autoattack") is None:
        import pyautoattack
        import pyautoattack.state

        sys.modules["autoattack"] = pyautoattack
        sys.modules["autoattack.state"] = pyautoattack.state
    try:
        with warnings.catch_warnings():  # its architectures use torch APIs that torch now flags as deprecated
            warnings.simplefilter("ignore")
            import robustbench
            import robustbench.utils
    except ModuleNotFoundError as e:  # e.g. pkg_resources, which setuptools >= 81 no longer ships
        raise AcdistillError(
            f"robustbench cannot be imported ({e}); reinstall the extra: pip install 'acdistill[robustbench]'"
        ) from None
    if not hasattr(robustbench, "benchmark"):
        # torchattacks' wheel carries an old copy of robustbench's modules; installed after robustbench, it
        # overwrites them
        raise AcdistillError(
            "the installed robustbench modules are an old copy (torchattacks bundles one); "
            "reinstall them: pip install --force-reinstall --no-deps robustbench==1.1.1"
        )
    return robustbench


def ranked_datasets() -> list[str]:
    """The datasets whose registration names them in RobustBench's zoo (`DatasetSpec.robustbench`)."""
    return [name for name in DATASETS.names() if DATASETS.get(name).robustbench]


def robustbench_dataset(dataset: str) -> str:
    """RobustBench's name of an acdistill dataset; an AcdistillError for one the zoo does not rank."""
    ranked = DATASETS.get(dataset).robustbench
    if ranked is None:
        raise AcdistillError(
            f"RobustBench ranks no {dataset} models; data.dataset must be one of {', '.join(ranked_datasets())}"
        )
    return ranked


def zoo_entries(dataset: str, threat_model: str) -> dict[str, dict]:
    """robustbench's entries for one dataset and threat model: name -> {'model': builder, 'gdrive_id': ...}."""
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    ranked = robustbench_dataset(dataset)
    if threat_model not in THREAT_MODELS:
        raise AcdistillError(
            f"unknown RobustBench threat model '{threat_model}'; choose from: {', '.join(THREAT_MODELS)}"
        )
    return model_dicts[BenchmarkDataset(ranked)].get(ThreatModel(threat_model), {})


def zoo_entry(name: str, dataset: str, threat_model: str) -> dict:
    """The entry of a single model with downloadable weights; anything else is an AcdistillError of one line:
    an unknown name (with close names, or where else the name exists), a hub-only entry, or an ensemble."""
    entries = zoo_entries(dataset, threat_model)
    if name not in entries:
        elsewhere = [
            f"{d} {t}"
            for d in ranked_datasets()
            for t in THREAT_MODELS
            if (d, t) != (dataset, threat_model) and name in zoo_entries(d, t)
        ]
        close = close_names(name, list(entries))
        hint = (
            f"; it is a {' and '.join(elsewhere)} model"
            if elsewhere
            else f"; did you mean {', '.join(close)}?"
            if close
            else ""
        )
        raise AcdistillError(f"unknown RobustBench model '{name}' for {dataset} {threat_model}{hint}")
    entry = entries[name]
    import timm

    if timm.is_model(f"{name.lower().replace('-', '_')}_{dataset}_{threat_model.lower()}"):
        raise AcdistillError(
            f"RobustBench model '{name}' is served from the Hugging Face hub through timm, not as a "
            "file acdistill can check; choose another entry"
        )
    if entry["gdrive_id"] is None:
        raise AcdistillError(f"RobustBench model '{name}' has no downloadable weights")
    if isinstance(entry["gdrive_id"], list):
        raise AcdistillError(
            f"RobustBench model '{name}' is an ensemble of {len(entry['gdrive_id'])} networks, "
            "not a single logit model; choose another entry"
        )
    return entry


def load_zoo_network(name: str, dataset: str, threat_model: str, model_dir: str | Path) -> nn.Module:
    """The entry's network with the weights file already at `model_dir`/<dataset>/<threat_model>/<name>.pt, loaded
    by robustbench's `load_model` with its per-entry loading fixes (container keys, prefixes, known mismatches).
    torch.load inside it runs with torch's default weights_only=True; numpy scalars in a checkpoint's metadata are
    allowed, as for every file acdistill reads."""
    zoo_entry(name, dataset, threat_model)
    rb = import_robustbench()
    dataset = robustbench_dataset(dataset)
    try:
        with numpy_metadata_allowed(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return rb.utils.load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat_model)
    except (RuntimeError, KeyError) as e:  # load_state_dict's mismatch report runs to dozens of lines
        first = " ".join(str(e).split())[:200]
        raise AcdistillError(
            f"the weights in {Path(model_dir) / dataset / threat_model / (name + '.pt')} do not fit "
            f"RobustBench's {name} ({first})"
        ) from None


def split_head(net: nn.Module, num_classes: int, name: str) -> tuple[nn.Module, nn.Linear]:
    """Split `net` in place into (body, head) at its last nn.Linear, and check on a probe batch that
    head(body(x)) is net(x) and that body(x) is [B, head.in_features]."""
    linears = [(path, m) for path, m in net.named_modules() if isinstance(m, nn.Linear)]
    not_logits = AcdistillError(
        f"RobustBench model '{name}' is not a single logit model (its output is not a linear "
        "layer of its features); choose another entry"
    )
    if not linears or linears[-1][1].out_features != num_classes:
        raise not_logits
    path, head = linears[-1]
    parent_path, _, leaf = path.rpartition(".")
    training = net.training
    net.eval()
    probe = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(probe)
        setattr(net.get_submodule(parent_path), leaf, nn.Identity())
        features = net(probe)
        ok = (
            features.dim() == 2
            and features.shape[1] == head.in_features
            and torch.allclose(head(features), expected, rtol=1e-4, atol=1e-5)
        )
    net.train(training)
    if not ok:
        raise not_logits
    return net, head


def zoo_builder(
    name: str, num_classes: int, dataset: str = "cifar10", threat_model: str = "Linf"
) -> tuple[nn.Module, nn.Linear]:
    """Builder of `robustbench:<name>`: the entry's architecture, untrained, split into body and head. Needs no
    network: robustbench defines every architecture in its package."""
    network = zoo_entry(name, dataset, threat_model)["model"]()
    return split_head(network, num_classes, name)
