import importlib.util
import json

import pytest
import torch

from acdistill.data import DATASETS
from acdistill.models import ImageClassifier, create_model, list_models
from acdistill.models.zoo import import_robustbench

# parameter counts only; their forward is too slow here
BIG = {"wrn_28_10", "wrn_34_10", "wrn_34_20", "wrn_70_16", "dm_wrn_28_10", "dm_wrn_70_16", "resnet50"}
SMALL = [name for name in list_models() if name not in BIG]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_all_families_registered():
    expected = {
        "resnet20",
        "resnet32",
        "resnet56",
        "resnet18",
        "preact_resnet18",
        "mobilenet_v2",
        "small_cnn",
        "wrn_16_2",
        "wrn_34_2",
        "wrn_34_10",
        "wrn_40_2",
        "wrn_70_16",
    }
    assert expected <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("resnet20", {}, 269_722),  # option-A shortcuts, as in He et al. / akamaster
        ("resnet20", {"shortcut": "B"}, 272_474),  # 1x1 projection shortcuts
        ("resnet18", {}, 11_173_962),
        ("preact_resnet18", {}, 11_171_146),
        ("mobilenet_v2", {}, 2_296_922),
    ],
)
def test_exact_param_counts(name, kwargs, expected):
    assert n_params(create_model(name, num_classes=10, **kwargs)) == expected


@pytest.mark.parametrize("name, expected, rel", [("wrn_34_10", 46.16e6, 0.005), ("wrn_70_16", 266.8e6, 0.01)])
def test_wide_resnet_param_counts(name, expected, rel):
    with torch.device("meta"):  # counts shapes without allocating the weights
        model = create_model(name, num_classes=10)
    assert n_params(model) == pytest.approx(expected, rel=rel)


@pytest.fixture(scope="module")
def rb_architectures():
    """robustbench's own model definitions (the robustbench extra; without it these tests are skipped)."""
    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("robustbench's model definitions need the robustbench extra")
    import_robustbench()  # robustbench imports `autoattack`, which pyautoattack serves
    from robustbench.model_zoo.architectures import dm_wide_resnet, resnet, wide_resnet

    return dm_wide_resnet, resnet, wide_resnet


@pytest.mark.parametrize(
    "name, kwargs, reference",
    [
        ("wrn_28_10", {}, lambda dm, rn, wrn: wrn.WideResNet(depth=28, widen_factor=10)),
        ("wrn_34_20", {}, lambda dm, rn, wrn: wrn.WideResNet(depth=34, widen_factor=20)),
        ("resnet50", {}, lambda dm, rn, wrn: rn.ResNet50()),
        (
            "preact_resnet18",
            {"shortcut": "raw", "final_bn": True},
            lambda dm, rn, wrn: rn.PreActResNet(rn.PreActBlock, [2, 2, 2, 2], bn_before_fc=True),
        ),
        ("dm_wrn_70_16", {}, lambda dm, rn, wrn: dm.DMWideResNet(depth=70, width=16, activation_fn=dm.Swish)),
        ("dm_wrn_28_10", {"activation": "relu"}, lambda dm, rn, wrn: dm.DMWideResNet(depth=28, width=10)),
        ("dm_preact_resnet18", {}, lambda dm, rn, wrn: dm.DMPreActResNet(depth=18, activation_fn=dm.Swish)),
    ],
)
def test_param_counts_equal_robustbench_definitions(name, kwargs, reference, rb_architectures):
    with torch.device("meta"):
        assert n_params(create_model(name, num_classes=10, **kwargs)) == n_params(reference(*rb_architectures))


def test_small_cnn_is_small():
    assert n_params(create_model("small_cnn")) < 100_000


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", SMALL)
def test_shapes_and_head_split(name, num_classes, x):
    model = create_model(name, num_classes=num_classes).eval()
    assert isinstance(model, ImageClassifier)
    assert isinstance(model.linear, torch.nn.Linear)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
        assert logits.shape == (2, num_classes)
        assert feats.shape == (2, model.feature_dim)
        assert torch.allclose(model.head(feats), logits)


@pytest.mark.parametrize("name", ["small_cnn", "resnet20"])
def test_other_input_sizes(name):
    model = create_model(name).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 28, 28)).shape == (1, 10)
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 10)


def test_normalization_is_inside(x):
    torch.manual_seed(0)
    plain = create_model("resnet20", mean=0.0, std=1.0).eval()
    shifted = create_model("resnet20", mean=0.5, std=0.5).eval()
    shifted.body.load_state_dict(plain.body.state_dict())
    shifted.linear.load_state_dict(plain.linear.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain(x), shifted(x))
        assert torch.allclose(shifted.features(x), plain.body((x - 0.5) / 0.5))
        assert torch.allclose(shifted(x), plain(2 * x - 1))


def test_dataset_stats_and_buffers():
    assert set(DATASETS.names()) == {"cifar10", "cifar100", "svhn", "stl10", "mnist"}
    mean, std = DATASETS.get("cifar100").mean, DATASETS.get("cifar100").std
    model = create_model("small_cnn", mean=mean, std=std)
    assert model.normalize.mean.shape == (1, 3, 1, 1)
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor(std))
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())
    mnist = create_model("small_cnn", mean=DATASETS.get("mnist").mean, std=0.3081)
    assert mnist.normalize.mean.shape == (1, 3, 1, 1)


def test_bad_stats_rejected():
    with pytest.raises(ValueError):
        create_model("small_cnn", mean=(0.1, 0.2))
    with pytest.raises(ValueError):
        create_model("small_cnn", std=0.0)


def test_unknown_name():
    with pytest.raises(ValueError) as info:
        create_model("resnet1000")
    message = str(info.value)
    assert "resnet1000" in message and "\n" not in message
    for name in list_models():
        assert name in message


@pytest.mark.parametrize(
    "name, kwargs",
    [("small_cnn", {}), ("resnet20", {"shortcut": "B"}), ("wrn_16_2", {"drop_rate": 0.1})],
)
def test_arch_kwargs_round_trip(name, kwargs):
    mean, std = DATASETS.get("svhn").mean, DATASETS.get("svhn").std
    model = create_model(name, num_classes=100, mean=mean, std=std, **kwargs)
    assert model.arch == name
    saved = json.loads(json.dumps({"arch": model.arch, "arch_kwargs": model.arch_kwargs}))
    rebuilt = create_model(saved["arch"], **saved["arch_kwargs"])
    assert rebuilt.arch_kwargs == model.arch_kwargs
    assert rebuilt.arch_kwargs["num_classes"] == 100
    a, b = model.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    rebuilt.load_state_dict(a)


def test_arch_kwargs_keep_custom_stats():
    mean, std = DATASETS.get("svhn").mean, DATASETS.get("svhn").std
    model = create_model("small_cnn", num_classes=10, mean=mean, std=std)
    assert model.arch_kwargs == {"num_classes": 10, "mean": list(mean), "std": list(std)}
    rebuilt = create_model(model.arch, **model.arch_kwargs)
    assert torch.equal(rebuilt.normalize.mean, model.normalize.mean)
