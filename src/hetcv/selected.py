"""The selected clustering's statistics: its CV with intervals and tests, per cluster and size."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from hetcv.calibration import calibration_test
from hetcv.heterogeneity import excess_cv, heterogeneity, permutation_null
from hetcv.metrics import CLASSIFICATION_METRICS, ClusterMetric
from hetcv.partitions import FoldPartitions, SampleSize
from hetcv.seeding import derive_seed
from hetcv.spread import debiased_spread
from hetcv.stats import SIGNIFICANCE, holm
from hetcv.weakest import weakest_cluster

TASK_OF = {"nrmse": "regression", "mean_score": "score"}  # the task of a non-class metric


def fold_partitions(
    assignments: pd.DataFrame, features: pd.DataFrame, metric: ClusterMetric, within: str
) -> FoldPartitions:
    """One fold's held-out samples and their cluster in every repeat.

    Parameters
    ----------
    assignments : DataFrame
        ``repeat, sample_id, cluster`` of one (algorithm, k, n, fold).
    features : DataFrame
        That fold's ``features.parquet`` rows: ``sample_id, target``, the outcome column and,
        for classification, ``correct`` and the ``probability_*`` columns.
    metric : ClusterMetric
        Picks the outcome; classification also gets each prediction's confidence and class
        for the calibrated test.
    within : {"all", "class"}
        With ``"class"``, ``target`` becomes the groups that permutations stay within; so it
        does for balanced accuracy and AUROC, whose classes stay with their samples.

    Returns
    -------
    FoldPartitions
        Its ``labels`` are of shape (n_repeats, n_samples), samples in ``features`` order.
    """
    labels = assignments.pivot(index="repeat", columns="sample_id", values="cluster")
    labels = labels[features["sample_id"].to_numpy()].to_numpy(dtype=np.int64)
    classification = metric.name not in ("nrmse", "mean_score")
    confidence = predicted = correct = None
    if classification:
        probabilities = class_probabilities(features)
        predicted = probabilities.argmax(axis=1)
        confidence = probabilities[np.arange(len(features)), predicted]
        correct = features["correct"].to_numpy(dtype=np.float64)
    score, classes = metric.outcome(features)
    within_class = within == "class" or metric.uses_classes
    return FoldPartitions(
        score=score,
        labels=labels,
        groups=features["target"].to_numpy() if within_class else None,
        confidence=confidence,
        classes=classes,
        correct=correct,
        predicted=predicted,
    )


def class_probabilities(features: pd.DataFrame) -> np.ndarray:
    """``(n_samples, n_classes)`` of the ``probability_*`` columns, in class-index order.

    Parameters
    ----------
    features : DataFrame
        Held-out rows with ``probability_0`` … ``probability_{C-1}``.

    Returns
    -------
    ndarray of shape (n_samples, n_classes)
        Columns in class-index order (``probability_10`` after ``_9``).
    """
    columns = [c for c in features.columns if c.startswith("probability_")]
    columns.sort(key=lambda name: int(name.rsplit("_", 1)[1]))
    return features[columns].to_numpy(dtype=np.float64)


def selected_statistics(
    sample: SampleSize, *, error_aware: bool, bootstrap: int, permutations: int, seed: int
) -> tuple[dict, pd.DataFrame]:
    """The selected clustering's statistics at one sample size.

    Parameters
    ----------
    sample : SampleSize
        Every fold's partitions and scores at this n (:func:`fold_partitions`).
    error_aware : bool
        Clusters built from the loss: ``p_value`` is NaN (no valid test).
    bootstrap : int
        Fold-bootstrap replicates of the CIs and of the weakest cluster.
    permutations : int
        Permutations of the null and, for classification, of the calibrated test.
    seed : int
        Seed at this n; each statistic derives its own stream from it.

    Returns
    -------
    row : dict
        A ``cv.parquet`` row's columns: ``role`` (``selected``), raw and debiased CV with
        CIs, I², Q, the permutation null and p-values (``p_calibrated`` NaN for
        regression), and the cross-fitted weakest cluster.
    clusters : DataFrame
        Per cluster its bootstrap CI and 95 % null band: ``cluster, ci_low, ci_high,
        null_band_low, null_band_high``.
    fold_debiased_cv : ndarray of shape (n_folds,)
        Each fold's debiased CV on its own, in the folds' order.
    fold_weakest : ndarray of shape (n_folds,)
        Each fold's weakest cluster (cluster numbers are per fold).
    """
    het = heterogeneity(sample, bootstrap, derive_seed(seed, "bootstrap"))
    spread = debiased_spread(sample, bootstrap, derive_seed(seed, "debiased"))
    null = permutation_null(sample, permutations, derive_seed(seed, "permutation"))
    weakest = weakest_cluster(sample, bootstrap, derive_seed(seed, "weakest"))
    row = {
        "role": "selected",
        "cv": het.raw_cv,
        "cv_ci_low": het.raw_cv_ci[0],
        "cv_ci_high": het.raw_cv_ci[1],
        "debiased_cv": spread.debiased_cv,
        "debiased_cv_ci_low": spread.debiased_cv_ci[0],
        "debiased_cv_ci_high": spread.debiased_cv_ci[1],
        "debiased_cv_upper": spread.debiased_cv_upper,
        "p_no_spread": spread.p_no_spread,
        "error_cv": spread.error_cv,
        "error_cv_ci_low": spread.error_cv_ci[0],
        "error_cv_ci_high": spread.error_cv_ci[1],
        "error_cv_upper": spread.error_cv_upper,
        "debiased_method": spread.method,
        "noise_cv": spread.noise_cv,
        "i_squared": het.i_squared,
        "q": het.q,
        "q_df": het.q_df,
        "q_p_value": null.q_p_value,
        "bootstrap_nonfinite": het.n_nonfinite_cv,
        "null_cv": float(null.null_cv.mean()),
        "null_cv_q95": float(np.percentile(null.null_cv, 95)),
        "excess_cv": excess_cv(het.raw_cv, null.null_cv),
        # Clusters built from the loss are not exchangeable with the scores: no valid test.
        "p_value": np.nan if error_aware else null.p_value,
        "p_calibrated": np.nan,
        "weakest_cluster": weakest.cluster,
        "weakest_metric": weakest.estimate,
        "weakest_ci_low": weakest.ci[0],
        "weakest_ci_high": weakest.ci[1],
        "weakest_rest_metric": weakest.rest_metric,
        "weakest_error_ratio": weakest.error_ratio,
        "weakest_error_ratio_ci_low": weakest.error_ratio_ci[0],
        "weakest_error_ratio_ci_high": weakest.error_ratio_ci[1],
    }
    if sample.task == "classification":
        calibrated = calibration_test(sample, permutations, derive_seed(seed, "calibrated"))
        row["p_calibrated"] = calibrated.p_value
    # Each cluster's own band: where its metric falls when no cluster differs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cluster with no metric: NaN
        band = np.nanpercentile(null.null_cluster_metric, [2.5, 97.5], axis=0)
    clusters = pd.DataFrame(
        {
            "cluster": np.arange(sample.k),
            "ci_low": het.cluster_metric_ci[:, 0],
            "ci_high": het.cluster_metric_ci[:, 1],
            "null_band_low": band[0],
            "null_band_high": band[1],
        }
    )
    return row, clusters, spread.fold_debiased_cv, weakest.fold_cluster


def add_multiplicity(cv: pd.DataFrame) -> pd.DataFrame:
    """Holm across the selected clustering's sample sizes; the flag only for those rows.

    Parameters
    ----------
    cv : DataFrame
        The CV table with the selected rows filled in (``role, p_value, p_calibrated``).

    Returns
    -------
    DataFrame
        A copy with ``p_holm``, ``p_holm_calibrated`` (NaN for exploratory rows) and
        ``above_noise_floor`` (nullable boolean, ``p_holm < SIGNIFICANCE``; NA for
        exploration or a non-finite p).
    """
    cv = cv.copy()
    chosen = cv["role"] == "selected"
    cv["p_holm"], cv["p_holm_calibrated"] = np.nan, np.nan
    cv.loc[chosen, "p_holm"] = holm(cv.loc[chosen, "p_value"].to_numpy())
    cv.loc[chosen, "p_holm_calibrated"] = holm(cv.loc[chosen, "p_calibrated"].to_numpy())
    cv["above_noise_floor"] = pd.array(
        [
            bool(p < SIGNIFICANCE) if chosen_row and np.isfinite(p) else pd.NA
            for p, chosen_row in zip(cv["p_holm"], chosen, strict=True)
        ],
        dtype="boolean",
    )
    return cv


def selected_rows(table: pd.DataFrame, selected: dict) -> pd.Series:
    """Mask of the selected clustering's rows (its ``algorithm`` and ``k``).

    Parameters
    ----------
    table : DataFrame
        Any table with ``algorithm`` and ``k`` columns.
    selected : dict
        ``algorithm`` and ``k`` of the selected clustering.

    Returns
    -------
    Series of bool
        True where both match, aligned with ``table``'s index.
    """
    return (table["algorithm"] == selected["algorithm"]) & (table["k"] == selected["k"])


def summarize_selected(
    cv: pd.DataFrame,
    cluster_table: pd.DataFrame,
    chosen: pd.DataFrame,
    features: pd.DataFrame,
    *,
    metric: ClusterMetric,
    selected: dict,
    within: str,
    error_aware: bool,
    bootstrap: int,
    null_permutations: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``cv`` and ``cluster_table`` with the selected clustering's statistics filled in.

    Parameters
    ----------
    cv, cluster_table : DataFrame
        :func:`cv_summary` and :func:`cluster_summary` of every clustering.
    chosen : DataFrame
        The selected clustering's assignments (every n, fold, repeat).
    features : DataFrame
        Every held-out row: ``n, fold, sample_id, target``, the outcome column and, for
        classification, ``correct`` and the ``probability_*`` columns.
    metric : ClusterMetric
        The dataset's metric (:func:`hetcv.metrics.dataset_metric`), with its classes.
    selected, within, error_aware, bootstrap, null_permutations, seed
        As in the summarize rule's params; see :func:`selected_statistics`.

    Returns
    -------
    cv, cluster_table : DataFrame
        Copies, with the selected rows' intervals, tests and Holm-adjusted p-values.
    fold_debiased : DataFrame
        ``algorithm, k, n, fold, debiased_cv, weakest`` of the selected clustering
        (``weakest``: the fold's weakest cluster).
    """
    cv, cluster_table = cv.copy(), cluster_table.copy()
    fold_rows = []
    for n, at_n in chosen.groupby("n", sort=True):
        rows_n = features[features["n"] == n]
        folds = [
            fold_partitions(
                at_n[at_n["fold"] == fold], rows_n[rows_n["fold"] == fold], metric, within
            )
            for fold in sorted(at_n["fold"].unique())
        ]
        at = selected_rows(cluster_table, selected) & (cluster_table["n"] == n)
        n_clusters = int(cluster_table.loc[at, "cluster"].max()) + 1  # k, or k × classes
        sample = SampleSize(
            folds=folds,
            k=n_clusters,
            task=TASK_OF.get(metric.name, "classification"),
            normaliser=metric.normaliser,
            metric=metric.name if metric.name in CLASSIFICATION_METRICS else None,
        )
        row, per_cluster, fold_debiased, fold_weakest = selected_statistics(
            sample,
            error_aware=error_aware,
            bootstrap=bootstrap,
            permutations=null_permutations,
            seed=derive_seed(seed, n),
        )
        _fill_selected(cv, selected_rows(cv, selected) & (cv["n"] == n), row)
        merged = cluster_table.loc[at, ["cluster"]].merge(per_cluster, on="cluster", how="left")
        for column in ("ci_low", "ci_high", "null_band_low", "null_band_high"):
            cluster_table.loc[at, column] = merged[column].to_numpy()
        cluster_table.loc[at, "ci_method"] = (
            "wilson" if metric.name == "accuracy" else "fold bootstrap"
        )
        folds_n = sorted(at_n["fold"].unique())
        fold_rows.append(
            pd.DataFrame(
                {"n": n, "fold": folds_n, "debiased_cv": fold_debiased, "weakest": fold_weakest}
            )
        )
    fold_debiased = pd.concat(fold_rows, ignore_index=True).assign(**selected)
    return add_multiplicity(cv), cluster_table, fold_debiased


def _fill_selected(cv: pd.DataFrame, at: pd.Series, row: dict) -> None:
    """Write ``row``'s statistics into the ``at`` rows of ``cv``, adding missing columns."""
    for column, value in row.items():
        if column not in cv:
            cv[column] = np.nan if not isinstance(value, str) else ""
        cv.loc[at, column] = value
