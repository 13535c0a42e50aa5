"""Learning curves over sample sizes: the power-law and log-linear families, fitted, and the n
at which they cross a target, with its interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95


FIT_LEVEL = 0.05  # a family whose lack-of-fit p is below this does not fit


FAMILIES = ("power", "loglinear")


PRIMARY = "power"


PARAMETERS = {"power": 3, "loglinear": 2}


RATES = np.geomspace(0.05, 3.0, 240)


# Direction of each quantity's curve: +1 falls towards its asymptote (CV), −1 rises (metric).
DIRECTION = {"test_metric": -1, "raw_cv": 1, "debiased_cv": 1}


# A CV cannot fall below 0, nor a metric (accuracy, AUROC, 1 − NRMSE) rise above 1.
ASYMPTOTE_BOUND = {1: 0.0, -1: 1.0}


# The test inversion profiles the rate on every other grid point: 3.4 % apart is plenty there.
INVERSION_RATES = RATES[::2]


# Candidate n* of the test inversion, relative to the largest observed n.
_CANDIDATES = np.geomspace(1e-3, 1e3, 480)


def _basis(family: str, n: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """``(G, N)`` x of y = a + d·b·x for each rate (the log-linear family: one row)."""
    n = np.asarray(n, float)
    if family == "power":
        return n[None, :] ** -rate[:, None]
    return -np.log(n)[None, :]


@dataclass(frozen=True)
class Curve:
    """y(n) = asymptote + direction · scale · x(n) of one family (x = n^(−rate) or −log n).

    Attributes
    ----------
    family : {"power", "loglinear"}
    asymptote, scale : float
        a and b ≥ 0 (the log-linear family has no asymptote: a is its value at n = 1).
    rate : float
        c of the power law; NaN for the log-linear family.
    direction : int
        +1 for a falling curve (CV), −1 for a rising one (metric).
    """

    family: str
    asymptote: float
    scale: float
    rate: float
    direction: int

    def __call__(self, n: np.ndarray) -> np.ndarray:
        """Return the curve's value at each n."""
        x = _basis(self.family, np.atleast_1d(n), np.array([self.rate]))[0]
        return self.asymptote + self.direction * self.scale * x

    def n_star(self, target: float) -> float:
        """Return the n at which the curve meets ``target``; inf if it never does."""
        a, b, d = self.asymptote, self.scale, self.direction
        gap = d * (target - a)  # > 0: the target lies towards the curve's limit from a
        if b <= 0:
            return np.inf
        if self.family == "loglinear":
            return float(np.exp(-gap / b))
        if gap <= 0:
            return np.inf
        return float((b / gap) ** (1 / self.rate))


def fit_many(
    n: np.ndarray, values: np.ndarray, weights: np.ndarray, direction: int, family: str = "power"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares curves of one family for many rows of points at once.

    For each rate of the grid the power law is linear in (a, b): the least squares with
    b ≥ 0 and the asymptote within its range (:data:`ASYMPTOTE_BOUND`) is solved in closed
    form, and the rate of lowest cost is kept; the log-linear family is one such fit.

    Parameters
    ----------
    n : ndarray of shape (n_points,)
        Sample size of each point.
    values, weights : ndarray of shape (n_rows, n_points)
        The points' values and weights, one data set per row.
    direction : {1, -1}
        Falling (CV) or rising (metric) curve.
    family : str, default="power"
        One of :data:`FAMILIES`.

    Returns
    -------
    asymptote, scale, rate, cost : ndarray of shape (n_rows,)
        The best curve of each row (rate NaN for the log-linear family) and its weighted
        residual sum of squares.
    """
    n = np.asarray(n, float)
    grid = np.array([np.nan]) if family == "loglinear" else RATES
    x = direction * _basis(family, n, grid)  # (G, N)
    s0 = weights.sum(axis=1, keepdims=True)
    sx, sxx = weights @ x.T, weights @ (x.T**2)
    sy = (weights * values).sum(axis=1, keepdims=True)
    sxy, syy = (weights * values) @ x.T, (weights * values**2).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.maximum((s0 * sxy - sx * sy) / (s0 * sxx - sx**2), 0.0)
    scale = np.nan_to_num(scale)
    asymptote = (sy - scale * sx) / s0
    if family != "loglinear":
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
    return (
        asymptote[rows, best],
        scale[rows, best],
        grid[best],
        np.maximum(cost[rows, best], 0.0),
    )


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


@dataclass(frozen=True)
class SizeMeans:
    """The sizes' means and what their variances are made of; from `size_means`.

    Attributes
    ----------
    sizes, means, folds : ndarray of shape (n_sizes,)
        Each size, its mean over folds and its number of folds.
    spread : ndarray of shape (n_sizes,)
        The smooth between-fold sd s(n) at each size (:func:`fold_spread`).
    pure_error : float
        Σ (y − mean of its size)² / s(n)², over every point: the within-size scatter.
    pure_df : int
        Its degrees of freedom: points − sizes.
    """

    sizes: np.ndarray
    means: np.ndarray
    folds: np.ndarray
    spread: np.ndarray
    pure_error: float
    pure_df: int

    def weights(self, size_variance: float = 0.0) -> np.ndarray:
        """1 / var(mean) of each size, with Nadeau & Bengio's correction (module doc)."""
        inflation = 1 / self.folds + 1 / np.maximum(self.folds - 1, 1)
        return 1 / (self.spread**2 * inflation + size_variance)

    @property
    def scatter(self) -> float:
        """Within-size mean square of the standardised points (1 when s(n) is right)."""
        return self.pure_error / self.pure_df


def size_means(n: np.ndarray, values: np.ndarray) -> SizeMeans:
    """The sizes' means of fold-level points and their within-size scatter.

    Parameters
    ----------
    n, values : ndarray of shape (n_points,)
        Sample size and value of each (fold, size) point; two or more folds at each size.

    Returns
    -------
    SizeMeans
    """
    n, values = np.asarray(n, float), np.asarray(values, float)
    sizes, index, folds = np.unique(n, return_inverse=True, return_counts=True)
    means = np.bincount(index, weights=values) / folds
    spread = fold_spread(n, values[None])[0]
    pure = float((((values - means[index]) / spread) ** 2).sum())
    first = np.unique(index, return_index=True)[1]
    return SizeMeans(sizes, means, folds, spread[first], pure, len(values) - len(sizes))


def fit_family(means: SizeMeans, weights: np.ndarray, direction: int, family: str) -> tuple:
    """One family's weighted fit to the sizes' means: its :class:`Curve` and its cost."""
    a, b, c, cost = fit_many(means.sizes, means.means[None], weights[None], direction, family)
    return Curve(family, float(a[0]), float(b[0]), float(c[0]), direction), float(cost[0])


def lack_of_fit(means: SizeMeans, cost: float, family: str) -> float:
    """p-value of the F test of a family's lack of fit; NaN where it cannot be checked.

    ``cost`` is the weighted residual sum of squares of the family's fit to the means with
    weights ``F / s(n)²`` (no correction, no size effect): under the family, with folds as
    replicates, it is χ² on (sizes − parameters) degrees of freedom times the scatter that
    the pure error estimates.
    """
    df = len(means.sizes) - PARAMETERS[family]
    if df <= 0 or means.pure_df <= 0 or means.scatter <= 0:
        return np.nan
    statistic = cost / df / means.scatter
    return float(scipy_stats.f.sf(statistic, df, means.pure_df))


def size_variance(means: SizeMeans, cost: float) -> float:
    """σ²_size, the random size effect, by the method of moments from the power law's fit.

    With w = F/s(n)², the lack-of-fit sum ``cost`` has expectation (S − 3) + σ²·(Σw −
    Σw²/Σw) roughly (DerSimonian & Laird's), so σ² = max(0, (cost − (S − 3)) / (Σw − Σw²/Σw)).
    """
    df = len(means.sizes) - PARAMETERS[PRIMARY]
    if df <= 0:
        return 0.0
    w = means.folds / means.spread**2
    return float(max(0.0, (cost - df * means.scatter) / (w.sum() - (w**2).sum() / w.sum())))


def n_star_interval(
    means: SizeMeans,
    weights: np.ndarray,
    target: float,
    direction: int,
    family: str = PRIMARY,
    level: float = LEVEL,
) -> tuple[float, float]:
    """The n* that an F test of "the curve passes through (n*, target)" does not reject.

    For each candidate n* the family is refitted under that constraint (closed form in the
    remaining linear parameter, for each rate) and the rise in the weighted residual sum of
    squares compared with F(1, pure df) times the within-size scatter.

    Parameters
    ----------
    means : SizeMeans
    weights : ndarray of shape (n_sizes,)
        The sizes' weights (:meth:`SizeMeans.weights`).
    target : float
    direction : {1, -1}
    family : str, default="power"
    level : float, default=0.95

    Returns
    -------
    low, high : float
        Bounds on n; ``high`` is inf when arbitrarily large n* are not rejected, and both are
        inf when no finite n* is (the target is not reachable).
    """
    n, y = means.sizes, means.means
    _, free = fit_family(means, weights, direction, family)
    candidates = _CANDIDATES * n.max()
    if family == "loglinear":
        # y − target = −d·b·(log n − log n*): one parameter b ≥ 0.
        t = -direction * (np.log(n)[None, :] - np.log(candidates)[:, None])
        r = y[None, :] - target
        b = np.maximum((t * r * weights).sum(1) / (t * t * weights).sum(1), 0.0)
        constrained = ((r - b[:, None] * t) ** 2 * weights).sum(1)
    else:
        # Through (n*, target): y = target·z + a·(1 − z), z = (n*/n)^c, closed form in a.
        z = (candidates[:, None, None] / n[None, None, :]) ** INVERSION_RATES[None, :, None]
        rest = 1 - z
        residual = y - target * z
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            a = (weights * rest * residual).sum(-1) / (weights * rest**2).sum(-1)
            bound = ASYMPTOTE_BOUND[direction]
            a = np.maximum(a, bound) if direction == 1 else np.minimum(a, bound)
            # The curve needs b ≥ 0: an asymptote on the far side of the target is none.
            feasible = (direction * (target - a) >= 0) & np.isfinite(a)
            cost = (weights * (residual - a[..., None] * rest) ** 2).sum(-1)
        constrained = np.where(feasible & np.isfinite(cost), cost, np.inf).min(axis=1)
    critical = scipy_stats.f.ppf(level, 1, max(means.pure_df, 1)) * max(means.scatter, 1e-12)
    accepted = constrained - free <= critical
    if not accepted.any():
        return (np.inf, np.inf)
    inside = candidates[accepted]
    return (float(inside.min()), np.inf if accepted[-1] else float(inside.max()))


def curve_band(
    n: np.ndarray,
    values: np.ndarray,
    direction: int,
    grid: np.ndarray,
    n_boot: int,
    seed: int,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Return a pointwise band of the power law by a bootstrap over folds (for the figure).

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
        The percentiles' nominal coverage (actual coverage: docs/methods.md).

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
    a, b, c, _ = fit_many(n, resampled, weights, direction)
    curves = a[:, None] + direction * b[:, None] * grid[None, :] ** -c[:, None]
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(curves, [tail, 100 - tail], axis=0)
    return low, high


def fit_curve(n: np.ndarray, values: np.ndarray, direction: int) -> Curve:
    """The power law fitted to the sizes' means of fold-level points (weights of the module doc).

    Parameters
    ----------
    n, values : ndarray of shape (n_points,)
    direction : {1, -1}

    Returns
    -------
    Curve
    """
    means = size_means(n, values)
    return fit_family(means, means.weights(), direction, PRIMARY)[0]


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
    return float(curve(largest)[0] - values[n == largest].mean())
