"""How much data until heterogeneity stops hurting: learning curves and the n that reaches a target.

A quantity (the raw or debiased CV, or the test metric) is measured at every sample size and
fold. Folds of one size share their subsample and most of their training data, so a size, not
a fold, is the replicate: the curves are fitted to the sizes' means, each weighted by the
inverse of its variance,

    var(mean at n) = s(n)² · (1/F + 1/(F − 1)) + σ²_size,

where s(n) is a smooth model of the spread between folds (log s linear in log n, fitted to
each size's sd), 1/F + 1/(F − 1) is Nadeau & Bengio's (2003) correction for folds whose
models share training data, and σ²_size a random size effect estimated (method of moments)
from the power law's lack of fit.

Two families are fitted, in closed form (the power law for each rate on a grid):

- ``power``: y = a + d·b·n^(−c) (Figueroa et al. 2012), c in [0.05, 3], which levels off;
- ``loglinear``: y = a − d·b·log n, which does not;

with d = +1 for a falling CV, −1 for a rising metric, b ≥ 0, and for the power law a CV's
asymptote ≥ 0 and a metric's ≤ 1. A family *fits* when its lack-of-fit F test (the sizes'
means around the curve against the folds' spread within sizes) has p ≥ 0.05; with three
sizes only the log-linear family can be checked. n* is the power law's crossing of the
target. Its 95 % interval is the union, over the families that fit (both when neither does),
of the n* that an F test of "the curve passes through the target at n*" does not reject
(each family refitted under that constraint).

Status of a target: ``reached at n ≤ N`` when the mean at an observed size N already meets it
(n* then read off the observations, :func:`observed_crossing`); ``the curve does not fit: no
n*`` when the power law fails its lack-of-fit test; ``curve families disagree: no n*`` when a
family that fits puts n* outside the power law's own interval; ``not reachable`` when the
interval holds no finite n*; ``levels off above the target``; ``beyond X × the largest n: not
trusted``; ``predicted`` otherwise, with ``(fit not checked: 3 sizes)`` added when it could
not be checked. The interval is given whatever the status. The backtest fits every size but
the largest and reports the prediction at the largest minus what was observed there. The
validation of every number here is in docs/methods.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.curves import (
    DIRECTION,
    FAMILIES,
    FIT_LEVEL,
    PRIMARY,
    backtest_error,
    curve_band,
    fit_family,
    lack_of_fit,
    n_star_interval,
    size_means,
    size_variance,
)
from hetcv.io import write_parquet
from hetcv.seeding import derive_seed

BAND_REPLICATES = 500
GRID_POINTS = 60
NUMBERS = ("n_star", "n_star_low", "n_star_high", "backtest_error", "asymptote", "scale")
NUMBERS += ("rate", "largest_n", "observed", "lack_of_fit_p", "size_sd")
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
    """Fit one quantity's curves and find the n that reaches ``target``, with its status.

    Parameters
    ----------
    n, values : ndarray of shape (n_points,)
        Sample size and value of each (fold, size) point, ideally two or more folds at each
        of four or more sizes.
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
        ``quantity, target, n_star, n_star_low, n_star_high, status, families`` (those that
        fit), ``lack_of_fit_p`` (the power law's), ``size_sd`` (√σ²_size),
        ``backtest_error``, the power law's ``asymptote, scale, rate``, ``largest_n``,
        ``observed`` (the mean at the largest n), and, as lists for the figure, ``grid``
        (sizes from the smallest n to max_extrapolation × the largest), ``fit``,
        ``band_low`` and ``band_high`` (95 % fold-bootstrap band).

    A curve of three parameters needs three sizes: with fewer (or a size with one fold) the
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
            "families": "",
            "status": "not planned: needs two folds at three or more sample sizes",
        }
    direction = DIRECTION[quantity]
    means = size_means(n, values)
    plain = means.folds / means.spread**2
    lack = {f: lack_of_fit(means, fit_family(means, plain, direction, f)[1], f) for f in FAMILIES}
    sigma2 = size_variance(means, fit_family(means, plain, direction, PRIMARY)[1])
    weights = means.weights(sigma2)
    curves = {f: fit_family(means, weights, direction, f)[0] for f in FAMILIES}
    intervals = {f: n_star_interval(means, weights, target, direction, f) for f in FAMILIES}
    fits = [f for f in FAMILIES if not lack[f] < FIT_LEVEL]  # NaN (unchecked) counts as fit
    low, high = (
        min(intervals[f][0] for f in fits or FAMILIES),
        max(intervals[f][1] for f in fits or FAMILIES),
    )
    curve = curves[PRIMARY]
    n_star = curve.n_star(target)
    met = direction * (target - means.means) >= 0
    largest = float(sizes.max())
    own_low, own_high = intervals[PRIMARY]
    disagree = [
        f for f in fits if f != PRIMARY and not own_low <= curves[f].n_star(target) <= own_high
    ]
    if met.any():
        first = int(met.argmax())
        status = f"reached at n ≤ {int(sizes[first])}"
        n_star = observed_crossing(sizes, means.means, target, first, n_star)
        low, high = min(low, n_star), max(high, n_star)
    elif lack[PRIMARY] < FIT_LEVEL:
        status, n_star = "the curve does not fit: no n*", np.nan
    elif disagree:
        status, n_star = f"curve families disagree ({', '.join(disagree)}): no n*", np.nan
    elif not np.isfinite(own_low):
        status = "not reachable"
    elif not np.isfinite(n_star):
        status = "levels off above the target"
    elif n_star > max_extrapolation * largest:
        status = f"beyond {max_extrapolation:g} × the largest n: not trusted"
    else:
        status = "predicted"
    if np.isnan(lack[PRIMARY]) and not met.any():
        status += f" (fit not checked: {len(sizes)} sizes)"
    grid = np.geomspace(sizes.min(), max_extrapolation * largest, GRID_POINTS)
    band_low, band_high = curve_band(n, values, direction, grid, BAND_REPLICATES, seed)
    return {
        "quantity": quantity,
        "target": float(target),
        "n_star": n_star,
        "n_star_low": low,
        "n_star_high": high,
        "status": status,
        "families": ", ".join(fits),
        "lack_of_fit_p": lack[PRIMARY],
        "size_sd": float(np.sqrt(sigma2)),
        "backtest_error": backtest_error(n, values, direction),
        "asymptote": curve.asymptote,
        "scale": curve.scale,
        "rate": curve.rate,
        "largest_n": largest,
        "observed": float(means.means[-1]),
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

    table = planning_table(
        pd.read_parquet(inputs["fold_cv"]),
        params["selected"],
        **params["planning"],
        seed=params["seed"],
    )
    write_parquet(table, outputs["planning"])
