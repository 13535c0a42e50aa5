"""The summarize rule: per dataset, aggregate every fold's clustering over folds and repeats.

Averages follow the paper: a quantity is computed per (fold, repeat) and then averaged, with
clusters matched by their canonical number (0 = best metric). Uncertainty and the noise
floor go beyond it:

- CV: mean and sd over folds × repeats; a 95 % CI from a stratified bootstrap of the samples
  inside each cluster (selected clustering only); the permutation null of the fold- and
  repeat-averaged CV (its mean, 95th percentile and the p-value); excess CV = CV − null mean.
- Per-cluster metric: mean and sd over folds × repeats, and a 95 % CI: Wilson on the pooled
  counts (classification, every clustering) or the bootstrap (regression, selected only).

Empty clusters are counted, never averaged in silently: a cluster's ``empty_runs`` of its
``runs`` (fold × repeat) had no sample, and its metric and distances average the others (NaN
when it is empty in every run); ``runs_with_empty_cluster`` counts the runs whose CV is over
fewer than k clusters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.seeding import derive_seed
from hetcv.stats import (
    bootstrap_cluster_metrics,
    coefficient_of_variation,
    correlation,
    percentile_interval,
    wilson_interval,
)

SIGNIFICANCE = 0.05
CLUSTERING = ["algorithm", "k", "n"]


def cv_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, k, n): test metric, CV, its permutation null, excess and p-value."""
    rows = []
    for (algorithm, k, n), group in runs.groupby(CLUSTERING, sort=True):
        folds = group.groupby("fold")["fold_metric"].first()
        null = np.vstack(group["null_cv"].to_numpy())  # (folds × repeats, P)
        null_of_mean = np.nanmean(null, axis=0)
        cv = group["cv"].mean()
        p_value = (1 + np.sum(null_of_mean >= cv)) / (1 + len(null_of_mean))
        rows.append(
            {
                "algorithm": algorithm,
                "k": k,
                "n": n,
                "test_metric": folds.mean(),
                "test_metric_sd": folds.std(ddof=1),
                "cv": cv,
                "cv_sd": group["cv"].std(ddof=1),
                "runs_with_empty_cluster": int((group["empty_clusters"] > 0).sum()),
                "null_cv": float(np.nanmean(null_of_mean)),
                "null_cv_q95": float(np.nanpercentile(null_of_mean, 95)),
                "excess_cv": cv - float(np.nanmean(null_of_mean)),
                "p_value": float(p_value),
                "above_noise_floor": bool(p_value < SIGNIFICANCE),
            }
        )
    return pd.DataFrame(rows)


def cluster_summary(clusters: pd.DataFrame, task: str) -> pd.DataFrame:
    """Per (algorithm, k, n, cluster): size %, metric (mean, sd, Wilson CI), Table 2 distances."""
    keys = [*CLUSTERING, "cluster"]
    grouped = clusters.groupby(keys, sort=True)
    table = grouped.agg(
        size=("size", "mean"),
        size_pct=("size_pct", "mean"),
        runs=("empty", "size"),
        empty_runs=("empty", "sum"),
        size_pct_sd=("size_pct", "std"),
        metric=("metric", "mean"),
        metric_sd=("metric", "std"),
        dist_min=("dist_min", "mean"),
        dist_max=("dist_max", "mean"),
        dist_mean=("dist_mean", "mean"),
        dist_sd=("dist_sd", "mean"),
    ).reset_index()
    table["ci_low"], table["ci_high"], table["ci_method"] = np.nan, np.nan, ""
    if task == "classification":
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
    """Table 1: per (algorithm, k, n, cluster pair), centre and closest-point distances."""
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
    """Per (algorithm, k, n): every validity index averaged over folds and repeats."""
    return runs.groupby(CLUSTERING, sort=True)[VALIDITY].mean().reset_index()


def fold_cv(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, k, n, fold): CV averaged over repeats and the fold's test metric."""
    return (
        runs.groupby([*CLUSTERING, "fold"], sort=True)
        .agg(cv=("cv", "mean"), test_metric=("fold_metric", "first"))
        .reset_index()
    )


def bootstrap_selected(
    assignments: pd.DataFrame,
    scores: pd.Series,
    n_clusters: int,
    task: str,
    normaliser: float,
    n_boot: int,
    seed: int,
) -> tuple[tuple[float, float], np.ndarray]:
    """Bootstrap CI of the averaged CV, and ``(k, 2)`` CIs of the averaged cluster metrics.

    ``assignments``: one sample size of the selected clustering (``fold, repeat, sample_id,
    cluster``); ``scores``: per-sample score indexed by ``sample_id``. Bootstrap replicate
    ``b`` is averaged over folds and repeats before the percentiles are taken.
    """
    cv_sum = np.zeros(n_boot)
    metric_sum = np.zeros((n_boot, n_clusters))
    metric_count = np.zeros((n_boot, n_clusters))
    runs = 0
    for (fold, repeat), run in assignments.groupby(["fold", "repeat"], sort=True):
        rng = np.random.default_rng(derive_seed(seed, fold, repeat, "bootstrap"))
        boot = bootstrap_cluster_metrics(
            run["cluster"].to_numpy(),
            scores.loc[run["sample_id"]].to_numpy(),
            n_clusters,
            n_boot,
            rng,
            task,
            normaliser,
        )
        cv_sum += coefficient_of_variation(boot, axis=1)
        metric_sum += np.nan_to_num(boot)
        metric_count += ~np.isnan(boot)
        runs += 1
    with np.errstate(invalid="ignore"):
        metric_mean = metric_sum / metric_count
    cluster_ci = np.array([percentile_interval(metric_mean[:, c]) for c in range(n_clusters)])
    return percentile_interval(cv_sum / runs), cluster_ci


def correlation_summary(
    cv: pd.DataFrame, folds: pd.DataFrame, permutations: int, n_boot: int, seed: int
) -> pd.DataFrame:
    """CV against test metric: across sample sizes (the paper's Fig. 5) and across (n, fold)."""
    rows = []
    for level, table in (("sample_size", cv), ("fold", folds)):
        rows.append(
            {
                "level": level,
                **correlation(
                    table["cv"].to_numpy(),
                    table["test_metric"].to_numpy(),
                    permutations,
                    n_boot,
                    derive_seed(seed, level),
                ),
            }
        )
    return pd.DataFrame(rows)


def read_all(paths: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path, columns=columns) for path in paths], ignore_index=True)


def run_summarize_job(
    *,
    runs: list[str],
    clusters: list[str],
    pairs: list[str],
    selected_assignments: list[str],
    features: list[str],
    manifest: str,
    out: dict[str, str],
    task: str,
    nrmse_normalizer: str,
    selected: dict,
    bootstrap: int,
    null_permutations: int,
    seed: int,
) -> None:
    """The summarize rule. ``out`` maps table names (cv, clusters, table1, validity, fold_cv,
    correlation, subgroups) to their paths."""
    from hetcv.analysis import sample_scores
    from hetcv.io import write_parquet
    from hetcv.stats import nrmse_normaliser
    from hetcv.subgroups import subgroup_recovery

    all_runs = read_all(runs)
    cv = cv_summary(all_runs)
    cluster_table = cluster_summary(read_all(clusters), task)
    score_column = "correct" if task == "classification" else "sq_error"
    score_table = read_all(features, columns=["n", "sample_id", score_column])
    scores = pd.Series(
        sample_scores(score_table, task),
        index=pd.MultiIndex.from_frame(score_table[["n", "sample_id"]]),
    )
    table = pd.read_parquet(manifest)
    normaliser = (
        nrmse_normaliser(table["target"].to_numpy(), nrmse_normalizer)
        if task == "regression"
        else 1.0
    )

    chosen = read_all(selected_assignments)
    chosen_runs = all_runs[
        (all_runs["algorithm"] == selected["algorithm"]) & (all_runs["k"] == selected["k"])
    ]
    cv["cv_ci_low"], cv["cv_ci_high"] = np.nan, np.nan
    for n, at_n in chosen[chosen["k"] == selected["k"]].groupby("n"):
        n_clusters = int(chosen_runs.loc[chosen_runs["n"] == n, "n_clusters"].iloc[0])
        (low, high), cluster_ci = bootstrap_selected(
            at_n, scores.loc[n], n_clusters, task, normaliser, bootstrap, derive_seed(seed, n)
        )
        row = (
            (cv["algorithm"] == selected["algorithm"]) & (cv["k"] == selected["k"]) & (cv["n"] == n)
        )
        cv.loc[row, ["cv_ci_low", "cv_ci_high"]] = low, high
        if task == "regression":
            rows = (
                (cluster_table["algorithm"] == selected["algorithm"])
                & (cluster_table["k"] == selected["k"])
                & (cluster_table["n"] == n)
            )
            cluster_table.loc[rows, ["ci_low", "ci_high"]] = cluster_ci
            cluster_table.loc[rows, "ci_method"] = "bootstrap"

    selected_cv = cv[(cv["algorithm"] == selected["algorithm"]) & (cv["k"] == selected["k"])]
    folds = fold_cv(all_runs)
    selected_folds = folds[
        (folds["algorithm"] == selected["algorithm"]) & (folds["k"] == selected["k"])
    ]
    correlations = correlation_summary(
        selected_cv, selected_folds, null_permutations, bootstrap, seed
    )
    if "subgroup" in table.columns:
        subgroup = table.set_index("sample_id")["subgroup"]
        selected_at_k = chosen[chosen["k"] == selected["k"]]
        per_run = pd.concat(
            subgroup_recovery(at_n, chosen_runs[chosen_runs["n"] == n], subgroup).assign(n=n)
            for n, at_n in selected_at_k.groupby("n")
        )
        recovered = per_run.groupby(["n", "subgroup"], sort=True).mean(numeric_only=True)
        recovered = recovered.drop(columns=["fold", "repeat"]).reset_index()
    else:
        recovered = pd.DataFrame(columns=["n", "subgroup"])
    for name, frame in {
        "cv": cv,
        "clusters": cluster_table,
        "table1": pair_summary(read_all(pairs)),
        "validity": validity_summary(all_runs),
        "fold_cv": folds,
        "correlation": correlations,
        "subgroups": recovered,
    }.items():
        write_parquet(frame, out[name])
