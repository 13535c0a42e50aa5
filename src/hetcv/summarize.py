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

import numpy as np
import pandas as pd

from hetcv.columns import feature_columns
from hetcv.export_clusters import consensus_clusters
from hetcv.heterogeneity import excess_cv
from hetcv.io import write_parquet
from hetcv.metrics import dataset_metric
from hetcv.profiles import metadata_profiles, weakest_profile
from hetcv.seeding import derive_seed
from hetcv.selected import selected_rows, summarize_selected
from hetcv.stats import correlation, permutation_p_value, wilson_interval
from hetcv.subgroup_variants import recovery_by_size

CLUSTERING = ["algorithm", "k", "n"]


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
        Lists ``fold_cluster_runs``, ``fold_cluster_stats``, ``fold_cluster_pairs``,
        ``selected_fold_assignments`` (the selected algorithm's) and
        ``features`` (every fold), and ``manifest``.
    outputs : dict
        One Parquet path per table that :func:`summarize` returns.
    params : dict
        ``metric``, ``nrmse_normalizer``, ``metadata_columns`` and ``summary``, the rest of
        :func:`summarize`'s keyword arguments.
    """

    held_out = read_all(inputs["features"])
    tables = summarize(
        read_all(inputs["fold_cluster_runs"]),
        read_all(inputs["fold_cluster_stats"]),
        read_all(inputs["fold_cluster_pairs"]),
        read_all(inputs["selected_fold_assignments"]),
        held_out.drop(columns=feature_columns(held_out.columns)),
        pd.read_parquet(inputs["manifest"]),
        metric=params["metric"],
        nrmse_normalizer=params["nrmse_normalizer"],
        metadata_columns=params["metadata_columns"],
        **params["summary"],
    )
    for name, frame in tables.items():
        write_parquet(frame, outputs[name])
