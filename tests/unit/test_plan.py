"""Learning curves and n*: hand computations, a reference optimiser, then simulation on
curves of other shapes than the power law and folds that share their size's subsample."""

import time

import numpy as np
import pandas as pd
import pytest
from scipy import optimize
from scipy import stats as scipy_stats

from hetcv.curves import RATES, Curve, backtest_error, curve_band, fit_many, lack_of_fit, size_means
from hetcv.plan import BAND_REPLICATES, plan_quantity, planning_table

SIZES = np.array([100, 300, 836, 1672])
N = np.repeat(SIZES, 4).astype(float)  # 4 sizes × 4 folds, as in the demo


def test_n_star_by_hand():
    cv = Curve("power", asymptote=2.0, scale=60.0, rate=0.5, direction=1)
    assert cv.n_star(5.0) == pytest.approx(400.0)  # (60 / 3)²
    assert cv.n_star(1.5) == np.inf  # below the asymptote
    metric = Curve("power", asymptote=0.95, scale=2.0, rate=1.0, direction=-1)
    assert metric.n_star(0.9) == pytest.approx(40.0)  # 2 / 0.05
    assert metric(np.array([40.0]))[0] == pytest.approx(0.9)
    # Log-linear: y = 20 − 2·log n reaches 5 at n = e^7.5 and never levels off.
    falling = Curve("loglinear", asymptote=20.0, scale=2.0, rate=np.nan, direction=1)
    assert falling.n_star(5.0) == pytest.approx(np.exp(7.5))
    assert falling(np.array([np.exp(7.5)]))[0] == pytest.approx(5.0)


def test_exact_law_on_the_grid_is_recovered():
    rate = RATES[100]
    values = 2.0 + 60.0 * N**-rate
    a, b, c, cost = fit_many(N, values[None], np.ones((1, len(N))), 1)
    assert (a[0], b[0], c[0], cost[0]) == pytest.approx((2.0, 60.0, rate, 0.0), abs=1e-9)
    assert backtest_error(N, values, 1) == pytest.approx(0.0, abs=1e-9)


def test_fit_is_as_good_as_a_general_optimiser():
    rng = np.random.default_rng(0)
    values = 1.5 + 40 * N**-0.45 + rng.normal(0, 0.4, len(N))
    weights = rng.uniform(0.5, 2.0, len(N))
    a, b, c, _ = fit_many(N, values[None], weights[None], 1)

    def residuals(p):
        return np.sqrt(weights) * (p[0] + p[1] * N ** -p[2] - values)

    reference = optimize.least_squares(
        residuals, x0=[1.0, 30.0, 0.5], bounds=([0, 0, 0.05], [np.inf, np.inf, 3.0])
    )
    ours = 0.5 * np.sum(residuals([a[0], b[0], c[0]]) ** 2)
    # Same bounds (a CV's asymptote ≥ 0); the rate grid is 1.7 % apart: the cost may exceed
    # the optimum by a hair, never more.
    assert ours <= reference.cost * 1.01 + 1e-9


def test_lack_of_fit_is_the_f_test_of_the_means_by_hand():
    rng = np.random.default_rng(2)
    values = 1.0 + 40 * N**-0.5 + rng.normal(0, 0.3, len(N))
    means = size_means(N, values)
    sizes = np.unique(N)
    assert means.means == pytest.approx([values[N == n].mean() for n in sizes])
    # Pure error: each point's deviation from its size's mean, over its smoothed sd.
    spread = means.spread[np.searchsorted(sizes, N)]
    pure = np.sum(((values - means.means[np.searchsorted(sizes, N)]) / spread) ** 2)
    assert (means.pure_error, means.pure_df) == pytest.approx((pure, 12))
    # The log-linear family has 4 − 2 = 2 degrees of freedom of lack of fit.
    plain = means.folds / means.spread**2
    _, _, _, cost = fit_many(sizes, means.means[None], plain[None], 1, "loglinear")
    expected = scipy_stats.f.sf(cost[0] / 2 / (pure / 12), 2, 12)
    assert lack_of_fit(means, cost[0], "loglinear") == pytest.approx(expected)
    # Three sizes: a three-parameter curve cannot be checked.
    assert np.isnan(lack_of_fit(size_means(N[N > 100], values[N > 100]), 0.1, "power"))


def curve_parameters(rng, target=5.0):
    """A random falling power law whose n* lies within 2 × the largest n, and its points
    (fold noise sd 15 % of the curve)."""
    while True:
        asymptote, rate = rng.uniform(0, 3), rng.uniform(0.3, 1.0)
        scale = (rng.uniform(7, 15) - asymptote) * 100**rate
        if SIZES[0] < (scale / (target - asymptote)) ** (1 / rate) <= 2 * SIZES[-1]:
            curve = asymptote + scale * N**-rate
            return (asymptote, scale, rate), curve + rng.normal(0, 0.15 * curve)


# The review's designs: curves that are power laws or not (log-linear, plateau then drop,
# exponential), 4 sizes of the paper's shape, 2–4 folds, fold noise 15 % of the curve, or a
# size-level share (folds of one size share their subsample: 10 % shared, 11 % per fold).
PLANNING_SIZES = np.array([100, 300, 836, 1672.0])
GRID = np.geomspace(10, 1e6, 200001)


def planning_draw(rng, shape, n_folds, noise, target=5.0):
    """A true curve whose n* lies within 2 × the largest n, and its fold-level points."""
    n = np.repeat(PLANNING_SIZES, n_folds)
    while True:
        if shape == "power":
            a, c = rng.uniform(0, 3), rng.uniform(0.3, 1.0)
            b = (rng.uniform(7, 15) - a) * 100**c

            def curve(x, a=a, b=b, c=c):
                return a + b * x**-c

        elif shape == "loglinear":
            start, slope = rng.uniform(7, 15), rng.uniform(1.0, 4.0)

            def curve(x, start=start, slope=slope):
                return np.maximum(start - slope * np.log(x / 100), 0.5)

        elif shape == "plateau":
            high, low = rng.uniform(8, 14), rng.uniform(1, 3)
            middle, steep = np.exp(rng.uniform(np.log(200), np.log(1500))), rng.uniform(2, 4)

            def curve(x, high=high, low=low, middle=middle, steep=steep):
                return low + (high - low) / (1 + (x / middle) ** steep)

        else:  # exponential
            a, scale = rng.uniform(0.5, 3), rng.uniform(200, 1500)
            b = (rng.uniform(7, 15) - a) / np.exp(-100 / scale)

            def curve(x, a=a, b=b, scale=scale):
                return a + b * np.exp(-x / scale)

        below = np.flatnonzero(curve(GRID) < target)
        if len(below) and PLANNING_SIZES[0] < GRID[below[0]] <= 2 * PLANNING_SIZES[-1]:
            if noise == "independent":
                error = rng.normal(0, 0.15, len(n))
            else:
                error = np.repeat(rng.normal(0, 0.10, 4), n_folds) + rng.normal(0, 0.11, len(n))
            return GRID[below[0]], n, curve(n) * (1 + error)


PLANNING_DESIGNS = [
    ("power", 4, "independent"),
    ("power", 4, "shared"),
    ("power", 2, "independent"),
    ("loglinear", 4, "independent"),
    ("plateau", 4, "independent"),
    ("exponential", 4, "independent"),
]


@pytest.mark.parametrize(("shape", "n_folds", "noise"), PLANNING_DESIGNS)
def test_simulated_n_star_interval_covers_or_says_the_curve_does_not_fit(shape, n_folds, noise):
    start = time.perf_counter()
    rng = np.random.default_rng([len(shape), n_folds, len(noise)])
    n_sets, covered, flagged, widths = 300, [], [], []
    for i in range(n_sets):
        truth, n, values = planning_draw(rng, shape, n_folds, noise)
        row = plan_quantity(n, values, "raw_cv", 5.0, 4.0, seed=i)
        covered.append(row["n_star_low"] <= truth <= row["n_star_high"])
        flagged.append("does not fit" in row["status"] or "disagree" in row["status"])
        widths.append(row["n_star_high"] / row["n_star_low"])
    covered, flagged, widths = map(np.array, (covered, flagged, widths))
    rate = covered.mean()
    missed_flagged = flagged[~covered].mean() if (~covered).any() else np.nan
    print(
        f"\nn*, {shape} curves, {n_folds} folds, {noise} noise (N={n_sets}): interval covers "
        f"{rate:.3f} ± {np.sqrt(rate * (1 - rate) / n_sets):.3f}; 'does not fit' "
        f"{flagged.mean():.3f} (of the misses {missed_flagged:.2f}); median high/low "
        f"{np.median(widths):.2f}, unbounded {np.mean(~np.isfinite(widths)):.2f}; "
        f"{time.perf_counter() - start:.1f} s"
    )
    if shape == "power":
        assert rate >= 0.90
    else:  # covers, or the status says so for most misses
        assert rate >= 0.90 or missed_flagged >= 0.80


def test_simulated_figure_band_coverage_is_what_the_docs_say():
    # The figure's fold-bootstrap band is nominally 95 % but, with four folds per size,
    # covers the true curve less often: config/README.md and the module doc say 85–92 %.
    rng = np.random.default_rng(7)
    grid = np.array([100, 300, 836, 1672, 3344, 6688.0])
    hits = []
    for draw in range(200):
        (asymptote, scale, rate), values = curve_parameters(rng)
        low, high = curve_band(N, values, 1, grid, BAND_REPLICATES, draw)
        truth = asymptote + scale * grid**-rate
        hits.append((low <= truth) & (truth <= high))
    coverage = np.mean(hits, axis=0)
    print(f"\nfigure band: covers the true curve in {np.round(coverage, 3)} at n = {grid}")
    # SE about 2.4 points at 200 draws: each size within 0.80–0.97, none at the nominal 95 %.
    assert ((coverage >= 0.80) & (coverage <= 0.97)).all()
    assert 0.83 <= coverage.mean() <= 0.93


def fold_table(values_by_quantity):
    rows = {"algorithm": "fcm", "k": 4, "n": N.astype(int), "fold": np.tile(np.arange(4), 4)}
    return pd.DataFrame({**rows, **values_by_quantity})


def test_statuses_and_the_observed_crossing():
    # Raw CV 8.5 % at 833 and 1.5 % at 1,667 (the demo's udigits): reached, n* between them.
    sizes = np.repeat([208, 416, 833, 1667], 4).astype(float)
    raw = np.repeat([22.0, 14.0, 8.5, 1.5], 4) + np.tile([-0.4, 0.2, -0.1, 0.3], 4)
    row = plan_quantity(sizes, raw, "raw_cv", 5.0, 4.0, seed=0)
    assert row["status"] == "reached at n ≤ 1667"
    assert 833 <= row["n_star"] <= 1667 and row["n_star_low"] <= row["n_star"]
    # A curve levelling off at 8 %: not reachable; its interval holds no finite n.
    flat = 8.0 + 40 * N**-0.5 + np.tile([-0.1, 0.1, 0.05, -0.05], 4)
    row = plan_quantity(N, flat, "debiased_cv", 5.0, 4.0, seed=0)
    assert row["status"] == "not reachable" and row["n_star_low"] == np.inf
    # A slow fall that reaches 5 % only far beyond 4 × 1,672.
    slow = 1.0 + 60 * N**-0.25 + np.tile([-0.05, 0.05, 0.02, -0.02], 4)
    row = plan_quantity(N, slow, "raw_cv", 5.0, 4.0, seed=0)
    assert row["n_star"] > 4 * 1672 and row["status"] == "beyond 4 × the largest n: not trusted"
    # The test metric rises to its target.
    metric = 0.97 - 3.0 * N**-0.6 + np.tile([-0.003, 0.003, 0.001, -0.001], 4)
    table = planning_table(
        fold_table({"cv": raw, "debiased_cv": flat, "test_metric": metric}).assign(
            n=sizes.astype(int)
        ),
        {"algorithm": "fcm", "k": 4},
        cv_target=5.0,
        metric_target=0.95,
        max_extrapolation=4.0,
        seed=0,
    )
    assert list(table["quantity"]) == ["raw_cv", "debiased_cv", "test_metric"]
    assert len(table.loc[0, "grid"]) == len(table.loc[0, "band_low"]) == 60
    assert (np.array(table.loc[0, "band_low"]) <= np.array(table.loc[0, "band_high"])).all()


def test_one_sample_size_is_not_planned_and_says_so():
    row = plan_quantity(np.array([100.0, 100.0, 100.0]), np.array([9, 6, 7.0]), "raw_cv", 5, 4, 0)
    assert row["status"] == "not planned: needs two folds at three or more sample sizes"
    assert np.isnan(row["n_star"]) and row["grid"] == []


def test_summary_sentence_says_what_the_row_says():
    from hetcv.verdict import planning_line

    row = pd.Series(
        {
            "quantity": "raw_cv",
            "target": 5.0,
            "n_star": 505.6,
            "n_star_low": 129.8,
            "n_star_high": np.inf,
            "status": "predicted",
            "lack_of_fit_p": 0.412,
            "backtest_error": -1.327,
            "largest_n": 1667.0,
            "asymptote": 2.0,
            "grid": [100.0, 6668.0],
        }
    )
    assert planning_line(row, "accuracy") == (
        "- Planning: about 506 samples for raw CV < 5 % (95 %: 130–∞; predicted; lack of fit "
        "p = 0.412); fitted without n = 1,667, the curve missed it by -1.33."
    )
    levelled = row.copy()
    levelled["n_star"], levelled["status"] = np.inf, "levels off above the target"
    assert "levels off at 2; if at all, beyond n ≈ 130 (95 %; lack of fit p = 0.412)" in (
        planning_line(levelled, "x")
    )
    reached = row.copy()
    reached["n_star_low"], reached["status"] = 50.0, "reached at n ≤ 300"
    assert "(95 %: < 100–∞; reached at n ≤ 300; lack of fit p = 0.412)" in planning_line(
        reached, "x"
    )
    # A curve that does not fit gives no n*, only the range the curves allow.
    unfit = row.copy()
    unfit["n_star"], unfit["lack_of_fit_p"] = np.nan, 0.01
    unfit["status"] = "the curve does not fit: no n*"
    assert planning_line(unfit, "x") == (
        "- Planning raw CV < 5 %: the curve does not fit: no n* (lack of fit p = 0.010); the "
        "curves the data allow put it between 130 and ∞; fitted without n = 1,667, the curve "
        "missed it by -1.33."
    )


def test_the_status_withholds_n_star_when_the_curve_does_not_fit():
    # The CV rises again at the largest size: no power law through these means.
    means = np.array([14.0, 9.0, 6.0, 9.5])
    values = np.repeat(means, 4) + np.tile([-0.2, 0.1, 0.2, -0.1], 4)
    row = plan_quantity(N, values, "raw_cv", 5.0, 4.0, seed=0)
    assert row["status"] == "the curve does not fit: no n*"
    assert np.isnan(row["n_star"]) and row["lack_of_fit_p"] < 0.05
    assert row["n_star_low"] <= row["n_star_high"]
