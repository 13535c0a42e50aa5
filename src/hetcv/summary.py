"""The summarize rule: per dataset, aggregate every fold's clustering over folds and repeats.

Averages follow the paper: a quantity is computed per (fold, repeat) and then averaged, with
clusters matched by their canonical number (0 = largest). The selected clustering's
statistics come from ``hetcv.heterogeneity`` (one place for each):

- the raw CV with a fold-bootstrap CI, the debiased CV (sampling variance removed) with its
  CI, I² and Cochran's Q;
- the permutation test of the averaged CV (within class when the clusters are built within
  class; none when they are built from the loss), Holm-adjusted across sample sizes;
- for classification, the confidence-calibrated test (:mod:`hetcv.calibration`): is
  correctness more uneven over the clusters than the model's own recalibrated confidence
  predicts?
- the cross-fitted weakest cluster with its error ratio to the rest, and, per cluster, the
  band that its metric has under the permutation null (Figure 2).

Every other (algorithm, k) is exploration: its CV and the permutation null computed by the
cluster jobs are reported without a significance flag. Per-cluster accuracies of the
exploration carry Wilson intervals on the pooled counts (other metrics: none).

Empty clusters are counted, never averaged in silently: a cluster's ``empty_runs`` of its
``runs`` (fold × repeat) had no sample, and its metric and distances average the others (NaN
when it is empty in every run); ``runs_with_empty_cluster`` counts the runs whose CV is over
fewer than k clusters. A cluster whose metric is undefined though it has samples (AUROC over
one class) is counted the same way, in ``undefined_runs``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from hetcv.calibration import calibration_test
from hetcv.columns import feature_columns
from hetcv.heterogeneity import excess_cv, heterogeneity, permutation_null, weakest_cluster
from hetcv.metrics import CLASSIFICATION_METRICS, ClusterMetric, dataset_metric
from hetcv.partitions import FoldPartitions, SampleSize
from hetcv.seeding import derive_seed
from hetcv.spread import debiased_spread
from hetcv.stats import SIGNIFICANCE, correlation, holm, permutation_p_value, wilson_interval

CLUSTERING = ["algorithm", "k", "n"]
TASK_OF = {"nrmse": "regression", "mean_score": "score"}  # the task of a non-class metric


def cv_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, k, n): test metric, CV and the cluster jobs' permutation null.

    Parameters
    ----------
    runs : DataFrame
        The cluster rule's run rows of every (n, fold, algorithm): ``algorithm, k, n, fold,
        fold_metric, cv, null_cv, empty_clusters, undefined_clusters, p_value``.

    Returns
    -------
    DataFrame
        ``algorithm, k, n, role`` (``exploratory``), ``test_metric, test_metric_sd, cv, cv_sd,
        runs_with_empty_cluster, runs_with_undefined_cluster`` and the exploratory null of the
        averaged CV: its mean ``null_cv``, 95th percentile ``null_cv_q95``, ``excess_cv`` and
        ``p_value`` (NaN if a run has none); no significance flag.
    """
    rows = []
    for (algorithm, k, n), group in runs.groupby(CLUSTERING, sort=True):
        folds = group.groupby("fold")["fold_metric"].first()
        null = np.vstack(group["null_cv"].to_numpy())  # (folds × repeats, P)
        null_of_mean = np.nanmean(null, axis=0)
        cv = group["cv"].mean()
        rows.append(
            {
                "algorithm": algorithm,
                "k": k,
                "n": n,
                "role": "exploratory",
                "test_metric": folds.mean(),
                "test_metric_sd": folds.std(ddof=1),
                "cv": cv,
                "cv_sd": group["cv"].std(ddof=1),
                "runs_with_empty_cluster": int((group["empty_clusters"] > 0).sum()),
                "runs_with_undefined_cluster": int((group["undefined_clusters"] > 0).sum()),
                "null_cv": float(np.nanmean(null_of_mean)),
                "null_cv_q95": float(np.nanpercentile(null_of_mean, 95)),
                "excess_cv": excess_cv(cv, null_of_mean),
                "p_value": (
                    permutation_p_value(cv, null_of_mean)
                    if group["p_value"].notna().all()
                    else np.nan
                ),
            }
        )
    return pd.DataFrame(rows)


def cluster_summary(clusters: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (algorithm, k, n, cluster): size %, metric (mean, sd, Wilson CI), Table 2 distances.

    Parameters
    ----------
    clusters : DataFrame
        The cluster rule's per-cluster rows (``cluster_stats``) of every (n, fold, algorithm).
    metric : str
        The metric's name; Wilson intervals on the pooled counts for accuracy only.

    Returns
    -------
    DataFrame
        ``algorithm, k, n, cluster, size, size_pct, runs, empty_runs, undefined_runs,
        single_class_runs, size_pct_sd, metric, metric_sd``, the four ``dist_*`` means,
        ``ci_low, ci_high, ci_method`` (empty but for accuracy) and ``null_band_low,
        null_band_high`` (NaN: :func:`summarize_selected` fills in the selected clustering's).
    """
    keys = [*CLUSTERING, "cluster"]
    grouped = clusters.groupby(keys, sort=True)
    table = grouped.agg(
        size=("size", "mean"),
        size_pct=("size_pct", "mean"),
        runs=("empty", "size"),
        empty_runs=("empty", "sum"),
        undefined_runs=("undefined", "sum"),
        single_class_runs=("classes_present", lambda present: int((present == 1).sum())),
        size_pct_sd=("size_pct", "std"),
        metric=("metric", "mean"),
        metric_sd=("metric", "std"),
        dist_min=("dist_min", "mean"),
        dist_max=("dist_max", "mean"),
        dist_mean=("dist_mean", "mean"),
        dist_sd=("dist_sd", "mean"),
    ).reset_index()
    table["ci_low"], table["ci_high"], table["ci_method"] = np.nan, np.nan, ""
    table["null_band_low"], table["null_band_high"] = np.nan, np.nan  # selected clustering
    if metric == "accuracy":
        # Pooled over folds, averaged over repeats: the counts one repeat sees in all folds.
        pooled = (
            clusters.groupby([*keys, "repeat"])
            .agg(successes=("score_sum", "sum"), trials=("size", "sum"))
            .groupby(keys)
            .mean()
        )
        bounds = [wilson_interval(s, t) for s, t in pooled.to_numpy()]
        table["ci_low"] = [low for low, _ in bounds]
        table["ci_high"] = [high for _, high in bounds]
        table["ci_method"] = "wilson"
    return table


def pair_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Table 1: per (algorithm, k, n, cluster pair), centre and closest-point distances.

    Parameters
    ----------
    pairs : DataFrame
        The cluster rule's per-pair rows of every (n, fold, algorithm).

    Returns
    -------
    DataFrame
        ``algorithm, k, n, cluster_a, cluster_b, centroid_distance, closest_distance``,
        each distance averaged over folds and repeats.
    """
    return (
        pairs.groupby([*CLUSTERING, "cluster_a", "cluster_b"], sort=True)[
            ["centroid_distance", "closest_distance"]
        ]
        .mean()
        .reset_index()
    )


VALIDITY = [
    "sse",
    "silhouette",
    "calinski_harabasz",
    "davies_bouldin",
    "min_cluster_fraction",
    "fpc",
    "bic",
    "stability_ari",
]


def validity_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, k, n): every validity index averaged over folds and repeats.

    Parameters
    ----------
    runs : DataFrame
        Run rows of every (n, fold, algorithm), with the :data:`VALIDITY` columns.

    Returns
    -------
    validity : DataFrame
        ``algorithm, k, n`` and the :data:`VALIDITY` means.
    """
    return runs.groupby(CLUSTERING, sort=True)[VALIDITY].mean().reset_index()


def fold_cv(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, k, n, fold): CV averaged over repeats and the fold's test metric.

    Parameters
    ----------
    runs : DataFrame
        Run rows with ``cv`` and ``fold_metric`` (the same in every repeat of a fold).

    Returns
    -------
    fold_cv : DataFrame
        ``algorithm, k, n, fold, cv, test_metric``.
    """
    return (
        runs.groupby([*CLUSTERING, "fold"], sort=True)
        .agg(cv=("cv", "mean"), test_metric=("fold_metric", "first"))
        .reset_index()
    )


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


def correlation_summary(
    cv: pd.DataFrame, folds: pd.DataFrame, permutations: int, n_boot: int, seed: int
) -> pd.DataFrame:
    """CV against test metric, across sample sizes and across (n, fold) points.

    Parameters
    ----------
    cv : DataFrame
        The selected clustering's CV rows, one per n in order of n: ``cv, debiased_cv,
        test_metric``.
    folds : DataFrame
        Its :func:`fold_cv` rows: ``n, cv, test_metric``.
    permutations, n_boot, seed : int
        Passed to :func:`hetcv.stats.correlation`, the seed derived per level.

    Returns
    -------
    DataFrame
        One row per ``level``: ``sample_size`` (the paper's Fig. 5, raw CV),
        ``sample_size_debiased`` (debiased CV) and ``fold`` (raw CV, permuted within each n:
        n drives both), with :func:`hetcv.stats.correlation`'s columns.
    """
    levels = (
        ("sample_size", cv["cv"], cv, None),
        ("sample_size_debiased", cv["debiased_cv"], cv, None),
        ("fold", folds["cv"], folds, folds["n"].to_numpy()),
    )
    rows = []
    for level, x, table, strata in levels:
        rows.append(
            {
                "level": level,
                **correlation(
                    x.to_numpy(dtype=np.float64),
                    table["test_metric"].to_numpy(dtype=np.float64),
                    permutations,
                    n_boot,
                    derive_seed(seed, level),
                    strata=strata,
                ),
            }
        )
    return pd.DataFrame(rows)


def read_all(paths: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    """Concatenate Parquet tables (e.g. one per fold) into one, with a fresh index.

    Parameters
    ----------
    paths : list of str
        Parquet files, read in order.
    columns : list of str, default=None
        Columns to read; None reads all.

    Returns
    -------
    DataFrame
        The rows of every file.
    """
    return pd.concat([pd.read_parquet(path, columns=columns) for path in paths], ignore_index=True)


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


def summarize(
    runs: pd.DataFrame,
    cluster_stats: pd.DataFrame,
    pairs: pd.DataFrame,
    chosen: pd.DataFrame,
    features: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    metric: str,
    nrmse_normalizer: str | None,
    selected: dict,
    metadata_columns: list[str],
    **statistics,
) -> dict[str, pd.DataFrame]:
    """Every summary table of one dataset, from its folds' clustering tables.

    Parameters
    ----------
    runs, cluster_stats, pairs : DataFrame
        The cluster rule's run, per-cluster and per-pair rows of every (n, fold, algorithm).
    chosen : DataFrame
        The selected algorithm's assignments (every k; only the selected k is used).
    features : DataFrame
        Every fold's held-out rows (the feature columns may be left out).
    manifest : DataFrame
        The dataset's manifest (``sample_id``, ``target``, ``subgroup`` when known).
    metric, nrmse_normalizer, selected
        The metric's name (:data:`hetcv.metrics.METRICS`), its normaliser's kind, and the
        selected clustering (``algorithm``, ``k``).
    metadata_columns : list of str
        The source's metadata columns, profiled per consensus cluster (may be empty).
    **statistics
        ``within``, ``error_aware``, ``bootstrap``, ``null_permutations`` and ``seed``, as
        :func:`summarize_selected` takes them.

    Returns
    -------
    dict
        ``cv``, ``cluster_stats``, ``cluster_pairs``, ``validity``, ``fold_cv``,
        ``correlation``, ``subgroups`` (empty without known subgroups) and ``metadata``
        (:func:`hetcv.profiles.metadata_profiles` per cluster number, and
        :func:`hetcv.profiles.weakest_profile` for each fold's weakest cluster; empty without
        metadata columns); schemas in config/README.md.
    """
    from hetcv.export import consensus_clusters
    from hetcv.profiles import metadata_profiles, weakest_profile
    from hetcv.subgroups import recovery_by_size

    chosen = chosen[chosen["k"] == selected["k"]]
    cv, cluster_table, fold_debiased = summarize_selected(
        cv_summary(runs),
        cluster_summary(cluster_stats, metric),
        chosen,
        features,
        metric=dataset_metric(metric, manifest["target"].to_numpy(), nrmse_normalizer),
        selected=selected,
        **statistics,
    )
    fold_debiased = fold_debiased.rename(columns={"weakest": "weakest_cluster"})
    weakest = fold_debiased[["n", "fold", "weakest_cluster"]].rename(
        columns={"weakest_cluster": "cluster"}
    )
    folds = fold_cv(runs).merge(fold_debiased, on=[*CLUSTERING, "fold"], how="left")
    correlations = correlation_summary(
        cv[selected_rows(cv, selected)].sort_values("n"),
        folds[selected_rows(folds, selected)],
        *(statistics[key] for key in ("null_permutations", "bootstrap", "seed")),
    )
    recovered = pd.DataFrame(columns=["n", "subgroup"])
    if "subgroup" in manifest.columns:
        subgroup = manifest.set_index("sample_id")["subgroup"]
        recovered = recovery_by_size(chosen, runs[selected_rows(runs, selected)], subgroup)
    described = consensus_clusters(chosen)[["sample_id", "n", "fold", "cluster"]].merge(
        manifest[["sample_id", *metadata_columns]], on="sample_id", validate="many_to_one"
    )
    profiles = metadata_profiles(described, metadata_columns)
    if metadata_columns:
        profiles = pd.concat(
            [profiles, weakest_profile(described, weakest, metadata_columns)], ignore_index=True
        )
    return {
        "cv": cv,
        "cluster_stats": cluster_table,
        "cluster_pairs": pair_summary(pairs),
        "validity": validity_summary(runs),
        "fold_cv": folds,
        "correlation": correlations,
        "subgroups": recovered,
        "metadata": profiles,
    }


def run_summarize_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The summarize rule: read every fold's tables, write the dataset's summary tables.

    Parameters
    ----------
    inputs : dict
        Lists ``runs``, ``cluster_stats``, ``pairs``, ``selected_assignments`` and
        ``features`` (every fold), and ``manifest``.
    outputs : dict
        One Parquet path per table that :func:`summarize` returns.
    params : dict
        ``metric``, ``nrmse_normalizer``, ``metadata_columns`` and ``summary``, the rest of
        :func:`summarize`'s keyword arguments.
    """
    from hetcv.io import write_parquet

    held_out = read_all(inputs["features"])
    tables = summarize(
        read_all(inputs["runs"]),
        read_all(inputs["cluster_stats"]),
        read_all(inputs["pairs"]),
        read_all(inputs["selected_assignments"]),
        held_out.drop(columns=feature_columns(held_out.columns)),
        pd.read_parquet(inputs["manifest"]),
        metric=params["metric"],
        nrmse_normalizer=params["nrmse_normalizer"],
        metadata_columns=params["metadata_columns"],
        **params["summary"],
    )
    for name, frame in tables.items():
        write_parquet(frame, outputs[name])
