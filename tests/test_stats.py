"""acdistill.stats: each interval against values computed by hand or published with its method, against scipy where
scipy has the method, and the seeded intervals' coverage on simulated models whose true accuracy is known."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from acdistill.stats import (
    TwoWay,
    _welch,
    independent_difference,
    mcnemar_p,
    over_seeds,
    pack_bits,
    paired_difference,
    seeded_difference,
    t_quantile,
    unpack_bits,
    wilson,
)


def table(both, only_a, only_b, neither):
    """Two runs' per-image results with these counts of the paired 2x2 table."""
    a = np.repeat([True, True, False, False], [both, only_a, only_b, neither])
    b = np.repeat([True, False, True, False], [both, only_a, only_b, neither])
    return a, b


def test_wilson_by_hand_and_against_scipy():
    # 250 of 1000: z^2 = 3.841459; centre (0.25 + z^2/2000) / (1 + z^2/1000) = 0.250956;
    # half z sqrt(0.25 * 0.75 / 1000 + z^2 / 4e6) / (1 + z^2/1000) = 0.026803
    ci = wilson(250, 1000)
    assert (ci.low, ci.high) == pytest.approx((0.224153, 0.277760), abs=1e-6)
    assert wilson(0, 10).high == pytest.approx(0.2775, abs=1e-4) and wilson(0, 10).low == 0.0  # the textbook case
    for k, n in [(0, 1000), (3, 1000), (500, 1000), (999, 1000), (7, 9)]:
        reference = binomtest(k, n).proportion_ci(method="wilson")
        ci = wilson(k, n)
        assert (ci.low, ci.high) == pytest.approx((reference.low, reference.high), abs=1e-9)
    assert ci.percent() == [round(100 * ci.low, 2), round(100 * ci.high, 2)]
    with pytest.raises(ValueError):
        wilson(5, 0)


def test_paired_difference_gives_newcombes_published_method_10_intervals():
    # Newcombe (1998), Statistics in Medicine 17:2635, Table II: 36, 12, 2, 0 -> 0.0569 to 0.3404
    ci = paired_difference(*table(36, 12, 2, 0))
    assert ci.estimate == pytest.approx(0.2) and (ci.low, ci.high) == pytest.approx((0.0569, 0.3404), abs=5e-5)
    assert not ci.within_noise
    # By hand, 30, 10, 4, 56 of 100: p1 0.40, p2 0.34; phi (30 * 56 - 10 * 4 - 50) / sqrt(40 * 60 * 34 * 66) = 0.6851
    close = paired_difference(*table(30, 10, 4, 56))
    assert close.estimate == pytest.approx(0.06) and close.low < 0 < close.high and close.within_noise
    w1, w2, phi = wilson(40, 100), wilson(34, 100), 1590 / math.sqrt(40 * 60 * 34 * 66)
    d1, e1, d2, e2 = 0.40 - w1.low, w1.high - 0.40, 0.34 - w2.low, w2.high - 0.34
    assert close.low == pytest.approx(0.06 - math.sqrt(d1**2 - 2 * phi * d1 * e2 + e2**2))
    assert close.high == pytest.approx(0.06 + math.sqrt(d2**2 - 2 * phi * d2 * e1 + e1**2))
    same = paired_difference(*table(50, 0, 0, 50))
    assert same.estimate == 0 and same.within_noise


def test_mcnemar_is_the_binomial_test_on_the_images_one_run_alone_gets_right():
    assert mcnemar_p(*table(36, 12, 2, 0)) == pytest.approx(2 * (1 + 14 + 91) / 2**14)
    assert mcnemar_p(*table(36, 12, 2, 0)) == pytest.approx(binomtest(2, 14).pvalue)
    assert mcnemar_p(*table(50, 0, 0, 50)) == 1.0


def test_independent_difference_gives_newcombes_published_method_10_intervals():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, examples (a) and (b)
    a = independent_difference(56, 70, 48, 80)
    assert (a.low, a.high) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    b = independent_difference(9, 10, 3, 10)
    assert (b.low, b.high) == pytest.approx((0.1705, 0.8090), abs=5e-5)


def test_the_two_way_layout_of_a_tiny_run_by_hand():
    runs = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    layout = TwoWay.of(runs)
    # seed means 0.5, 0.25, grand 0.375: MS_seeds = 4 (0.125^2 + 0.125^2) = 0.125; image means 1, 0.5, 0, 0:
    # MS_images = 2 (0.625^2 + 0.125^2 + 0.375^2 + 0.375^2) / 3 = 0.458333; residuals +-0.125 and +-0.375: 0.375 / 3
    assert (layout.seeds, layout.images, layout.residual) == pytest.approx((0.125, 0.458333, 0.125), abs=1e-6)
    # components over n S = 8: seeds (0.125 - 0.125) / 8 = 0, residual 0.125 / 8, images (0.458333 - 0.125) / 8
    (seeds, df_seeds), (residual, df_residual), (images, df_images) = layout.terms()
    assert (seeds, residual, images) == pytest.approx((0.0, 0.015625, 0.041667), abs=1e-6)
    assert (df_seeds, df_residual, df_images) == (1, 3, 3)
    variance, df = _welch(layout.terms())
    assert variance == pytest.approx(0.0572917, abs=1e-6)
    assert df == pytest.approx(0.0572917**2 / (0.015625**2 / 3 + 0.041667**2 / 3), rel=1e-3)  # zero terms drop out
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4) and t_quantile(1e6) == pytest.approx(1.96, abs=1e-3)


def simulated_runs(rng, accuracy, seeds, n, difficulty, seed_sd=0.01):
    """Runs of a model on n images: image i is right at seed s when its difficulty, plus noise, is below the
    accuracy plus the seed's offset. Over images and seeds the expected accuracy is `accuracy` exactly."""
    offsets = rng.normal(0, seed_sd, seeds)
    return np.stack([difficulty + rng.normal(0, 0.1, n) * 0.5 < accuracy + o for o in offsets])


def test_the_seeded_intervals_cover_the_true_accuracy_and_difference_95_times_in_100():
    rng = np.random.default_rng(0)
    trials, covered, covered_difference, paired_width, unpaired_width = 400, 0, 0, 0.0, 0.0
    for _ in range(trials):
        difficulty = rng.random(1000)  # a fresh draw of test images each trial
        a = simulated_runs(rng, 0.30, 3, 1000, difficulty)
        b = simulated_runs(rng, 0.27, 3, 1000, difficulty)
        covered += over_seeds(a).low <= 0.30 <= over_seeds(a).high
        diff = seeded_difference(a, b)
        covered_difference += diff.low <= 0.03 <= diff.high
        unpaired = seeded_difference(a, b, paired_images=False)
        paired_width += diff.high - diff.low
        unpaired_width += unpaired.high - unpaired.low
    assert 0.92 <= covered / trials <= 0.995
    assert 0.92 <= covered_difference / trials <= 0.995
    # the images' shared difficulty cancels out of a paired difference
    assert paired_width < 0.95 * unpaired_width, (paired_width, unpaired_width)


def test_independent_runs_give_the_pooled_interval_not_a_collapse_to_0_100():
    # three seeds, each right on one of 16 images, different ones: nothing shared, so about Wilson's for 3 of 48
    runs = np.zeros((3, 16), dtype=bool)
    runs[0, 0] = runs[1, 5] = runs[2, 9] = True
    ci, pooled = over_seeds(runs), wilson(3, 48)
    assert ci.high - ci.low < 1.5 * (pooled.high - pooled.low)
    rng = np.random.default_rng(2)
    for n, p in [(1000, 0.25), (100, 0.05)]:  # every result independent: coverage and no blown-up width
        intervals = [over_seeds(rng.random((3, n)) < p) for _ in range(300)]
        assert 0.92 <= np.mean([i.low <= p <= i.high for i in intervals]) <= 0.995
        assert max(i.high - i.low for i in intervals) < 4 * (
            wilson(round(3 * n * p), 3 * n).high - wilson(round(3 * n * p), 3 * n).low
        )


def test_a_point_at_zero_keeps_an_interval_and_the_inputs_are_checked():
    zero = over_seeds(np.zeros((3, 1000), dtype=bool))
    assert zero.low == 0.0 and zero.high == pytest.approx(wilson(0, 3000).high)  # the 3000 results pooled
    with pytest.raises(ValueError, match="two or more seeds"):
        over_seeds(np.zeros((1, 10), dtype=bool))
    with pytest.raises(ValueError, match="same n"):
        seeded_difference(np.zeros((2, 10), dtype=bool), np.zeros((2, 11), dtype=bool))
    unpaired = seeded_difference(np.zeros((2, 10), dtype=bool), np.ones((2, 11), dtype=bool), paired_images=False)
    assert unpaired.estimate == -1.0


def test_per_image_results_travel_as_bits():
    correct = np.random.default_rng(1).random(1001) < 0.4
    packed = pack_bits(correct)
    assert len(packed) <= 1001 // 6 + 4 and np.array_equal(unpack_bits(packed, 1001), correct)
