"""One sample size's held-out folds and their repeated partitions: the input of every statistic.

:class:`FoldPartitions` is one held-out fold clustered R times, :class:`SampleSize` every
fold of one sample size with what turns per-sample outcomes into cluster metrics. The helpers
evaluate a metric's per-cluster sums for every repeat at once under a batch of sample weights
(a bootstrap resample, a permutation, a parametric draw), so that a resample of a fold is
shared by all its repeats at no extra cost.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from hetcv.errors import HetcvError
from hetcv.metrics import CLASSIFICATION_METRICS, ClusterMetric
from hetcv.stats import coefficient_of_variation

TASKS = ("classification", "regression", "score")
# Rows of a (rows, m) matrix of weights, permuted scores or draws held at once (16 MiB each).
CHUNK_ELEMENTS = 2**21


@dataclass(frozen=True)
class FoldPartitions:
    """One held-out fold of one sample size, clustered R times.

    Attributes
    ----------
    score : ndarray of shape (n_samples,)
        Per-sample outcome of the metric, float64 (:mod:`hetcv.metrics`): ``correct`` 0/1
        (accuracy, balanced accuracy), ``sq_error`` (1 − NRMSE), or the positive class's
        probability (AUROC).
    labels : ndarray of shape (n_repeats, n_samples)
        Integer cluster, 0..k-1, of each sample in each repeat; cluster numbers are aligned
        across repeats.
    groups : ndarray of shape (n_samples,) or None, default=None
        Class of each sample; if given, permutations shuffle scores only within a class.
    confidence : ndarray of shape (n_samples,) or None, default=None
        The model's own probability, in [0, 1], of its prediction (its largest class
        probability), for :func:`hetcv.calibration.calibration_test`.
    classes : ndarray of shape (n_samples,) or None, default=None
        Class code of each sample, 0..C-1 (1 = positive for AUROC); needed by balanced
        accuracy and AUROC.
    correct : ndarray of shape (n_samples,) or None, default=None
        0/1 correctness, for the calibrated test where ``score`` is not it (AUROC).
    predicted : ndarray of shape (n_samples,) or None, default=None
        Class code of each prediction, for the calibrated test.
    """

    score: np.ndarray  # (m,) float64: the metric's per-sample outcome
    labels: np.ndarray  # (R, m) int, cluster of each sample in each repeat, 0..k-1
    groups: np.ndarray | None = None  # (m,) class of each sample, for permutations within class
    confidence: np.ndarray | None = None  # (m,) the model's probability of its prediction
    classes: np.ndarray | None = None  # (m,) class codes, for balanced accuracy and AUROC
    correct: np.ndarray | None = None  # (m,) 0/1, for the calibrated test under AUROC
    predicted: np.ndarray | None = None  # (m,) class code of each prediction


@dataclass(frozen=True)
class SampleSize:
    """Every fold of one sample size, with what turns scores into cluster metrics.

    Validated on construction.

    Attributes
    ----------
    folds : list of FoldPartitions
        The held-out folds, all with the same number of repeats.
    k : int
        Number of clusters of every partition, at least 2.
    task : {"classification", "regression", "score"}
        The dataset's task.
    normaliser : float, default=1.0
        NRMSE normaliser of the dataset, > 0; 1.0 for classification.
    metric : {"accuracy", "balanced_accuracy", "auroc"} or None, default=None
        The classification metric; None means accuracy. Regression always uses 1 − NRMSE.

    Raises
    ------
    HetcvError
        If ``task``, ``k``, ``metric`` or ``normaliser`` is invalid, there are no folds, the
        folds differ in their number of repeats, or a fold's arrays have wrong shapes or
        values.
    """

    folds: list[FoldPartitions]
    k: int
    task: str
    normaliser: float = 1.0  # NRMSE normaliser; 1.0 for classification
    metric: str | None = None  # classification metric; None: accuracy

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise HetcvError(f"task must be one of {TASKS}, not {self.task!r}")
        if self.task == "classification" and self.metric not in (None, *CLASSIFICATION_METRICS):
            raise HetcvError(f"metric must be one of {CLASSIFICATION_METRICS}, not {self.metric!r}")
        if self.k < 2:
            raise HetcvError(f"k must be at least 2, not {self.k}")
        if not self.normaliser > 0:
            raise HetcvError(f"normaliser must be > 0, not {self.normaliser}")
        if not self.folds:
            raise HetcvError("a sample size needs at least one fold")
        repeats = {np.shape(fold.labels)[0] for fold in self.folds}
        if len(repeats) != 1:
            raise HetcvError(f"every fold needs the same number of repeats, not {sorted(repeats)}")
        for index, fold in enumerate(self.folds):
            check_fold(fold, self.k, self.metric_name, f"fold {index}")

    @property
    def n_repeats(self) -> int:
        """int : Number of repeats R, the same in every fold."""
        return int(np.shape(self.folds[0].labels)[0])

    @property
    def metric_name(self) -> str:
        """str : The metric's name in :data:`hetcv.metrics.METRICS`."""
        if self.task == "regression":
            return "nrmse"
        return "mean_score" if self.task == "score" else (self.metric or "accuracy")

    @property
    def cluster_metric(self) -> ClusterMetric:
        """ClusterMetric : The metric, over as many classes as the folds' codes reach."""
        codes = [fold.classes for fold in self.folds if fold.classes is not None]
        n_classes = max((int(np.max(c)) + 1 for c in codes), default=2)
        return ClusterMetric(self.metric_name, self.normaliser, tuple(range(max(n_classes, 2))))


def check_fold(fold: FoldPartitions, k: int, metric: str, name: str) -> None:
    score, labels = np.asarray(fold.score), np.asarray(fold.labels)
    if score.ndim != 1 or labels.ndim != 2 or labels.shape[1] != len(score):
        raise HetcvError(
            f"{name}: score must be (m,) and labels (R, m), not {score.shape} and {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= k:
        raise HetcvError(f"{name}: labels must be integers in 0..{k - 1}")
    if not np.all(np.isfinite(score)) or (metric == "nrmse" and score.min() < 0):
        raise HetcvError(f"{name}: scores must be finite (and squared errors >= 0)")
    if metric in ("accuracy", "balanced_accuracy") and not np.all((score == 0) | (score == 1)):
        raise HetcvError(f"{name}: {metric} scores must be 0 or 1")
    for field in ("groups", "confidence", "classes", "correct", "predicted"):
        value = getattr(fold, field)
        if value is not None and np.shape(value) != score.shape:
            raise HetcvError(f"{name}: {field} must be (m,) = {score.shape}")
    if fold.confidence is not None and not np.all(
        (np.asarray(fold.confidence) >= 0) & (np.asarray(fold.confidence) <= 1)
    ):
        raise HetcvError(f"{name}: confidence must lie in [0, 1]")
    if metric in ("balanced_accuracy", "auroc"):
        classes = fold.classes
        highest = 1 if metric == "auroc" else np.inf
        if classes is None or not np.issubdtype(np.asarray(classes).dtype, np.integer):
            raise HetcvError(f"{name}: {metric} needs integer class codes (classes)")
        if np.min(classes) < 0 or np.max(classes) > highest:
            raise HetcvError(f"{name}: class codes must lie in 0..{highest}")


def membership_matrix(labels: np.ndarray, k: int) -> np.ndarray:
    """``(m, R·k)`` 0/1 matrix; column ``r·k + c`` marks the samples of cluster c in repeat r.

    A metric's sums over it (:meth:`hetcv.metrics.ClusterMetric.sums`) give every repeat's
    clusters at once, so a resample, permutation or draw of a fold is shared by all its repeats
    at no extra cost.
    """
    labels = np.asarray(labels)
    repeats, m = labels.shape
    out = np.zeros((m, repeats * k))
    out[np.arange(m)[None, :], np.arange(repeats)[:, None] * k + labels] = 1.0
    return out


def chunks(total: int, m: int) -> list[tuple[int, int]]:
    size = max(1, CHUNK_ELEMENTS // m)
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def fold_sums(
    sample: SampleSize,
    fold: FoldPartitions,
    indicator: np.ndarray,
    weights: np.ndarray,
    outcome: np.ndarray | None = None,
) -> np.ndarray:
    """The metric's sums ``(S, B, R, k)`` of one fold under ``(B, m)`` weights.

    ``outcome`` ``(B, m)`` replaces the fold's scores (permutations, draws).
    """
    sums = sample.cluster_metric.sums(
        fold.score if outcome is None else outcome, weights, indicator, fold.classes
    )
    return sums.reshape(len(sums), len(weights), -1, sample.k)


def run_statistics(
    metric: np.ndarray, variance: np.ndarray, expected: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per run, over the clusters with a metric: raw CV, spread, noise and mean metric.

    ``spread`` is the sample variance (ddof=1) of the cluster metrics and ``noise`` the mean of
    their sampling variances. For independent y_c = θ_c + e_c with var(e_c) = v_c,
    E[s²(y)] = s²(θ) + mean(v), so spread − noise is the method-of-moments τ² (untruncated).
    A run that lost a cluster that ``expected`` (the estimate's defined clusters) holds, as
    a bootstrap resample can, is NaN throughout.
    """
    lost = np.any(np.isnan(metric) & expected, axis=-1)
    with warnings.catch_warnings():
        # Runs with fewer than two clusters give NaN, which callers count or leave out.
        warnings.simplefilter("ignore", RuntimeWarning)
        statistics = (
            coefficient_of_variation(metric),
            np.nanvar(metric, axis=-1, ddof=1),
            np.nanmean(variance, axis=-1),
            np.nanmean(metric, axis=-1),
        )
    return tuple(np.where(lost, np.nan, value) for value in statistics)


def fold_seeds(seed: int, n: int) -> list[np.random.SeedSequence]:
    """Independent seed sequences, one per fold (and purpose): ``SeedSequence(seed).spawn(n)``.

    Fold f's draws then do not depend on the other folds' sizes.
    """
    return np.random.SeedSequence(seed).spawn(n)


def resample_counts(rng: np.random.Generator, rows: int, m: int) -> np.ndarray:
    """``(rows, m)`` multinomial counts: how often each sample is drawn in each resample.

    Row b is the bincount of ``rng.integers(0, m, size=(rows, m))[b]``.
    """
    draws = rng.integers(0, m, size=(rows, m)) + m * np.arange(rows)[:, None]
    return np.bincount(draws.ravel(), minlength=rows * m).reshape(rows, m).astype(np.float64)


@dataclass(frozen=True)
class FoldBootstrap:
    """Every run's cluster metrics, observed and in each fold-bootstrap replicate.

    Attributes
    ----------
    sums : list of ndarray of shape (n_sums, n_repeats, k)
        Each fold's observed sufficient sums (:meth:`hetcv.metrics.ClusterMetric.sums`).
    metric, variance : ndarray of shape (n_folds, n_repeats, k)
        Observed cluster metrics and their sampling variances; NaN where undefined.
    boot_metric, boot_variance : ndarray of shape (n_boot, n_folds, n_repeats, k)
        The same in every replicate.
    """

    sums: list[np.ndarray]
    metric: np.ndarray
    variance: np.ndarray
    boot_metric: np.ndarray
    boot_variance: np.ndarray


def fold_bootstrap(sample: SampleSize, n_boot: int, seed: int) -> FoldBootstrap:
    """Resample every fold's held-out samples once per replicate, for every repeat at once.

    Replicate b of fold f is row b of ``rng.integers(0, m, size=(rows, m))``, drawn in chunks
    of rows from ``SeedSequence(seed).spawn(F)[f]``, and is reused for every repeat's
    partition of the fold, so that all runs are recomputed as the estimate is.

    Parameters
    ----------
    sample : SampleSize
    n_boot : int
        Number of replicates.
    seed : int

    Returns
    -------
    FoldBootstrap
    """
    k, cluster_metric = sample.k, sample.cluster_metric
    shape = (len(sample.folds), sample.n_repeats, k)
    metric, variance = np.empty(shape), np.empty(shape)
    boot_metric, boot_variance = np.empty((n_boot, *shape)), np.empty((n_boot, *shape))
    sums = []
    for f, (fold, fold_seed) in enumerate(
        zip(sample.folds, fold_seeds(seed, shape[0]), strict=True)
    ):
        m = len(fold.score)
        members = membership_matrix(fold.labels, k)
        sums.append(fold_sums(sample, fold, members, np.ones((1, m)))[:, 0])
        metric[f], variance[f] = cluster_metric.value_and_variance(sums[-1])
        rng = np.random.default_rng(fold_seed)
        for start, stop in chunks(n_boot, m):
            counts = resample_counts(rng, stop - start, m)
            boot_metric[start:stop, f], boot_variance[start:stop, f] = (
                cluster_metric.value_and_variance(fold_sums(sample, fold, members, counts))
            )
    return FoldBootstrap(sums, metric, variance, boot_metric, boot_variance)
