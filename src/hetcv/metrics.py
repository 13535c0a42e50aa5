"""Per-cluster metrics: how per-sample outcomes become a cluster's metric and its variance.

Every statistic of hetcv evaluates clusters under sample weights: 1 for the data as observed,
multinomial counts for a bootstrap resample, 0/1 for one half of a fold. A metric therefore
works from weighted per-cluster sums, its sufficient statistics, computed for a whole batch of
weight rows (and, for permutations, of outcome rows) at once; a weight of w counts a sample w
times, so every metric below equals the unweighted one on the data with each sample repeated.

=====================  ========================  ==============================================
metric                 per-sample outcome        per-cluster value
=====================  ========================  ==============================================
``accuracy``           ``correct`` (0/1)         mean(correct), the paper's
``balanced_accuracy``  ``correct`` (0/1)         mean, over the classes present in the
                                                 cluster, of the class's recall
``auroc``              positive-class            P(a positive scores above a negative), ties
                       probability               counted ½ (Mann–Whitney); binary tasks only
``nrmse``              ``sq_error``              1 − sqrt(mean(sq_error)) / normaliser
``mean_score``         ``score`` (e.g. Dice)     mean(score): the ``score`` task's
=====================  ========================  ==============================================

A cluster's metric is NaN where it is undefined: empty, or, for AUROC, holding one class only
(:meth:`ClusterMetric.undefined` tells which); callers report such clusters, never drop them
silently. A balanced accuracy over one class is that class's recall, and defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hetcv.errors import HetcvError

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "auroc")
METRICS = (*CLASSIFICATION_METRICS, "nrmse", "mean_score")
LABEL = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "auroc": "AUROC",
    "nrmse": "1 − NRMSE",
    "mean_score": "mean score",
}
# Elements of one (rows, cluster members) block of the AUROC's running sums (16 MiB each).
AUROC_BLOCK_ELEMENTS = 2**21


def nrmse_normaliser(targets: np.ndarray, kind: str) -> float:
    """Return the NRMSE normaliser of a dataset's targets.

    Taken over the whole dataset, so that every cluster of a dataset shares one scale.

    Parameters
    ----------
    targets : ndarray of shape (n_samples,)
        Regression targets of the whole dataset.
    kind : {"range", "mean", "std"}
        ``range`` = max − min, ``mean``, or ``std`` (sample sd, ddof=1) of the targets.

    Returns
    -------
    normaliser : float
        The chosen statistic of the targets, > 0.

    Raises
    ------
    HetcvError
        If that statistic is not > 0 (e.g. constant targets).
    """
    targets = np.asarray(targets, dtype=np.float64)
    value = {
        "range": lambda: targets.max() - targets.min(),
        "mean": lambda: targets.mean(),
        "std": lambda: targets.std(ddof=1),
    }[kind]()
    if not value > 0:
        raise HetcvError(f"metric.nrmse_normalizer: {kind} of the targets is {value}, not > 0")
    return float(value)


def dataset_metric(name: str, targets: np.ndarray, nrmse_normalizer: str | None) -> ClusterMetric:
    """Return a dataset's metric, with what it takes from all the dataset's targets.

    Parameters
    ----------
    name : str
        One of :data:`METRICS` (see :func:`metric_name`).
    targets : ndarray of shape (n_samples,)
        Every target of the dataset (its manifest's), not one fold's: the NRMSE normaliser
        and the class list are the dataset's.
    nrmse_normalizer : {"range", "mean", "std"} or None
        The normaliser's kind (regression only).

    Returns
    -------
    ClusterMetric

    Raises
    ------
    HetcvError
        If the normaliser is not positive, or AUROC is asked of a task without two classes.
    """
    if name == "nrmse":
        return ClusterMetric(name, normaliser=nrmse_normaliser(targets, nrmse_normalizer))
    if name == "mean_score":
        return ClusterMetric(name)
    return ClusterMetric(name, classes=tuple(np.unique(targets).tolist()))


def metric_name(task: str, classification_metric: str) -> str:
    """Return the metric a dataset is measured by: the configured one, or ``nrmse``.

    Parameters
    ----------
    task : {"classification", "regression", "score"}
        The dataset's task.
    classification_metric : {"accuracy", "balanced_accuracy", "auroc"}
        The study's ``metric.classification``.

    Returns
    -------
    name : str
        ``classification_metric`` for classification, ``"nrmse"`` for regression,
        ``"mean_score"`` for a per-sample score.
    """
    return {"regression": "nrmse", "score": "mean_score"}.get(task, classification_metric)


def outcome_column(name: str) -> str:
    """Return the held-out features column that holds the metric's per-sample outcome.

    Parameters
    ----------
    name : str
        One of :data:`METRICS`.

    Returns
    -------
    column : str
        ``correct``, ``sq_error``, ``score``, or ``probability_1`` (the second sorted class,
        the positive one) for AUROC.
    """
    return {"nrmse": "sq_error", "auroc": "probability_1", "mean_score": "score"}.get(
        name, "correct"
    )


@dataclass(frozen=True)
class ClusterMetric:
    """A per-cluster metric evaluated from weighted per-cluster sums.

    Attributes
    ----------
    name : str
        One of :data:`METRICS`.
    normaliser : float, default=1.0
        NRMSE normaliser of the dataset (> 0); ignored by the classification metrics.
    classes : tuple, default=()
        The dataset's sorted classes; a sample's class code is its index here (AUROC: the
        second is the positive class). Needed by :meth:`outcome` for balanced accuracy and
        AUROC; ``(0, 1)`` is assumed where it is empty.

    Raises
    ------
    HetcvError
        If the name is unknown, the normaliser not positive, or AUROC is asked of other than
        two classes.
    """

    name: str
    normaliser: float = 1.0
    classes: tuple = ()

    def __post_init__(self) -> None:
        if self.name not in METRICS:
            raise HetcvError(f"metric must be one of {METRICS}, not {self.name!r}")
        if not self.normaliser > 0:
            raise HetcvError(f"normaliser must be > 0, not {self.normaliser}")
        if self.name == "auroc" and self.n_classes != 2:
            raise HetcvError(
                f"metric.classification: auroc needs a binary task, not {self.n_classes} classes"
            )

    @property
    def n_classes(self) -> int:
        """int : Number of classes; 2 where ``classes`` is not given."""
        return len(self.classes) or 2

    @property
    def label(self) -> str:
        """str : How tables and figures name the metric."""
        return LABEL[self.name]

    @property
    def uses_classes(self) -> bool:
        """bool : Whether the metric needs each sample's class (balanced accuracy, AUROC)."""
        return self.name in ("balanced_accuracy", "auroc")

    def outcome(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the per-sample outcome and class codes of held-out rows.

        Parameters
        ----------
        features : DataFrame
            Held-out rows: ``target`` and the :func:`outcome_column`.

        Returns
        -------
        outcome : ndarray of shape (n_samples,)
            Float64 outcome.
        classes : ndarray of shape (n_samples,) or None
            Index of each target in :attr:`classes`, for the metrics that use classes.

        Raises
        ------
        HetcvError
            If a target is not one of the dataset's classes.
        """
        outcome = features[outcome_column(self.name)].to_numpy(dtype=np.float64)
        if not self.uses_classes:
            return outcome, None
        classes = np.asarray(self.classes or (0, 1))
        target = features["target"].to_numpy()
        codes = np.clip(np.searchsorted(classes, target), 0, len(classes) - 1)
        if not np.all(classes[codes] == target):
            raise HetcvError(f"a held-out target is not one of the classes {classes.tolist()}")
        return outcome, codes

    def sums(
        self,
        outcome: np.ndarray,
        weights: np.ndarray,
        indicator: np.ndarray,
        classes: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return the weighted sufficient sums of every indicator column, for every row.

        Parameters
        ----------
        outcome : ndarray of shape (n_samples,) or (n_rows, n_samples)
            Per-sample outcome (see the module doc); one row per weight row for permutations.
        weights : ndarray of shape (n_rows, n_samples)
            Non-negative sample weights, one row per evaluation.
        indicator : ndarray of shape (n_samples, n_columns)
            0/1 membership of each sample in each column (cluster, or repeat × cluster).
        classes : ndarray of shape (n_samples,) or None, default=None
            Class codes 0..n_classes-1 (1 = positive for AUROC); needed by balanced accuracy
            and AUROC.

        Returns
        -------
        sums : ndarray of shape (n_sums, n_rows, n_columns)
            ``accuracy`` and ``nrmse``: count, Σ outcome, Σ outcome². ``balanced_accuracy``:
            count and Σ correct per class. ``auroc``: positives, negatives, the Mann–Whitney
            sum Σ over positives of the negatives below, and the sums of squares of both
            placement counts behind DeLong's variance.
        """
        weights = np.asarray(weights, dtype=np.float64)
        if self.uses_classes and classes is None:
            raise HetcvError(f"the {self.label} needs each sample's class")
        if self.name == "auroc":
            return _auroc_sums(outcome, weights, indicator, np.asarray(classes) == 1)
        outcome = np.broadcast_to(np.asarray(outcome, dtype=np.float64), weights.shape)
        if self.name == "balanced_accuracy":
            one_hot = np.eye(self.n_classes)[np.asarray(classes)]  # (m, C)
            count = np.einsum("bm,mc,mj->cbj", weights, one_hot, indicator)
            correct = np.einsum("bm,mc,mj->cbj", weights * outcome, one_hot, indicator)
            return np.concatenate([count, correct])
        return np.stack([weights @ indicator, (weights * outcome) @ indicator,
                         (weights * outcome**2) @ indicator])  # fmt: skip

    def count(self, sums: np.ndarray) -> np.ndarray:
        """Return the weighted number of samples behind each value, from :meth:`sums`."""
        if self.name == "auroc":
            return sums[0] + sums[1]
        if self.name == "balanced_accuracy":
            return sums[: self.n_classes].sum(axis=0)
        return sums[0]

    def undefined(self, sums: np.ndarray) -> np.ndarray:
        """Return where the metric is undefined: an empty cluster, or one class for AUROC."""
        if self.name == "auroc":
            return (sums[0] == 0) | (sums[1] == 0)
        return self.count(sums) == 0

    def value_and_variance(self, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the metric and an estimate of its sampling variance, NaN where undefined.

        Parameters
        ----------
        sums : ndarray of shape (n_sums, ...)
            From :meth:`sums`.

        Returns
        -------
        metric, variance : ndarray of shape ``sums.shape[1:]``
            The variance of a mean is the sample variance (ddof=1) of the outcome over the
            count, for 0/1 outcomes the unbiased p̂(1 − p̂)/(n − 1); balanced accuracy adds its
            classes' recall variances over (classes present)²; 1 − NRMSE maps the mean's
            variance by the delta method, var(mse)/(4·mse·normaliser²); AUROC takes DeLong's
            (1988) s²₁₀/n₊ + s²₀₁/n₋ of the placement values. A value from one sample (or one
            positive, or one negative) contributes variance 0: nothing to estimate it from.
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.name == "auroc":
                return _auroc_value_and_variance(sums)
            if self.name == "balanced_accuracy":
                count, correct = sums[: self.n_classes], sums[self.n_classes :]
                recall = correct / count
                recall_variance = _mean_variance(count, correct, correct, recall)
                present = (count > 0).sum(axis=0)
                value = np.nansum(recall, axis=0) / present
                variance = np.nansum(recall_variance, axis=0) / present**2
                return np.where(present > 0, value, np.nan), np.where(present > 0, variance, np.nan)
            count, total, squares = sums
            mean = total / count
            variance = _mean_variance(count, total, squares, mean)
            if self.name == "nrmse":
                return 1.0 - np.sqrt(mean) / self.normaliser, variance / (
                    4 * mean * self.normaliser**2
                )
            return mean, variance

    def weighting_variance(self, sums: np.ndarray) -> np.ndarray:
        """Return the variance behind inverse-variance weights (Cochran's Q) of one run.

        Q asks whether the clusters of a run (the last axis of ``sums``) differ more than
        sampling alone makes them, so each cluster's variance should be finite and, for the
        metrics built from small per-class counts, not estimated from those counts alone.
        Accuracy: p̄(1 − p̄)/n_c with p̄ the run's pooled accuracy (the null's common value),
        so that Q is the homogeneity chi-square of the clusters × (right, wrong) table; 0
        where p̄ is 0 or 1 (the run then holds no information on heterogeneity). Balanced
        accuracy: its classes' p(1 − p)/n_y over classes², with each class's recall p pooled
        over the run's clusters. AUROC: Hanley &
        McNeil's (1982) variance at the run's pooled Ã = (ΣU + ½)/(Σn₊n₋ + 1) and each
        cluster's n₊, n₋. 1 − NRMSE keeps its estimate (a 0 is left out of Q by the caller).
        The level each achieves is in docs/methods.md.

        Parameters
        ----------
        sums : ndarray of shape (n_sums, ..., n_clusters)
            From :meth:`sums`, the clusters of one run on the last axis.

        Returns
        -------
        variance : ndarray of shape ``sums.shape[1:]``
            NaN where the metric is undefined.
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.name == "nrmse":
                return self.value_and_variance(sums)[1]
            if self.name == "mean_score":
                count, total, squares = sums
                n, t, q = (x.sum(-1, keepdims=True) for x in (count, total, squares))
                pooled = np.maximum(q - t * t / n, 0.0) / np.maximum(n - 1, 1)
                return np.where(count > 0, pooled / count, np.nan)
            if self.name == "auroc":
                positives, negatives, u = sums[:3]
                pairs = positives * negatives
                a = (u.sum(-1, keepdims=True) + 0.5) / (pairs.sum(-1, keepdims=True) + 1)
                q1, q2 = a / (2 - a), 2 * a**2 / (1 + a)
                variance = (
                    a * (1 - a) + (positives - 1) * (q1 - a**2) + (negatives - 1) * (q2 - a**2)
                ) / pairs
                return np.where(self.undefined(sums), np.nan, variance)
            if self.name == "balanced_accuracy":
                count, correct = sums[: self.n_classes], sums[self.n_classes :]
                pooled = correct.sum(-1, keepdims=True) / count.sum(-1, keepdims=True)
                present = count > 0
                terms = np.where(present, pooled * (1 - pooled) / count, 0.0)
                variance = terms.sum(axis=0) / present.sum(axis=0) ** 2
                return np.where(present.any(axis=0), variance, np.nan)
            count, total = sums[:2]
            pooled = total.sum(-1, keepdims=True) / count.sum(-1, keepdims=True)
            return np.where(count > 0, pooled * (1 - pooled) / count, np.nan)

    def of_samples(self, outcome: np.ndarray, classes: np.ndarray | None = None) -> float:
        """Return the metric of one set of samples (e.g. a whole held-out fold).

        Parameters
        ----------
        outcome : ndarray of shape (n_samples,)
            Per-sample outcome.
        classes : ndarray of shape (n_samples,) or None, default=None
            Class codes, for balanced accuracy and AUROC.

        Returns
        -------
        value : float
            The metric; NaN if undefined.
        """
        ones = np.ones((1, len(outcome)))
        sums = self.sums(outcome, ones, np.ones((len(outcome), 1)), classes)
        return float(self.value_and_variance(sums)[0][0, 0])


def _mean_variance(
    count: np.ndarray, total: np.ndarray, squares: np.ndarray, mean: np.ndarray
) -> np.ndarray:
    """Sample variance (ddof=1) of the outcome over the count: the variance of a mean."""
    return np.maximum(squares - total * mean, 0.0) / np.maximum(count - 1, 1) / count


def _auroc_sums(
    outcome: np.ndarray, weights: np.ndarray, indicator: np.ndarray, positive: np.ndarray
) -> np.ndarray:
    """``(5, B, J)``: n₊, n₋, U = Σ₊ w·below, Σ₊ w·below² and Σ₋ w·above².

    below: a positive's weighted count of negatives below it; above: a negative's count of
    positives above it (both within the column's cluster, ties ½). Each column is computed
    on its own members only, so the work is that of the samples, not samples × columns; a
    one-row ``outcome`` is sorted once for all weight rows, and rows are processed in blocks
    of at most AUROC_BLOCK_ELEMENTS elements.
    """
    outcome = np.atleast_2d(np.asarray(outcome, dtype=np.float64))
    rows = len(weights)
    out = np.zeros((5, rows, indicator.shape[1]))
    for column in range(indicator.shape[1]):
        members = np.flatnonzero(indicator[:, column])
        if len(members) == 0:
            continue  # all sums 0: undefined
        block = max(1, AUROC_BLOCK_ELEMENTS // len(members))
        for start in range(0, rows, block):
            stop = min(start + block, rows)
            rows_outcome = outcome if len(outcome) == 1 else outcome[start:stop]
            out[:, start:stop, column] = _auroc_block(
                rows_outcome[:, members], weights[start:stop, members], positive[members]
            )
    return out


def _auroc_block(outcome: np.ndarray, weights: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """``(5, B)`` sums of one cluster's members: ``outcome`` (1 or B, m), ``weights`` (B, m)."""
    order = np.argsort(outcome, axis=1, kind="stable")
    value = np.take_along_axis(outcome, order, axis=1)
    weight = np.take_along_axis(weights, np.broadcast_to(order, weights.shape), axis=1)
    is_positive = positive[order]
    m = value.shape[1]
    position = np.arange(m)
    starts = np.ones(value.shape, dtype=bool)
    starts[:, 1:] = value[:, 1:] != value[:, :-1]
    ends = np.ones(value.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    # First position of each sample's tie group, and one past its last.
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    past = np.minimum.accumulate(np.where(ends, position + 1, m)[:, ::-1], axis=1)[:, ::-1]
    pos_weight = weight * is_positive
    neg_weight = weight * ~is_positive

    def running(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cumulative = np.concatenate([np.zeros((len(x), 1)), np.cumsum(x, axis=1)], axis=1)
        below = np.take_along_axis(cumulative, np.broadcast_to(first, x.shape), axis=1)
        through = np.take_along_axis(cumulative, np.broadcast_to(past, x.shape), axis=1)
        return below, through, cumulative[:, -1]

    neg_below, neg_through, negatives = running(neg_weight)
    pos_below, pos_through, positives = running(pos_weight)
    negatives_below = (neg_below + neg_through) / 2  # strictly below, plus ½ of the ties
    positives_above = positives[:, None] - (pos_below + pos_through) / 2
    return np.stack(
        [
            positives,
            negatives,
            (pos_weight * negatives_below).sum(axis=1),
            (pos_weight * negatives_below**2).sum(axis=1),
            (neg_weight * positives_above**2).sum(axis=1),
        ]
    )


def _auroc_value_and_variance(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC = U/(n₊n₋) and DeLong's variance from the placement values' sums of squares.

    Placement values: V₁₀ = (negatives below)/n₋ for a positive, V₀₁ = (positives above)/n₊
    for a negative, both with mean AUROC; var = s²(V₁₀)/n₊ + s²(V₀₁)/n₋ with ddof=1.
    """
    positives, negatives, u, square_below, square_above = sums
    auroc = u / (positives * negatives)
    spread_positive = (square_below / negatives**2 - positives * auroc**2) / np.maximum(
        positives - 1, 1
    )
    spread_negative = (square_above / positives**2 - negatives * auroc**2) / np.maximum(
        negatives - 1, 1
    )
    variance = (
        np.maximum(spread_positive, 0) / positives + np.maximum(spread_negative, 0) / negatives
    )
    undefined = (positives == 0) | (negatives == 0)
    return np.where(undefined, np.nan, auroc), np.where(undefined, np.nan, variance)
