"""How much data until heterogeneity stops hurting: learning curves and the n that reaches a target.

Each quantity is fitted over the sample sizes by an inverse power law (Figueroa et al., BMC
Med Inform Decis Mak 2012): the test metric rises as m(n) = a − b·n^(−c), the raw and the
debiased CV fall as cv(n) = a + b·n^(−c), with b ≥ 0, c in [0.05, 3], and a CV's asymptote
≥ 0, a metric's ≤ 1. The points are the
fold-level values (one per fold and size, repeats averaged: they share the fold's samples),
weighted by 1/s(n)², where s(n) is a smooth model of the spread between folds (log s linear in
log n, fitted to each size's sample sd), since four folds make each size's own sd too noisy to
weight by. For a fixed rate c the law is linear in (a, b), so it is fitted in closed form on
a grid of 240 rates and the best rate kept; this makes thousands of fits per second.

n* is where the curve meets the target. Its 95 % interval is the set of n* that an F test of
"the curve passes through the target at n*" does not reject: for each candidate n* the law is
refitted under that constraint (a and c free, closed form in a for each c) and the rise in
the weighted residual sum of squares compared with F(1, N − 3). In simulations with known
curves (4 sizes × 4 folds, 15 % fold noise, ``tests/unit/test_planning.py``) this covered the
true n* in 95.6 % of 250 data sets where it lies within twice the largest n; percentile bootstraps
over folds or residuals covered 77–86 %. An interval with no finite n* means no curve the data
allow reaches the target: its asymptote lies beyond it. The figure's band around each curve is
a percentile bootstrap over folds, a guide to the fit's spread: in the same simulations it
covered the true curve in 85–92 % at sizes from the smallest n to 4 × the largest, not 95 %
(an F-test inversion at each size covered 85–91 %).

Status of a target: ``reached at n ≤ N`` when the mean at an observed size N already meets
it (the smallest such N), and n* is then read off the observations (:func:`observed_crossing`),
the interval widened to hold it if need be; ``not reachable`` when the interval holds no
finite n*; ``levels off above the target`` when the fitted curve does (n* = inf) but the data
do not exclude reaching it beyond the interval's low end; ``beyond X × the largest n: not
trusted`` when n* exceeds ``max_extrapolation`` × the largest n; ``predicted`` otherwise. The
backtest fits every size but the largest and reports the prediction at the largest minus what
was observed there (the mean over folds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from hetcv.seeding import derive_seed

LEVEL = 0.95
RATES = np.geomspace(0.05, 3.0, 240)
# Direction of each quantity's curve: +1 falls towards its asymptote (CV), −1 rises (metric).
DIRECTION = {"test_metric": -1, "raw_cv": 1, "debiased_cv": 1}
# A CV cannot fall below 0, nor a metric (accuracy, AUROC, 1 − NRMSE) rise above 1.
ASYMPTOTE_BOUND = {1: 0.0, -1: 1.0}
# The test inversion profiles the rate on every other grid point: 3.4 % apart is plenty there.
INVERSION_RATES = RATES[::2]
# Candidate n* of the test inversion, relative to the largest observed n.
_CANDIDATES = np.geomspace(1e-3, 1e3, 480)


@dataclass(frozen=True)
class PowerLaw:
    """y(n) = asymptote + direction · scale · n^(−rate).

    Attributes
    ----------
    asymptote, scale, rate : float
        a, b ≥ 0 and c > 0 of the law.
    direction : int
        +1 for a falling curve (CV), −1 for a rising one (metric).
    """

    asymptote: float
    scale: float
    rate: float
    direction: int

    def __call__(self, n: np.ndarray) -> np.ndarray:
        """Return the curve's value at each n."""
        return self.asymptote + self.direction * self.scale * np.asarray(n, float) ** -self.rate

    def n_star(self, target: float) -> float:
        """Return the n at which the curve meets ``target``; inf if it never does."""
        return float(_n_star(self.asymptote, self.scale, self.rate, target, self.direction))


def _n_star(a, b, c, target, direction):
    a, b, c = (np.asarray(x, dtype=np.float64) for x in (a, b, c))
    gap = direction * (target - a)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        reached = (b / gap) ** (1 / c)
    return np.where((gap > 0) & (b > 0), reached, np.inf)


def fit_many(
    n: np.ndarray, values: np.ndarray, weights: np.ndarray, direction: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares power laws for many rows of points at once.

    For each rate of the grid the law is linear in (a, b): the least squares with b ≥ 0 and
    the asymptote within its range (a CV ≥ 0, a metric ≤ 1; :data:`ASYMPTOTE_BOUND`) is
    solved in closed form, and the rate of lowest cost is kept.

    Parameters
    ----------
    n : ndarray of shape (n_points,)
        Sample size of each point.
    values, weights : ndarray of shape (n_rows, n_points)
        The points' values and weights, one data set per row.
    direction : {1, -1}
        Falling (CV) or rising (metric) curve.

    Returns
    -------
    asymptote, scale, rate : ndarray of shape (n_rows,)
        The best law of each row over the rate grid.
    """
    x = direction * np.asarray(n, float)[None, :] ** -RATES[:, None]  # (G, N)
    s0 = weights.sum(axis=1, keepdims=True)
    sx, sxx = weights @ x.T, weights @ (x.T**2)
    sy = (weights * values).sum(axis=1, keepdims=True)
    sxy, syy = (weights * values) @ x.T, (weights * values**2).sum(axis=1, keepdims=True)
    scale = np.maximum((s0 * sxy - sx * sy) / (s0 * sxx - sx**2), 0.0)
    asymptote = (sy - scale * sx) / s0
    bound = ASYMPTOTE_BOUND[direction]
    beyond = direction * (bound - asymptote) > 0
    asymptote = np.where(beyond, bound, asymptote)
    scale = np.where(beyond, np.maximum((sxy - bound * sx) / sxx, 0.0), scale)
    cost = (
        syy
        - 2 * asymptote * sy
        - 2 * scale * sxy
        + asymptote**2 * s0
        + 2 * asymptote * scale * sx
        + scale**2 * sxx
    )
    best = np.argmin(cost, axis=1)
    rows = np.arange(len(values))
    return asymptote[rows, best], scale[rows, best], RATES[best]


def fold_spread(n: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Smooth between-fold sd at each point: log s = α + β log n, fitted to the sizes' sds.

    Parameters
    ----------
    n : ndarray of shape (n_points,)
        Sample size of each point (at least two points at each of at least two sizes).
    values : ndarray of shape (n_rows, n_points)
        The points' values, one data set per row.

    Returns
    -------
    spread : ndarray of shape (n_rows, n_points)
        The modelled sd at each point's size (> 0).
    """
    sizes = np.unique(n)
    sd = np.stack([values[:, n == size].std(axis=1, ddof=1) for size in sizes], axis=1)
    floor = 1e-6 * np.abs(values).mean(axis=1, keepdims=True) + 1e-12
    log_sd, log_size = np.log(np.maximum(sd, floor)), np.log(sizes)
    centred = log_size - log_size.mean()
    slope = (log_sd - log_sd.mean(axis=1, keepdims=True)) @ centred / (centred @ centred)
    intercept = log_sd.mean(axis=1) - slope * log_size.mean()
    return np.exp(intercept[:, None] + slope[:, None] * np.log(n)[None, :])


def fit_curve(n: np.ndarray, values: np.ndarray, direction: int) -> PowerLaw:
    """Return the weighted least-squares power law of fold-level points.

    Parameters
    ----------
    n, values : ndarray of shape (n_points,)
        Sample size and value of each (fold, size) point.
    direction : {1, -1}
        Falling (CV) or rising (metric) curve.

    Returns
    -------
    PowerLaw
    """
    values = np.asarray(values, float)[None]
    weights = 1 / fold_spread(n, values) ** 2
    a, b, c = fit_many(n, values, weights, direction)
    return PowerLaw(float(a[0]), float(b[0]), float(c[0]), direction)


def n_star_interval(
    n: np.ndarray, values: np.ndarray, target: float, direction: int, level: float = LEVEL
) -> tuple[float, float]:
    """Return the confidence interval of n* by inverting an F test (see the module doc).

    Parameters
    ----------
    n, values : ndarray of shape (n_points,)
        Sample size and value of each (fold, size) point; at least four points.
    target : float
        The value the curve should reach.
    direction : {1, -1}
        Falling (CV) or rising (metric) curve.
    level : float, default=0.95
        Confidence level.

    Returns
    -------
    low, high : float
        Bounds on n; ``high`` is inf when arbitrarily large n* are not rejected, and both are
        inf when no finite n* is (the target is not reachable).
    """
    n = np.asarray(n, float)
    values = np.asarray(values, float)
    weights = 1 / fold_spread(n, values[None])[0] ** 2
    a, b, c = fit_many(n, values[None], weights[None], direction)
    free = float((weights * (values - (a + direction * b * n**-c)) ** 2).sum())
    candidates = _CANDIDATES * n.max()
    # Through (n*, target): y = target·z + a·(1 − z), z = (n*/n)^c, closed form in a.
    z = (candidates[:, None, None] / n[None, None, :]) ** INVERSION_RATES[None, :, None]
    rest = 1 - z
    residual = values - target * z
    a_fit = (weights * rest * residual).sum(-1) / (weights * rest**2).sum(-1)
    bound = ASYMPTOTE_BOUND[direction]
    a_fit = np.maximum(a_fit, bound) if direction == 1 else np.minimum(a_fit, bound)
    # The law needs b = (target − a)·n*^c·direction ≥ 0: a on the far side is no such curve.
    feasible = direction * (target - a_fit) >= 0
    constrained = (weights * (residual - a_fit[..., None] * rest) ** 2).sum(-1)
    constrained = np.where(feasible, constrained, np.inf).min(axis=1)
    points = len(values)
    statistic = (constrained - free) / (free / (points - 3))
    accepted = statistic <= scipy_stats.f.ppf(level, 1, points - 3)
    if not accepted.any():
        return (np.inf, np.inf)
    inside = candidates[accepted]
    high = np.inf if accepted[-1] else float(inside.max())
    return (float(inside.min()), high)


def curve_band(
    n: np.ndarray,
    values: np.ndarray,
    direction: int,
    grid: np.ndarray,
    n_boot: int,
    seed: int,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Return a pointwise band of the curve by a bootstrap over folds (for the figure).

    Parameters
    ----------
    n, values : ndarray of shape (n_points,)
        Sample size and value of each (fold, size) point.
    direction : {1, -1}
        Falling (CV) or rising (metric) curve.
    grid : ndarray of shape (n_grid,)
        Sizes at which to evaluate the band.
    n_boot : int
        Replicates; each resamples the folds of every size with replacement.
    seed : int
        Seed of the resamples.
    level : float, default=0.95
        The percentiles' nominal coverage (actual coverage: see the module doc).

    Returns
    -------
    low, high : ndarray of shape (n_grid,)
    """
    rng = np.random.default_rng(seed)
    n = np.asarray(n, float)
    resampled = np.empty((n_boot, len(values)))
    for size in np.unique(n):
        columns = np.flatnonzero(n == size)
        resampled[:, columns] = np.asarray(values)[rng.choice(columns, (n_boot, len(columns)))]
    weights = 1 / fold_spread(n, resampled) ** 2
    a, b, c = fit_many(n, resampled, weights, direction)
    curves = a[:, None] + direction * b[:, None] * grid[None, :] ** -c[:, None]
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(curves, [tail, 100 - tail], axis=0)
    return low, high


def backtest_error(n: np.ndarray, values: np.ndarray, direction: int) -> float:
    """Return the curve fitted without the largest size, at that size, minus its observed mean.

    Parameters
    ----------
    n, values : ndarray of shape (n_points,)
        Sample size and value of each (fold, size) point.
    direction : {1, -1}

    Returns
    -------
    error : float
        Predicted minus observed, in the quantity's units; NaN with fewer than four sizes
        (the fit without the largest needs three).
    """
    n, values = np.asarray(n, float), np.asarray(values, float)
    largest = n.max()
    if len(np.unique(n)) < 4:
        return np.nan
    earlier = n < largest
    curve = fit_curve(n[earlier], values[earlier], direction)
    return float(curve(largest) - values[n == largest].mean())


BAND_REPLICATES = 500
GRID_POINTS = 60
NUMBERS = ("n_star", "n_star_low", "n_star_high", "backtest_error", "asymptote", "scale")
NUMBERS += ("rate", "largest_n", "observed")
CURVE_LISTS = ("grid", "fit", "band_low", "band_high")


def observed_crossing(
    sizes: np.ndarray, means: np.ndarray, target: float, first: int, fitted: float
) -> float:
    """Return n* read off the observations where they meet the target.

    Between the last size that misses the target and the first that meets it, n* is
    interpolated linearly in log n; a curve can disagree with that bracket when the fold
    noise is large, and then the observations win. Met already at the smallest size: the
    fitted n*, capped there.

    Parameters
    ----------
    sizes, means : ndarray of shape (n_sizes,)
        The observed sizes, ascending, and the quantity's mean over folds at each.
    target : float
        The target.
    first : int
        Index of the first size whose mean meets the target.
    fitted : float
        The curve's n*.

    Returns
    -------
    n_star : float
    """
    if first == 0:
        return float(min(fitted, sizes[0]))
    before, after = means[first - 1], means[first]
    share = (before - target) / (before - after)
    return float(np.exp(np.log(sizes[first - 1]) + share * np.log(sizes[first] / sizes[first - 1])))


def plan_quantity(
    n: np.ndarray,
    values: np.ndarray,
    quantity: str,
    target: float,
    max_extrapolation: float,
    seed: int,
) -> dict:
    """Fit one quantity's curve and find the n that reaches ``target``, with its status.

    Parameters
    ----------
    n, values : ndarray of shape (n_points,)
        Sample size and value of each (fold, size) point, ideally two or more folds at each
        of three or more sizes.
    quantity : {"test_metric", "raw_cv", "debiased_cv"}
        Decides the curve's direction.
    target : float
        The value to reach (CV in %, or the metric).
    max_extrapolation : float
        Multiple of the largest n beyond which n* is not trusted.
    seed : int
        Seed of the figure band's bootstrap.

    Returns
    -------
    row : dict
        ``quantity, target, n_star, n_star_low, n_star_high, status, backtest_error,
        asymptote, scale, rate, largest_n``, ``observed`` (the mean at the largest n), and,
        as lists for the figure, ``grid`` (sizes from the smallest n to max_extrapolation ×
        the largest), ``fit``, ``band_low`` and ``band_high`` (95 % fold-bootstrap band).

    A law of three parameters needs three sizes: with fewer (or a size with one fold) the
    row says so in ``status`` and its numbers are NaN; such a study runs, it only cannot be
    planned.
    """
    n, values = np.asarray(n, float), np.asarray(values, float)
    finite = np.isfinite(values)
    n, values = n[finite], values[finite]
    sizes, counts = np.unique(n, return_counts=True)
    if len(sizes) < 3 or counts.min() < 2:
        return {
            **dict.fromkeys(NUMBERS, np.nan),
            **dict.fromkeys(CURVE_LISTS, []),
            "quantity": quantity,
            "target": float(target),
            "status": "not planned: needs two folds at three or more sample sizes",
        }
    direction = DIRECTION[quantity]
    curve = fit_curve(n, values, direction)
    low, high = n_star_interval(n, values, target, direction)
    means = np.array([values[n == size].mean() for size in sizes])
    met = direction * (target - means) >= 0
    largest = float(sizes.max())
    n_star = curve.n_star(target)
    if met.any():
        first = int(met.argmax())
        status = f"reached at n ≤ {int(sizes[first])}"
        n_star = observed_crossing(sizes, means, target, first, n_star)
        low, high = min(low, n_star), max(high, n_star)
    elif not np.isfinite(low):
        status = "not reachable"
    elif not np.isfinite(n_star):
        status = "levels off above the target"
    elif n_star > max_extrapolation * largest:
        status = f"beyond {max_extrapolation:g} × the largest n: not trusted"
    else:
        status = "predicted"
    grid = np.geomspace(sizes.min(), max_extrapolation * largest, GRID_POINTS)
    band_low, band_high = curve_band(n, values, direction, grid, BAND_REPLICATES, seed)
    return {
        "quantity": quantity,
        "target": float(target),
        "n_star": n_star,
        "n_star_low": low,
        "n_star_high": high,
        "status": status,
        "backtest_error": backtest_error(n, values, direction),
        "asymptote": curve.asymptote,
        "scale": curve.scale,
        "rate": curve.rate,
        "largest_n": largest,
        "observed": float(means[-1]),
        "grid": grid.tolist(),
        "fit": curve(grid).tolist(),
        "band_low": band_low.tolist(),
        "band_high": band_high.tolist(),
    }


def planning_table(
    fold_cv: pd.DataFrame,
    selected: dict,
    *,
    cv_target: float,
    metric_target: float | None,
    max_extrapolation: float,
    seed: int,
) -> pd.DataFrame:
    """One row per quantity and target of the selected clustering: n*, its interval, status.

    Parameters
    ----------
    fold_cv : DataFrame
        ``fold_cv.parquet``: per (algorithm, k, n, fold) ``cv``, ``debiased_cv`` and
        ``test_metric``.
    selected : dict
        The selected ``algorithm`` and ``k``.
    cv_target : float
        Target of the raw and the debiased CV, in %.
    metric_target : float or None
        Target of the test metric; None leaves the metric out.
    max_extrapolation : float
        See :func:`plan_quantity`.
    seed : int
        Seed of the bands; quantity q uses ``derive_seed(seed, q)``.

    Returns
    -------
    DataFrame
        :func:`plan_quantity` rows for ``raw_cv``, ``debiased_cv`` and, with a metric target,
        ``test_metric``.
    """
    rows = fold_cv[
        (fold_cv["algorithm"] == selected["algorithm"]) & (fold_cv["k"] == selected["k"])
    ]
    n = rows["n"].to_numpy(float)
    targets = {"raw_cv": ("cv", cv_target), "debiased_cv": ("debiased_cv", cv_target)}
    if metric_target is not None:
        targets["test_metric"] = ("test_metric", metric_target)
    return pd.DataFrame(
        [
            plan_quantity(
                n,
                rows[column].to_numpy(float),
                quantity,
                target,
                max_extrapolation,
                derive_seed(seed, quantity),
            )
            for quantity, (column, target) in targets.items()
        ]
    )


def run_plan_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The plan rule: learning curves and n* of the selected clustering of one dataset.

    Parameters
    ----------
    inputs : dict
        ``fold_cv`` (``summary/fold_cv.parquet``).
    outputs : dict
        ``planning`` (``summary/planning.parquet``).
    params : dict
        ``selected``, ``planning`` (``cv_target``, ``metric_target``, ``max_extrapolation``)
        and ``seed``.
    """
    from hetcv.io import write_parquet

    table = planning_table(
        pd.read_parquet(inputs["fold_cv"]),
        params["selected"],
        **params["planning"],
        seed=params["seed"],
    )
    write_parquet(table, outputs["planning"])
