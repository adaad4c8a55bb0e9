"""The linear probe, the ablation grid, and the data behind each analysis figure."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from acdistill import create_model
from acdistill.analysis import (
    correlation_difference,
    feature_cloud,
    logit_correlation,
    read_dvclive_series,
    two_class_subset,
)
from acdistill.attacks import Budget
from acdistill.cli.ablate import parse_grid_option
from acdistill.data import ImageSet, load_split
from acdistill.engine import evaluate
from acdistill.engine.probe import extract_features, fit_linear_head, linear_probe
from acdistill.errors import AcdistillError
from acdistill.pipeline.compare import markdown_table, over_seeds_rows
from acdistill.pipeline.figures import student_labels
from acdistill.pipeline.points import expand, with_seeds
from acdistill.stats import over_seeds, pack_bits


class PixelFeatures(nn.Module):
    """Features = two pixels of the red channel, through a batch norm whose running statistics must not move."""

    feature_dim = 2

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(2)

    def features(self, x):
        return self.bn(x[:, 0, 0, :2])

    def forward(self, x):
        return self.features(x)


def separable_set(n: int, seed: int) -> ImageSet:
    """Class 1 iff pixel a > pixel b: separable by the line a - b = 0, with a margin of 40/255."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 2, (n,), generator=g)
    low = torch.randint(20, 100, (n,), generator=g, dtype=torch.uint8)
    high = low + torch.randint(40, 120, (n,), generator=g, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.where(labels == 1, high, low)
    images[:, 0, 0, 1] = torch.where(labels == 1, low, high)
    return ImageSet("toy", images, labels, torch.arange(n), 2, "test")


def test_probe_reaches_full_accuracy_on_a_linearly_separable_set():
    net = PixelFeatures().eval()
    probed = linear_probe(
        net, separable_set(400, 0), epochs=60, lr=0.05, weight_decay=0.0, batch_size=64, seed=0, device="cpu"
    )
    result = evaluate(probed, separable_set(200, 1), ["natural"])
    assert result["natural"]["accuracy"] == 100.0


def test_probing_leaves_the_feature_extractor_untouched(mirror):
    net = create_model("small_cnn", num_classes=10)
    with torch.no_grad():  # non-trivial running statistics, which a forward pass in train mode would change
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train = load_split("mnist", True, 64, data_dir=mirror)
    feats_before = extract_features(net, train, batch_size=32, device="cpu")
    probed = linear_probe(net, train, epochs=3, lr=0.01, weight_decay=0.0, batch_size=32, seed=0, device="cpu")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(feats_before, extract_features(net, train, batch_size=32, device="cpu"))
    assert not any(p.requires_grad for p in probed.parameters())


def test_the_head_does_not_depend_on_each_feature_scale():
    """It trains on standardized features and folds the standardization into its weights, so rescaling and
    shifting a feature changes the weights but not the predictions."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(64, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (64,), generator=g)
    scale, shift = torch.tensor([1e-3, 1.0, 10.0, 100.0, 3.0], dtype=torch.float64), 7.0
    fit = dict(epochs=5, lr=0.05, weight_decay=0.0, batch_size=16, seed=0)
    head = fit_linear_head(feats, labels, 3, **fit)
    rescaled = fit_linear_head(feats * scale + shift, labels, 3, **fit)
    assert torch.allclose(head(feats), rescaled(feats * scale + shift), atol=1e-4)
    assert torch.equal(head.weight, fit_linear_head(feats, labels, 3, **fit).weight)  # seeded


def test_a_model_without_features_is_refused():
    with pytest.raises(AcdistillError, match="has no features\\(\\)/feature_dim"):
        linear_probe(
            nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)),
            separable_set(8, 0),
            epochs=1,
            lr=0.1,
            weight_decay=0.0,
            batch_size=8,
            seed=0,
            device="cpu",
        )


def test_grid_expands_to_the_product_first_key_slowest():
    grid = dict([parse_grid_option("distill.gacd.k=16,256"), parse_grid_option("distill.gacd.reweight=true,false")])
    assert grid == {"distill.gacd.k": [16, 256], "distill.gacd.reweight": [True, False]}
    assert expand(grid) == [
        {"distill.gacd.k": 16, "distill.gacd.reweight": True},
        {"distill.gacd.k": 16, "distill.gacd.reweight": False},
        {"distill.gacd.k": 256, "distill.gacd.reweight": True},
        {"distill.gacd.k": 256, "distill.gacd.reweight": False},
    ]
    assert parse_grid_option("distill.attack.eps=4/255,8/255")[1] == ["4/255", "8/255"]  # validated per point
    with pytest.raises(AcdistillError, match="no empty value"):
        parse_grid_option("distill.gacd.k=16,,4")
    assert expand({}) == []


def test_seeds_give_one_row_per_point_with_each_accuracy_as_mean_and_interval_and_other_columns_as_mean_and_sd():
    points = [{"distill.gacd.k": 16}, {"distill.gacd.k": 64}]
    runs = with_seeds(points, [0, 1])
    assert runs == [
        {"distill.gacd.k": 16, "seed": 0},
        {"distill.gacd.k": 16, "seed": 1},
        {"distill.gacd.k": 64, "seed": 0},
        {"distill.gacd.k": 64, "seed": 1},
    ]
    rng = np.random.default_rng(0)
    correct = [rng.random(200) < p for p in (0.10, 0.12, 0.20, 0.23)]
    evaluations = [
        {"eval": {"pgd20": {"accuracy": 100 * c.mean(), "n": 200, "images": "same", "correct": pack_bits(c)}}}
        for c in correct
    ]
    rows = [
        {**point, "pgd20": 100 * c.mean(), "train_minutes": minutes, "run": f"ablate/{i}"}
        for i, (point, c, minutes) in enumerate(zip(runs, correct, [1.0, 3.0, 2.0, 2.0]))
    ]
    table = over_seeds_rows(points, rows, evaluations)
    for row, pair in zip(table, (correct[:2], correct[2:])):
        interval = over_seeds(np.stack(pair))
        assert row["pgd20"] == pytest.approx(100 * interval.estimate, abs=0.01)
        assert row["pgd20_ci95"] == interval.percent() and "pgd20_sd" not in row
    assert (table[0]["train_minutes"], table[0]["train_minutes_sd"]) == (2.0, 1.414)
    assert table[0]["seeds"] == [0, 1] and table[0]["runs"] == ["ablate/0", "ablate/1"]
    page = markdown_table(table, "github")
    low, high = table[0]["pgd20_ci95"]
    assert f"| {table[0]['pgd20']:.1f} ({low:.1f}–{high:.1f}) " in page and "| 2.00 ± 1.41 " in page
    assert "pgd20_ci95" not in page and "_sd" not in page and "ablate/0" not in page


def test_students_are_labelled_by_file_name_or_by_directory_where_file_names_repeat():
    assert student_labels([Path("models/student.safetensors"), Path("models/student_aft.safetensors")]) == [
        "student",
        "student_aft",
    ]
    assert student_labels([Path("ablate/gacd/student.safetensors"), Path("ablate/ard/student.safetensors")]) == [
        "gacd",
        "ard",
    ]
    with pytest.raises(AcdistillError, match="same file and directory names"):
        student_labels([Path("a/gacd/student.safetensors"), Path("b/gacd/student.safetensors")])


def test_logit_correlation_matches_numpy_and_the_difference_is_class_by_class():
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert np.allclose(logit_correlation(logits).numpy(), np.corrcoef(logits.numpy().T))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    x = torch.rand(30, 3, 2, 2)
    diff = correlation_difference(teacher, teacher, x)
    assert diff.shape == (4, 4) and torch.equal(diff, torch.zeros(4, 4))
    other = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    diff = correlation_difference(teacher, other, x)
    assert diff.shape == (4, 4) and (diff >= 0).all() and diff.diagonal().abs().max() < 1e-12 and diff.sum() > 0


def test_feature_cloud_has_two_classes_and_their_attacked_copies(mnist_model, mnist_test):
    cloud = feature_cloud(mnist_model, mnist_test, (3, 8), per_class=12, budget=Budget(0.3), seed=0, device="cpu")
    assert cloud.points.shape == (36, 2)
    assert np.bincount(cloud.groups).tolist() == [12, 12, 12]
    assert cloud.fooled > 50  # eps 0.3 on a naturally trained MNIST CNN: most 8s become 3s
    with pytest.raises(AcdistillError, match="need at least 2"):
        two_class_subset(mnist_test.take(3), (3, 8), 5)


def test_dvclive_series_are_read_per_metric(tmp_path):
    root = tmp_path / "plots" / "metrics"
    (root / "loss").mkdir(parents=True)
    (root / "loss" / "nce.tsv").write_text("step\tnce\n0\t1.5\n1\t0.5\n")
    (root / "clean_acc.tsv").write_text("step\tclean_acc\n0\t20\n")
    assert read_dvclive_series(tmp_path) == {"clean_acc": [(0.0, 20.0)], "loss/nce": [(0.0, 1.5), (1.0, 0.5)]}


def test_training_curves_give_losses_and_accuracies_different_colours_and_whole_epoch_ticks():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from acdistill.plots import epoch_axis, series_colours

    names = ["loss/ce", "loss/kl", "loss/nce", "loss/total", "clean_acc", "pgd10_acc", "lr"]
    colours = series_colours(names)
    assert set(colours) == set(names) - {"lr"}
    losses = {colours[n] for n in names if n.startswith("loss/")}
    accuracies = {colours[n] for n in ("clean_acc", "pgd10_acc")}
    assert len(losses) == 4 and len(accuracies) == 2 and not losses & accuracies
    for last in (1, 2, 24):
        fig, ax = plt.subplots()
        epoch_axis(ax, last)
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if 0.5 <= t <= last + 0.5]
        assert ticks and all(float(t).is_integer() for t in ticks), (last, ticks)
        plt.close(fig)
