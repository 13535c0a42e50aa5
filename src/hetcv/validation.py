"""Does the method find what it claims? The planted-subgroup benchmark (``make validate``).

Each validation dataset is a digits setting with a known ``planted`` group (``hetcv.data``):
a rare digit, a digit with noisy labels, or nothing (``balanced``, the null). For every sample
size the selected clustering's worst cluster is scored against the planted indicator with the
dcbench protocol (``hetcv.subgroups.recovery``: precision@10 / @25, AUROC of the worst-cluster
membership degree, lift), averaged over folds × repeats, next to two baselines that need no
features:

- ``confusion_cells``: one cluster per (true, predicted) cell of the fold's confusion matrix;
  the worst cell is the one with the lowest accuracy (ties: the larger cell), its samples
  ranked by their loss, every other sample below them in random order.
- ``random_partition``: the method's own partition with its labels shuffled across samples
  (the same cluster sizes), worst cluster chosen by accuracy as for the method; members are
  ranked at random.

The heterogeneity test's calibration (``null_calibration``) uses the real partitions of the
``balanced`` setting: each replicate replaces the per-sample correctness by a random
permutation of itself (so correctness is independent of the clusters, the test's null) and
runs the same permutation test as the summary (``hetcv.heterogeneity.permutation_null``); the
false-positive rate is the share of replicates with p < 0.05. With nothing planted, how often
the two tests of the real data fire is in the table's ``p_holm`` and ``p_holm_calibrated``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.columns import NULL_SETTING, P_VALUE_COLUMNS
from hetcv.heterogeneity import FoldPartitions, SampleSize, excess_cv, permutation_null
from hetcv.metrics import ClusterMetric
from hetcv.seeding import derive_seed
from hetcv.stats import SIGNIFICANCE, cluster_metrics
from hetcv.subgroups import recovery

METHODS = ("hetcv", "confusion_cells", "random_partition")
TEST_COLUMNS = ["cv", "debiased_cv", "null_cv", "excess_cv", *P_VALUE_COLUMNS]
RECOVERY = ["precision_at_10", "precision_at_25", "auroc", "lift", "precision", "recall"]


def setting_label(source: dict) -> str:
    """``rare 5%``, ``noisy 30%`` or ``nothing planted``, from a validation dataset's source.

    Parameters
    ----------
    source : dict
        The dataset's ``source`` config: ``variant`` and ``prevalence`` (rare) or
        ``flip_rate`` (noisy).

    Returns
    -------
    str
        The setting's label in tables and figures.
    """
    variant = source["variant"]
    if variant == "rare":
        return f"rare {100 * source['prevalence']:g}%"
    if variant == "noisy":
        return f"noisy {100 * source['flip_rate']:g}%"
    return NULL_SETTING


def setting_order(source: dict) -> tuple[int, float]:
    """Rare settings by prevalence, then noisy ones by flip rate, then nothing planted.

    Parameters
    ----------
    source : dict
        As for :func:`setting_label`.

    Returns
    -------
    tuple of (int, float)
        Sort key: the variant's rank and its prevalence or flip rate (0 when balanced).
    """
    variant = source["variant"]
    return (
        ("rare", "noisy", "balanced").index(variant),
        source.get("prevalence", source.get("flip_rate", 0.0)),
    )


def confusion_cell_ranking(
    fold: pd.DataFrame, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(in_worst, score)`` of the confusion-cell baseline for one held-out fold.

    Parameters
    ----------
    fold : DataFrame
        The fold's features rows: ``target, predicted_label, correct, loss``.
    rng : Generator
        Orders the samples outside the worst cell.

    Returns
    -------
    in_worst : ndarray of shape (n_samples,)
        Boolean: the sample is in the worst (true, predicted) cell, the one with the lowest
        accuracy (ties: the larger cell).
    score : ndarray of shape (n_samples,)
        1 + the loss percentile in the worst cell, uniform in [0, 0.5) elsewhere.
    """
    cells = fold["target"].astype(str) + "→" + fold["predicted_label"].astype(str)
    accuracy = fold.groupby(cells)["correct"].agg(["mean", "size"])
    worst = accuracy.sort_values(["mean", "size"], ascending=[True, False]).index[0]
    in_worst = (cells == worst).to_numpy()
    loss_rank = fold["loss"].rank(pct=True).to_numpy()
    return in_worst, np.where(in_worst, 1.0 + loss_rank, 0.5 * rng.random(len(fold)))


def random_partition_ranking(
    labels: np.ndarray, correct: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(in_worst, score)`` of a random partition with the sizes of ``labels``.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        The method's hard labels, shuffled across samples.
    correct : ndarray of shape (n_samples,)
        Correctness, 0/1; the worst shuffled cluster has the lowest accuracy.
    k : int
        Number of clusters.
    rng : Generator
        Draws the shuffle and the order within each side.

    Returns
    -------
    in_worst : ndarray of shape (n_samples,)
        Boolean: in the worst shuffled cluster.
    score : ndarray of shape (n_samples,)
        ``in_worst`` plus uniform noise in [0, 0.5): members first, in random order.
    """
    shuffled = rng.permutation(labels)
    metric, _ = cluster_metrics(shuffled, correct, k, ClusterMetric("accuracy"))
    in_worst = shuffled == int(np.nanargmin(metric))
    return in_worst, in_worst + 0.5 * rng.random(len(labels))


def fold_recovery(
    fold: pd.DataFrame,
    assignments: pd.DataFrame,
    runs: pd.DataFrame,
    planted: pd.Series,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Recovery of the planted group in one fold by the method and the two baselines.

    Parameters
    ----------
    fold : DataFrame
        The fold's features table: ``sample_id, target, predicted_label, correct, loss``.
    assignments, runs : DataFrame
        The selected clustering's assignment and run rows of this fold.
    planted : Series of bool
        Whether each sample is planted, indexed by ``sample_id``.
    rng : Generator
        Randomness of both baselines.

    Returns
    -------
    DataFrame
        One row per (method, repeat): ``method, repeat`` and the :func:`recovery` columns;
        ``confusion_cells`` has one row, as repeat 0.
    """
    fold = fold.set_index("sample_id")
    member = planted.loc[fold.index].to_numpy(dtype=bool)
    correct = fold["correct"].to_numpy(dtype=np.float64)
    in_worst, score = confusion_cell_ranking(fold, rng)
    rows = [{"method": "confusion_cells", "repeat": 0, **recovery(in_worst, score, member)}]
    worst_of = runs.set_index("repeat")["worst_cluster"]
    k = int(runs["n_clusters"].iloc[0])
    for repeat, run in assignments.groupby("repeat", sort=True):
        run = run.set_index("sample_id").loc[fold.index]
        labels = run["cluster"].to_numpy()
        in_worst = labels == worst_of.loc[repeat]
        membership = run["worst_membership"].to_numpy()
        rows.append({"method": "hetcv", "repeat": repeat, **recovery(in_worst, membership, member)})
        in_worst, score = random_partition_ranking(labels, correct, k, rng)
        rows.append(
            {"method": "random_partition", "repeat": repeat, **recovery(in_worst, score, member)}
        )
    return pd.DataFrame(rows)


def planted_accuracy(features: pd.DataFrame, planted: pd.Series) -> dict[str, float]:
    """Accuracy overall, of the planted samples and of the others.

    Parameters
    ----------
    features : DataFrame
        Held-out rows (``sample_id, correct``), e.g. every fold at one n.
    planted : Series of bool
        Planted indicator, indexed by ``sample_id``.

    Returns
    -------
    dict of str to float
        ``accuracy``, ``planted_accuracy`` (NaN when nothing is planted), ``other_accuracy``.
    """
    member = planted.loc[features["sample_id"]].to_numpy(dtype=bool)
    correct = features["correct"].to_numpy(dtype=np.float64)
    return {
        "accuracy": correct.mean(),
        "planted_accuracy": correct[member].mean() if member.any() else np.nan,
        "other_accuracy": correct[~member].mean(),
    }


def setting_table(
    setting: str,
    dataset: str,
    features: pd.DataFrame,
    assignments: pd.DataFrame,
    runs: pd.DataFrame,
    cv: pd.DataFrame,
    planted: pd.Series,
    seed: int,
) -> pd.DataFrame:
    """One validation dataset's rows: per (n, method), recovery and the heterogeneity test.

    Parameters
    ----------
    setting : str
        The setting's label (:func:`setting_label`).
    dataset : str
        The validation dataset's name; it also keys the random baselines' seeds.
    features, assignments, runs : DataFrame
        Held-out rows, assignments and run rows of every (n, fold) of the selected clustering.
    cv : DataFrame
        The dataset's summary CV table restricted to the selected clustering (one row per n).
    planted : Series of bool
        True for the planted samples, indexed by ``sample_id``.
    seed : int
        The config's seed; with dataset, n and fold it seeds each fold's baselines.

    Returns
    -------
    DataFrame
        Per (n, method): ``setting, dataset, n, method, planted_share``, the
        :func:`planted_accuracy` keys, the :data:`RECOVERY` columns (NaN when nothing is
        planted) and, for ``hetcv`` only, the :data:`TEST_COLUMNS` of ``cv``.
    """
    rows = []
    for n, size_features in features.groupby("n", sort=True):
        per_fold = []
        for fold, fold_features in size_features.groupby("fold", sort=True):
            rng = np.random.default_rng(derive_seed(seed, dataset, n, fold, "random"))
            where = (assignments["n"] == n) & (assignments["fold"] == fold)
            runs_here = runs[(runs["n"] == n) & (runs["fold"] == fold)]
            per_fold.append(
                fold_recovery(fold_features, assignments[where], runs_here, planted, rng)
            )
        recovered = pd.concat(per_fold).groupby("method")[RECOVERY].mean()
        test = cv.set_index("n").loc[n]
        for method in METHODS:
            row = {
                "setting": setting,
                "dataset": dataset,
                "n": int(n),
                "method": method,
                "planted_share": planted.loc[size_features["sample_id"]].mean(),
                **planted_accuracy(size_features, planted),
            }
            row.update(
                recovered.loc[method].to_dict()
                if planted.any()
                else dict.fromkeys(RECOVERY, np.nan)
            )
            if method == "hetcv":
                row.update(test[TEST_COLUMNS].to_dict())
            rows.append(row)
    return pd.DataFrame(rows)


def null_calibration(
    features: pd.DataFrame,
    assignments: pd.DataFrame,
    replicates: int,
    permutations: int,
    seed: int,
) -> pd.DataFrame:
    """False-positive rate of the heterogeneity test when correctness ignores the clusters.

    For every n and replicate, each fold's correctness is permuted across its samples, then
    the fold × repeat averaged CV is tested exactly as the summary tests it. Permuting
    correctness meets the test's null by construction, so this checks the implementation on
    real cluster sizes, not a realistic null.

    Parameters
    ----------
    features : DataFrame
        The null setting's held-out rows: ``n, fold, sample_id, correct``.
    assignments : DataFrame
        Its selected clustering's ``n, fold, repeat, sample_id, cluster``.
    replicates : int
        Permuted-correctness replicates per n.
    permutations : int
        Permutations of each replicate's test.
    seed : int
        The config's seed.

    Returns
    -------
    DataFrame
        Per n: ``n, replicates``, ``false_positive_rate`` (share of p < 0.05),
        ``mean_p_value`` and ``mean_excess_cv`` (√(CV² − null CV²)).
    """
    rows = []
    for n, size_features in features.groupby("n", sort=True):
        folds = []
        for fold, fold_features in size_features.groupby("fold", sort=True):
            at = assignments[(assignments["n"] == n) & (assignments["fold"] == fold)]
            labels = at.pivot(index="repeat", columns="sample_id", values="cluster")
            labels = labels[fold_features["sample_id"].to_numpy()].to_numpy(dtype=np.int64)
            folds.append((fold_features["correct"].to_numpy(dtype=np.float64), labels))
        k = int(max(labels.max() for _, labels in folds)) + 1
        rng = np.random.default_rng(derive_seed(seed, "calibration", n))
        p_values, excess = [], []
        for replicate in range(replicates):
            sample = SampleSize(
                folds=[FoldPartitions(rng.permutation(score), labels) for score, labels in folds],
                k=k,
                task="classification",
            )
            null = permutation_null(sample, permutations, derive_seed(seed, n, replicate))
            p_values.append(null.p_value)
            excess.append(excess_cv(null.observed_cv, null.null_cv))
        p_values = np.array(p_values)
        rows.append(
            {
                "n": int(n),
                "replicates": replicates,
                "false_positive_rate": float(np.mean(p_values < SIGNIFICANCE)),
                "mean_p_value": float(p_values.mean()),
                "mean_excess_cv": float(np.mean(excess)),
            }
        )
    return pd.DataFrame(rows)


def summary_markdown(table: pd.DataFrame, calibration: pd.DataFrame) -> str:
    """The README's "Does it work?" tables, as measured.

    Parameters
    ----------
    table : DataFrame
        The recovery table (:func:`setting_table` rows of every setting).
    calibration : DataFrame
        The null calibration (:func:`null_calibration`).

    Returns
    -------
    str
        Markdown: recovery (AUROC, precision@10) per setting, n and method, the ``hetcv``
        rows' test columns and the calibration; it ends with a newline.
    """
    shown = table.copy()
    shown["method"] = pd.Categorical(shown["method"], METHODS)
    recovery_view = shown.pivot_table(
        index=["setting", "n"],
        columns="method",
        values=["auroc", "precision_at_10"],
        observed=True,
        sort=False,
    )
    recovery_view.columns = [f"{value} {method}" for value, method in recovery_view.columns]
    test_view = shown[shown["method"] == "hetcv"].set_index(["setting", "n"])[
        ["accuracy", "planted_accuracy", "lift", *TEST_COLUMNS]
    ]
    return (
        "\n\n".join(
            [
                "Recovery of the planted group by the worst cluster (AUROC, precision@10):",
                recovery_view.round(2).reset_index().to_markdown(index=False),
                "The heterogeneity test (CV in %):",
                test_view.round(3).reset_index().to_markdown(index=False),
                "Null calibration (correctness permuted within each fold of the null setting):",
                calibration.round(3).to_markdown(index=False),
            ]
        )
        + "\n"
    )


VALIDATION_INPUTS = ("manifest", "cv", "features", "assignments", "cluster_runs")


def validation_tables(
    datasets: dict[str, dict[str, pd.DataFrame]],
    settings: dict[str, dict],
    *,
    selected: dict,
    replicates: int,
    permutations: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The benchmark's recovery table and the null setting's calibration.

    Parameters
    ----------
    datasets : dict
        Planted dataset name → its ``manifest`` (with ``planted``), ``cv`` (summary),
        ``features``, ``assignments`` and ``runs`` (every fold, the selected clustering).
    settings : dict
        Planted dataset name → its ``source`` config (``variant`` and the planted effect).
    selected : dict
        The selected clustering (``algorithm``, ``k``).
    replicates, permutations, seed : int
        The null calibration's replicates, the permutations per test, the seed.

    Returns
    -------
    table, calibration : DataFrame
        One row per setting and method (:func:`setting_table`), and the false-positive
        rates of the null setting (:func:`null_calibration`).

    Raises
    ------
    HetcvError
        Unless exactly one dataset has ``variant: balanced`` (the null setting).
    """
    from hetcv.errors import HetcvError

    def selected_rows(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["algorithm"] == selected["algorithm"]) & (frame["k"] == selected["k"])]

    tables, calibration = [], None
    for dataset in sorted(datasets, key=lambda name: setting_order(settings[name])):
        frames = datasets[dataset]
        assignments, runs = (
            selected_rows(frames["assignments"]),
            selected_rows(frames["cluster_runs"]),
        )
        planted = frames["manifest"].set_index("sample_id")["planted"]
        label = setting_label(settings[dataset])
        cv = selected_rows(frames["cv"])
        tables.append(
            setting_table(label, dataset, frames["features"], assignments, runs, cv, planted, seed)
        )
        if settings[dataset]["variant"] == "balanced":
            if calibration is not None:
                raise HetcvError("validation: more than one dataset has source.variant 'balanced'")
            calibration = null_calibration(
                frames["features"], assignments, replicates, permutations, seed
            )
    if calibration is None:
        raise HetcvError("validation: no dataset has source.variant 'balanced' (the null setting)")
    return pd.concat(tables, ignore_index=True), calibration


def run_validation_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The validation rule: score the planted-subgroup benchmark.

    Parameters
    ----------
    inputs : dict
        ``{dataset}_{kind}`` for each planted dataset and each kind of
        :data:`VALIDATION_INPUTS`, each a list of paths.
    outputs : dict
        ``table`` and ``calibration`` (CSV) and ``summary`` (Markdown).
    params : dict
        ``settings`` (dataset → source config) and the keyword arguments of
        :func:`validation_tables`.
    """
    from hetcv.io import atomic_path, write_csv

    def read(paths: list[str]) -> pd.DataFrame:
        return pd.concat(map(pd.read_parquet, paths), ignore_index=True)

    settings = params["settings"]
    datasets = {
        name: {kind: read(inputs[f"{name}_{kind}"]) for kind in VALIDATION_INPUTS}
        for name in settings
    }
    table, calibration = validation_tables(
        datasets,
        settings,
        **{key: params[key] for key in ("selected", "replicates", "permutations", "seed")},
    )
    write_csv(table, outputs["table"])
    write_csv(calibration, outputs["calibration"])
    with atomic_path(outputs["summary"]) as temporary:
        temporary.write_text(summary_markdown(table, calibration))
