"""Released robust checkpoints load exactly: each family's original network, built here from its public definition
(robustbench's package where it has one, otherwise the project's code as published), saved in that project's own
layout, goes through `fetch-teacher` and `acdistill.load_model` and must give the original's logits.

The network is blocked for the whole module: a test that reached it would fail."""

import json
import re
import shutil
import socket
from pathlib import Path

import dill
import pytest
import torch
import torch.nn.functional as F
from conftest import MIRROR, REPO, run
from torch import nn

import acdistill
from acdistill.models.zoo import import_robustbench

rb = import_robustbench()
from robustbench.model_zoo.architectures.dm_wide_resnet import (  # noqa: E402
    CIFAR10_MEAN,
    CIFAR10_STD,
    DMPreActResNet,
    DMWideResNet,
    Swish,
)
from robustbench.model_zoo.architectures.resnet import (  # noqa: E402
    BasicBlock,
    Bottleneck,
    PreActBlock,
    PreActBlockV2,
    PreActResNet,
    ResNet,
)
from robustbench.model_zoo.architectures.wide_resnet import WideResNet  # noqa: E402
from robustbench.model_zoo.cifar10 import Engstrom2019RobustnessNet, Rice2020OverfittingNet  # noqa: E402

MADRY_CIFAR_MEAN, MADRY_CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # robustness/datasets.py


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("the tests block the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    shutil.copy(REPO / "tests" / "tiny_params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACDISTILL_DATA_DIR", str(MIRROR))
    return tmp_path


def with_random_batchnorm(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters, then running statistics measured on random images (so that activations keep
    a sane scale): eval mode then computes a function that depends on every BN buffer."""
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0, 0.2)
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.rand(16, 3, 32, 32))
    return net.eval()


def probe() -> torch.Tensor:
    return torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))


class Normalized(nn.Module):
    """A network fed normalized images by its training script (fast_adversarial, DeepMind's pytorch zoo)."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net, self.mean, self.std = net, torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


class MobileNetV2Block(nn.Module):
    """kuangliu/pytorch-cifar's MobileNetV2 block, as RSLAD and ARD publish it (cifar10_models/mobilenet_v2.py)."""

    def __init__(self, in_planes, out_planes, expansion, stride):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    cfg = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        layers, in_planes = [], 32
        for expansion, out_planes, num_blocks, stride in self.cfg:
            for s in [stride] + [1] * (num_blocks - 1):
                layers.append(MobileNetV2Block(in_planes, out_planes, expansion, s))
                in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.conv2 = nn.Conv2d(320, 1280, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


class InputNormalize(nn.Module):
    """MadryLab robustness/tools/helpers.py: clamp to [0, 1], then normalize with buffers new_mean / new_std."""

    def __init__(self, new_mean, new_std):
        super().__init__()
        self.register_buffer("new_mean", torch.tensor(new_mean)[..., None, None])
        self.register_buffer("new_std", torch.tensor(new_std)[..., None, None])

    def forward(self, x):
        return (torch.clamp(x, 0, 1) - self.new_mean) / self.new_std


class AttackerModel(nn.Module):
    """MadryLab robustness/attacker.py's wrapper, whose state dict its checkpoints hold: the normalizer, the network
    under `model`, and the attacker's own normalizer and reference to the same network."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.normalizer = InputNormalize(mean, std)
        self.model = model
        self.attacker = nn.Module()
        self.attacker.normalize = InputNormalize(mean, std)
        self.attacker.model = model

    def forward(self, x):
        return self.model(self.normalizer(x))


def save_plain(net, path):
    torch.save(net.state_dict(), path)


def save_legacy_dataparallel(net, path):
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path, _use_new_zipfile_serialization=False)


def save_robustbench(net, path):
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)


def save_ard(net, path):
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict()}, path)


def save_madrylab(net, path):
    """robustness/train.py: `ch.save(sd_info, path, pickle_module=dill)` of a DataParallel AttackerModel."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, 50)
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in net.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "epoch": 150,
            "amp": None,
            "nat_prec1": torch.tensor(87.0),
        },
        path,
        pickle_module=dill,
    )


# id: (build the original network, what it computes on [0, 1] images, how its project saves it, fetch-teacher
# options, the format and architecture expected, and the normalization the sidecar must record)
NONE = ([0.0] * 3, [1.0] * 3)
CIFAR10 = (list(CIFAR10_MEAN), list(CIFAR10_STD))
FAMILIES = {
    "trades-wrn (TRADES, zip file)": (
        lambda: WideResNet(depth=10, widen_factor=2, sub_block1=True),
        None,
        save_plain,
        ["--normalize", "none"],
        "trades-wrn",
        "wrn_10_2",
        NONE,
    ),
    "trades-wrn (legacy file, DataParallel)": (
        lambda: WideResNet(depth=16, widen_factor=1, sub_block1=True),
        None,
        save_legacy_dataparallel,
        ["--normalize", "none"],
        "trades-wrn",
        "wrn_16_1",
        NONE,
    ),
    "trades-wrn without sub_block1 (RobustBench container)": (
        lambda: WideResNet(depth=10, widen_factor=2),
        None,
        save_robustbench,
        ["--normalize", "none"],
        "trades-wrn",
        "wrn_10_2",
        NONE,
    ),
    "RobustBench WRN with mu/sigma (Rice2020Overfitting)": (
        lambda: Rice2020OverfittingNet(depth=10, widen_factor=1),
        None,
        save_robustbench,
        [],
        "trades-wrn",
        "wrn_10_1",
        CIFAR10,
    ),
    "kuangliu ResNet-18 (ARD container)": (
        lambda: ResNet(BasicBlock, [2, 2, 2, 2]),
        None,
        save_ard,
        ["--normalize", "none"],
        "kuangliu-resnet",
        "resnet18",
        NONE,
    ),
    "kuangliu MobileNetV2 (RSLAD, DataParallel)": (
        MobileNetV2,
        None,
        save_legacy_dataparallel,
        ["--normalize", "none"],
        "kuangliu-mobilenetv2",
        "mobilenet_v2",
        NONE,
    ),
    "MadryLab robustness ResNet-50 (dill)": (
        lambda: AttackerModel(ResNet(Bottleneck, [3, 4, 6, 3]), MADRY_CIFAR_MEAN, MADRY_CIFAR_STD),
        None,
        save_madrylab,
        [],
        "kuangliu-resnet",
        "resnet50",
        (list(MADRY_CIFAR_MEAN), list(MADRY_CIFAR_STD)),
    ),
    "RobustBench Engstrom2019Robustness ResNet-50": (
        Engstrom2019RobustnessNet,
        None,
        save_robustbench,
        [],
        "kuangliu-resnet",
        "resnet50",
        (list(MADRY_CIFAR_MEAN), list(MADRY_CIFAR_STD)),
    ),
    "fast_adversarial PreActResNet-18": (
        lambda: PreActResNet(PreActBlock, [2, 2, 2, 2], bn_before_fc=True),
        CIFAR10,
        save_plain,
        ["--format", "fast-adversarial-preact", "--normalize", "dataset"],
        "fast-adversarial-preact",
        "preact_resnet18",
        CIFAR10,
    ),
    "RobustBench Wong2020Fast PreActResNet-18": (
        rb.model_zoo.cifar10.Wong2020FastNet,
        None,
        save_robustbench,
        ["--format", "fast-adversarial-preact"],
        "fast-adversarial-preact",
        "preact_resnet18",
        CIFAR10,
    ),
    "kuangliu PreActResNet-18": (
        lambda: PreActResNet(PreActBlockV2, [2, 2, 2, 2]),
        None,
        save_plain,
        ["--format", "kuangliu-preact", "--normalize", "none"],
        "kuangliu-preact",
        "preact_resnet18",
        NONE,
    ),
    "DeepMind WRN, Swish (Gowal 2020, Rebuffi 2021)": (
        lambda: DMWideResNet(depth=10, width=2, activation_fn=Swish, mean=(0.0,) * 3, std=(1.0,) * 3),
        CIFAR10,
        save_plain,
        ["--format", "deepmind", "--normalize", "dataset"],
        "deepmind",
        "dm_wrn_10_2",
        CIFAR10,
    ),
    "DeepMind WRN, ReLU": (
        lambda: DMWideResNet(depth=10, width=1, mean=(0.0,) * 3, std=(1.0,) * 3),
        CIFAR10,
        save_plain,
        ["--format", "deepmind-relu", "--normalize", "dataset"],
        "deepmind-relu",
        "dm_wrn_10_1",
        CIFAR10,
    ),
    "DeepMind PreActResNet-18, Swish": (
        lambda: DMPreActResNet(depth=18, activation_fn=Swish, mean=(0.0,) * 3, std=(1.0,) * 3),
        CIFAR10,
        save_robustbench,
        ["--format", "deepmind", "--normalize", "dataset"],
        "deepmind",
        "dm_preact_resnet18",
        CIFAR10,
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_released_family_gives_the_original_logits(workdir, family, record_property):
    build, normalized_by, save, options, fmt, arch, normalization = FAMILIES[family]
    torch.manual_seed(0)
    released = build()
    # the function the project computes on [0, 1] images: some normalize them outside the network
    original = with_random_batchnorm(released if normalized_by is None else Normalized(released, *normalized_by))
    save(released, workdir / "w.pt")
    out = run(
        "fetch-teacher",
        "--source",
        "file",
        "--path",
        "w.pt",
        *options,
        "--out",
        "models/t.safetensors",
        "--metrics",
        "metrics/t.json",
    ).output
    assert f"({fmt}, {arch})" in out
    teacher = acdistill.load_model(workdir / "models/t.safetensors")
    x = probe()
    with torch.no_grad():
        expected = original(x)
        diff = (teacher(x) - expected).abs().max().item()
        record_property("max_abs_dlogit", diff)
        record_property("mean_abs_logit", expected.abs().mean().item())
        assert diff <= 1e-4
        assert expected.abs().mean() > 1e-2  # a function worth comparing, not a constant
    side = json.loads((workdir / "models/t.json").read_text())
    assert side["arch"] == arch and side["info"]["format"] == fmt
    assert side["mean"] == pytest.approx(normalization[0]) and side["std"] == pytest.approx(normalization[1])
    assert side["info"]["file_sha256"] == acdistill.checkpoint.sha256_file(workdir / "w.pt")
    # the Python API reads the same file without a sidecar
    direct = acdistill.load_model(
        workdir / "w.pt",
        format=fmt,
        normalize=None if "--normalize" not in options else options[options.index("--normalize") + 1],
        dataset="cifar10",
    )
    with torch.no_grad():
        assert torch.allclose(direct(x), teacher(x), atol=1e-6)


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def refused(workdir: Path, *args: str) -> str:
    """fetch-teacher fails with one line and exit code 2, and writes nothing, not even a directory."""
    before = set(workdir.rglob("*"))
    output = run(
        "fetch-teacher", *args, "--out", "models/t.safetensors", "--metrics", "metrics/t.json", ok=False
    ).output
    assert set(workdir.rglob("*")) == before
    return output


@pytest.mark.parametrize(
    "fmt, other, build",
    [
        ("kuangliu-preact", "fast-adversarial-preact", lambda: PreActResNet(PreActBlockV2, [2, 2, 2, 2])),
        (
            "deepmind",
            "deepmind-relu",
            lambda: DMWideResNet(depth=10, width=1, activation_fn=Swish, mean=(0.0,) * 3, std=(1.0,) * 3),
        ),
    ],
)
def test_look_alike_layouts_never_load_silently(workdir, fmt, other, build):
    """Two projects save the same keys and shapes for different functions: the layout alone cannot tell them
    apart, so auto detection refuses, and each named format computes its own project's function."""
    torch.manual_seed(0)
    original = with_random_batchnorm(build())
    save_plain(original, workdir / "w.pt")
    message = refused(workdir, "--source", "file", "--path", "w.pt", "--normalize", "none")
    assert "ambiguous" in message and fmt in message and other in message
    x = probe()
    with torch.no_grad():
        right = acdistill.load_model(workdir / "w.pt", format=fmt, normalize="none")(x)
        look_alike = acdistill.load_model(workdir / "w.pt", format=other, normalize="none")(x)
        assert (right - original(x)).abs().max() <= 1e-4
        assert (look_alike - original(x)).abs().max() > 1e-2


def test_weights_that_record_no_normalization_need_one_stated(workdir):
    """TRADES trains on [0, 1] inputs: loading its WRN with the dataset's statistics by default gave wrong logits."""
    save_plain(with_random_batchnorm(WideResNet(depth=10, widen_factor=1, sub_block1=True)), workdir / "w.pt")
    message = refused(workdir, "--source", "file", "--path", "w.pt")
    assert "do not record how their inputs were normalized" in message and "none" in message


def test_a_stated_normalization_must_agree_with_the_files_own(workdir):
    save_madrylab(AttackerModel(ResNet(BasicBlock, [2, 2, 2, 2]), MADRY_CIFAR_MEAN, MADRY_CIFAR_STD), workdir / "w.pt")
    message = refused(workdir, "--source", "file", "--path", "w.pt", "--normalize", "dataset")
    assert "carries its normalization" in message and "MadryLab" in message


def test_container_entry_last_by_default_and_best_on_request(workdir):
    """RobustBench's {'last', 'best'} files (Andriushchenko2020Understanding): its loader reads 'last'."""
    torch.manual_seed(0)
    last, best = (with_random_batchnorm(WideResNet(depth=10, widen_factor=1), seed) for seed in (1, 2))
    torch.save({"last": last.state_dict(), "best": best.state_dict()}, workdir / "w.pt")
    x = probe()
    for key, net in ((None, last), ("best", best)):
        model = acdistill.load_model(workdir / "w.pt", normalize="none", checkpoint_key=key)
        with torch.no_grad():
            assert (model(x) - net(x)).abs().max() <= 1e-4


def test_compiled_ddp_prefixes_and_numpy_metadata_load(workdir):
    """torch.compile(DDP(model)) keys are `_orig_mod.module.*`; training scripts store numpy scalars beside."""
    import numpy as np

    net = with_random_batchnorm(WideResNet(depth=10, widen_factor=1))
    torch.save(
        {
            "state_dict": {f"_orig_mod.module.{k}": v for k, v in net.state_dict().items()},
            "best_acc": np.float64(0.56),
            "dtype": np.dtype("float32"),
            "history": np.arange(3),
        },
        workdir / "w.pt",
    )
    with torch.no_grad():
        assert (acdistill.load_model(workdir / "w.pt", normalize="none")(probe()) - net(probe())).abs().max() <= 1e-4


@pytest.mark.parametrize("payload, named", [("namespace", "argparse.Namespace"), ("code", "io.open")])
def test_other_pickled_objects_are_refused_by_name_and_never_built(workdir, payload, named):
    import argparse

    from test_checkpoint import Payload

    marker = workdir / "payload-ran"
    extra = argparse.Namespace(lr=0.1) if payload == "namespace" else Payload(marker)
    torch.save({"state_dict": WideResNet(depth=10, widen_factor=1).state_dict(), "args": extra}, workdir / "w.pt")
    message = refused(workdir, "--source", "file", "--path", "w.pt", "--normalize", "none")
    assert named in message and "refused" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["-S", "teacher.format=trades"],
            "unknown format 'trades'; did you mean trades-wrn? choose from: auto, acdistill,",
        ),
        (["--format", "nope"], "unknown format 'nope'"),
        (["--normalize", "0.5,0.5"], "--normalize '0.5,0.5': give none, dataset or MEAN/STD"),
        (["--path", "missing.pt"], "model file not found: missing.pt"),
    ],
)
def test_bad_file_options(workdir, args, message):
    save_plain(WideResNet(depth=10, widen_factor=1), workdir / "w.pt")
    assert message in refused(workdir, "--source", "file", "--path", "w.pt", *args)


def test_a_class_count_other_than_the_datasets_is_refused(workdir):
    save_plain(WideResNet(depth=10, widen_factor=1, num_classes=100), workdir / "w.pt")
    message = refused(workdir, "--source", "file", "--path", "w.pt", "--normalize", "none")
    assert "the file's head has 100 classes but cifar10 has 10" in message


def test_an_unknown_layout_names_its_keys(workdir):
    torch.save({"encoder.weight": torch.zeros(3), "decoder.weight": torch.zeros(3)}, workdir / "w.pt")
    assert "no known checkpoint layout (keys such as decoder.weight" in refused(
        workdir, "--source", "file", "--path", "w.pt"
    )


# RobustBench by name. The zoo's weights are not reachable here, so each test puts a file where robustbench keeps
# it: the entry's own architecture with random weights, saved as RobustBench's files are ({'state_dict'}, 'module.').
ZOO_NAME = "Wong2020Fast"  # a PreActResNet-18: the smallest single-network CIFAR-10 L-inf entry


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("robustbench")
    net = rb.model_zoo.cifar10.Wong2020FastNet()
    with_random_batchnorm(net)
    save_robustbench(
        net, (root / "cifar10" / "Linf").mkdir(parents=True) or root / "cifar10" / "Linf" / f"{ZOO_NAME}.pt"
    )
    return root


def zoo(zoo_dir: Path, name: str = ZOO_NAME) -> list[str]:
    return [
        "-S",
        "teacher.source=robustbench",
        "-S",
        f"teacher.robustbench.name={name}",
        "-S",
        f"teacher.robustbench.model_dir={zoo_dir}",
    ]


def test_a_robustbench_teacher_by_name_offline_then_distilled_with_gacd(workdir, zoo_dir):
    out = run("fetch-teacher", *zoo(zoo_dir)).output
    assert f"robustbench:{ZOO_NAME}" in out and "83.34 % stated by its source" in out
    teacher = acdistill.load_model(workdir / "models/teacher.safetensors")  # rebuilt offline from the sidecar
    reference = rb.utils.load_model(ZOO_NAME, model_dir=str(zoo_dir), dataset="cifar10", threat_model="Linf")
    x = probe()
    with torch.no_grad():
        assert torch.allclose(teacher(x), reference(x), atol=1e-5)
        assert torch.allclose(teacher.head(teacher.features(x)), teacher(x), atol=1e-5)
    side = json.loads((workdir / "models/teacher.json").read_text())
    assert side["arch"] == f"robustbench:{ZOO_NAME}" and side["info"]["expected_clean_acc"] == 83.34
    assert side["mean"] == pytest.approx(list(CIFAR10_MEAN)) and side["std"] == pytest.approx(list(CIFAR10_STD))
    assert side["info"]["file_sha256"] == acdistill.checkpoint.sha256_file(zoo_dir / "cifar10/Linf" / f"{ZOO_NAME}.pt")
    run("distill", "--method", "gacd")
    assert json.loads((workdir / "models/student.json").read_text())["info"]["method"] == "gacd"
    metrics = json.loads((workdir / "metrics/teacher.json").read_text())
    assert set(metrics) == {"clean_acc", "expected_clean_acc"}  # the rest is in the sidecar


def test_a_teacher_far_below_its_stated_accuracy_warns_and_strict_refuses(workdir, zoo_dir):
    warned = run("fetch-teacher", *zoo(zoo_dir)).output  # random weights: chance level against 83.34 %
    assert "warning: the teacher's clean accuracy" in warned and "points below the 83.34 %" in warned
    assert "teacher.strict_accuracy" in refused(workdir, *zoo(zoo_dir), "--strict-accuracy", "--force")


@pytest.mark.parametrize(
    "name, message",
    [
        ("Wong2020Fsat", "unknown RobustBench model 'Wong2020Fsat' for cifar10 Linf; did you mean Wong2020Fast?"),
        ("Augustin2020Adversarial_34_10_extra", "it is a cifar10 L2 model"),
        ("Chen2020Adversarial", "is an ensemble of 3 networks, not a single logit model"),
        ("Debenedetti2022Light_XCiT-S12", "is served from the Hugging Face hub through timm"),
    ],
)
def test_zoo_entries_that_cannot_be_used_are_refused(workdir, zoo_dir, name, message):
    assert message in refused(workdir, *zoo(zoo_dir, name))


def test_a_missing_zoo_file_without_network_names_the_expected_path(workdir, tmp_path):
    message = refused(workdir, *zoo(tmp_path / "empty"))
    assert (
        f"{tmp_path / 'empty' / 'cifar10' / 'Linf' / ZOO_NAME}.pt" in message and "could not be downloaded" in message
    )
    assert not (tmp_path / "empty").exists() or not files_under(tmp_path / "empty")


def test_a_download_appears_whole_and_matches_its_sha256(workdir, zoo_dir, tmp_path, monkeypatch):
    source = zoo_dir / "cifar10/Linf" / f"{ZOO_NAME}.pt"
    good = acdistill.checkpoint.sha256_file(source)

    def cut_off(gdrive_id, path):
        Path(path).write_bytes(source.read_bytes()[:1000])
        raise ConnectionError("connection reset")

    def complete(gdrive_id, path):
        shutil.copy(source, path)

    target = tmp_path / "dl"
    monkeypatch.setattr(rb.utils, "download_gdrive_new", cut_off)
    message = refused(workdir, *zoo(target))
    assert "could not be downloaded (ConnectionError)" in message
    assert "https://drive.google.com/uc?id=" in message and f"load_model('{ZOO_NAME}'" in message  # where it comes from
    assert not target.exists()  # nor the directories made for the download
    monkeypatch.setattr(rb.utils, "download_gdrive_new", complete)
    assert "nothing was kept" in refused(workdir, *zoo(target), "--sha256", "0" * 64)
    assert not files_under(target)
    run("fetch-teacher", *zoo(target), "--sha256", good)
    assert files_under(target) == {Path("cifar10/Linf") / f"{ZOO_NAME}.pt"}
    assert json.loads((workdir / "models/teacher.json").read_text())["info"]["file_sha256"] == good


def test_a_zoo_network_whose_output_is_not_a_linear_head_is_refused():
    from acdistill.errors import AcdistillError
    from acdistill.models.zoo import split_head

    class Averaged(nn.Module):  # an ensemble that averages probabilities, as Chen2020Adversarial does
        def __init__(self):
            super().__init__()
            self.features, self.fc = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8)), nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.features(x)).softmax(1)

    with pytest.raises(AcdistillError, match="not a single logit model"):
        split_head(Averaged(), 10, "Averaged")


def test_robustbench_imports_autoattack_as_pyautoattack():
    import sys

    import pyautoattack

    assert sys.modules["autoattack"] is pyautoattack and hasattr(rb, "benchmark")


@pytest.mark.slow
def test_full_size_trades_wrn_34_10(workdir):
    """TRADES' released model_cifar_wrn.pt: the WRN-34-10 teacher of RSLAD and ARD, saved as a plain state dict."""
    original = with_random_batchnorm(WideResNet(depth=34, widen_factor=10, sub_block1=True))
    save_plain(original, workdir / "w.pt")
    run("fetch-teacher", "--source", "file", "--path", "w.pt", "--normalize", "none")
    with torch.no_grad():
        diff = (acdistill.load_model(workdir / "models/teacher.safetensors")(probe()) - original(probe())).abs().max()
    assert diff <= 1e-4


@pytest.mark.slow
def test_full_size_deepmind_wrn_70_16_cifar100(tmp_path):
    """RSLAD's CIFAR-100 teacher, DeepMind's WRN-70-16 (Gowal et al. 2020), which DeepMind's eval.py builds with
    Swish and CIFAR-100's statistics. No CIFAR-100 data here, so through the Python API."""
    from robustbench.model_zoo.architectures.dm_wide_resnet import CIFAR100_MEAN, CIFAR100_STD

    original = with_random_batchnorm(
        DMWideResNet(num_classes=100, depth=70, width=16, activation_fn=Swish, mean=CIFAR100_MEAN, std=CIFAR100_STD)
    )
    save_plain(original, tmp_path / "cifar100_linf_wrn70-16_without.pt")
    model = acdistill.load_model(
        tmp_path / "cifar100_linf_wrn70-16_without.pt", format="deepmind", normalize="dataset", dataset="cifar100"
    )
    assert model.arch == "dm_wrn_70_16"
    assert model.normalization() == (pytest.approx(list(CIFAR100_MEAN)), pytest.approx(list(CIFAR100_STD)))
    with torch.no_grad():
        assert (model(probe()) - original(probe())).abs().max() <= 1e-4


@pytest.mark.slow
def test_zhang2019theoretically_by_name_then_gacd(workdir, tmp_path):
    """The issue's command: the TRADES WRN-34-10 entry by RobustBench name, offline with its file in place."""
    net = with_random_batchnorm(rb.model_zoo.cifar10.linf["Zhang2019Theoretically"]["model"]())
    (tmp_path / "cifar10" / "Linf").mkdir(parents=True)
    save_robustbench(net, tmp_path / "cifar10" / "Linf" / "Zhang2019Theoretically.pt")
    run("fetch-teacher", *zoo(tmp_path, "Zhang2019Theoretically"))
    teacher = acdistill.load_model(workdir / "models/teacher.safetensors")
    with torch.no_grad():
        assert (teacher(probe()) - net(probe())).abs().max() <= 1e-4
    run("distill", "--method", "gacd")


def test_what_a_caller_states_of_an_acdistill_checkpoint_must_agree_with_its_sidecar(workdir):
    """The sidecar records what weights cannot (a DeepMind network's activation): stating another architecture,
    normalization, format or dataset is an error, never a silent rebuild with defaults."""
    original = with_random_batchnorm(DMWideResNet(depth=10, width=1, mean=(0.0,) * 3, std=(1.0,) * 3))
    save_plain(original, workdir / "w.pt")
    run("fetch-teacher", "--source", "file", "--path", "w.pt", "--format", "deepmind-relu", "--normalize", "none")
    path = workdir / "models/teacher.safetensors"
    with torch.no_grad():
        assert (acdistill.load_model(path)(probe()) - original(probe())).abs().max() <= 1e-4
    for stated, message in [
        ({"arch": "dm_wrn_10_2"}, "holds a dm_wrn_10_1 (its sidecar says), not a dm_wrn_10_2"),
        ({"normalize": "dataset"}, "normalizes with mean [0.0, 0.0, 0.0]"),
        ({"format": "deepmind"}, "is an acdistill checkpoint (it has a sidecar), not a deepmind"),
        ({"dataset": "svhn"}, "was trained on cifar10 (its sidecar says), not svhn"),
    ]:
        with pytest.raises(acdistill.errors.AcdistillError, match=re.escape(message)):
            acdistill.load_model(path, **stated)
    assert acdistill.load_model(path, arch="dm_wrn_10_1", normalize="none", dataset="cifar10") is not None
    assert "not a dm_wrn_10_2" in run("attack-eval", "--model", path, "--arch", "dm_wrn_10_2", ok=False).output


def test_a_bare_state_dict_cannot_name_an_architecture_whose_function_it_does_not_record(workdir):
    model = acdistill.create_model("dm_wrn_10_1", activation="relu")
    torch.save(model.state_dict(), workdir / "bare.pt")
    with pytest.raises(acdistill.errors.AcdistillError, match="cannot say the activation of a dm_wrn_10_1"):
        acdistill.load_model(workdir / "bare.pt", arch="dm_wrn_10_1")
    torch.save(acdistill.create_model("resnet20").state_dict(), workdir / "plain.pt")
    assert acdistill.load_model(workdir / "plain.pt", arch="resnet20").arch == "resnet20"


@pytest.mark.parametrize(
    "normalize, message",
    [
        ("nan/1", "mean must be finite numbers"),
        ("0.5/inf", "std must be finite numbers"),
        ("0.5,0.5/0.5", "mean needs 1 or 3 values, got 2"),
        ("0.5/0", "std must be positive"),
        ("0.5", "give none, dataset or MEAN/STD"),
    ],
)
def test_a_bad_normalization_is_one_line_wherever_it_is_given(workdir, normalize, message):
    save_plain(WideResNet(depth=10, widen_factor=1), workdir / "w.pt")
    assert message in refused(workdir, "--source", "file", "--path", "w.pt", "--normalize", normalize)
    assert message in run("attack-eval", "--model", "w.pt", "--normalize", normalize, ok=False).output
    with pytest.raises(acdistill.errors.AcdistillError, match=re.escape(message)):
        acdistill.load_model(workdir / "w.pt", normalize=normalize, dataset="cifar10")


def test_the_python_api_takes_every_spelling_of_a_normalization(workdir):
    net = with_random_batchnorm(WideResNet(depth=10, widen_factor=1))
    save_plain(net, workdir / "w.pt")
    for spelling in ("0.5/0.25", (0.5, 0.25), ([0.5] * 3, [0.25] * 3), {"mean": 0.5, "std": [0.25] * 3}):
        model = acdistill.load_model(workdir / "w.pt", normalize=spelling)
        assert model.normalization() == ([0.5] * 3, [0.25] * 3)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello, not a checkpoint", "corrupted or not a PyTorch file"),
        (None, "not a readable PyTorch file (pickle instruction"),
    ],
)
def test_files_that_are_not_checkpoints_are_one_line(workdir, content, message):
    if content is None:  # a real state dict that torch's weights-only reader cannot read
        torch.save(WideResNet(depth=10, widen_factor=1).state_dict(), workdir / "w.pt", pickle_protocol=4)
    else:
        (workdir / "w.pt").write_bytes(content)
    output = refused(workdir, "--source", "file", "--path", "w.pt", "--normalize", "none")
    assert message in output and "could run code" not in output
    (workdir / "folder.pt").mkdir()
    assert "is a directory" in run("attack-eval", "--model", "folder.pt", "--normalize", "none", ok=False).output


def test_an_imported_teacher_at_chance_level_is_named(workdir):
    save_plain(WideResNet(depth=10, widen_factor=1), workdir / "w.pt")  # untrained: chance
    assert (
        "is near chance (10 %) on cifar10"
        in run("fetch-teacher", "--source", "file", "--path", "w.pt", "--normalize", "none").output
    )


def test_a_zoo_file_of_another_architecture_is_one_line(workdir, tmp_path):
    (tmp_path / "cifar10" / "Linf").mkdir(parents=True)
    save_robustbench(ResNet(BasicBlock, [2, 2, 2, 2]), tmp_path / "cifar10" / "Linf" / "Carmon2019Unlabeled.pt")
    assert "do not fit RobustBench's Carmon2019Unlabeled" in refused(workdir, *zoo(tmp_path, "Carmon2019Unlabeled"))


def test_options_that_do_not_apply_to_a_zoo_teacher_are_refused(workdir, zoo_dir):
    assert "--arch does not apply to source robustbench" in refused(workdir, *zoo(zoo_dir), "--arch", "resnet18")
    assert "'normalize' does not apply to source 'robustbench'" in refused(
        workdir, *zoo(zoo_dir), "--normalize", "none"
    )
