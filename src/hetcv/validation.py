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

from hetcv.columns import NULL_SETTING
from hetcv.heterogeneity import FoldPartitions, SampleSize, excess_cv, permutation_null
from hetcv.seeding import derive_seed
from hetcv.stats import SIGNIFICANCE, cluster_metrics
from hetcv.subgroups import recovery

METHODS = ("hetcv", "confusion_cells", "random_partition")
TEST_COLUMNS = [
    "cv",
    "debiased_cv",
    "null_cv",
    "excess_cv",
    "p_value",
    "p_holm",
    "p_calibrated",
    "p_holm_calibrated",
]
RECOVERY = ["precision_at_10", "precision_at_25", "auroc", "lift", "precision", "recall"]


def setting_label(source: dict) -> str:
    """``rare 5%``, ``noisy 30%`` or ``nothing planted``, from a validation dataset's source."""
    variant = source["variant"]
    if variant == "rare":
        return f"rare {100 * source['prevalence']:g}%"
    if variant == "noisy":
        return f"noisy {100 * source['flip_rate']:g}%"
    return NULL_SETTING


def setting_order(source: dict) -> tuple[int, float]:
    """Rare settings by prevalence, then noisy ones by flip rate, then nothing planted."""
    variant = source["variant"]
    return (
        ("rare", "noisy", "balanced").index(variant),
        source.get("prevalence", source.get("flip_rate", 0.0)),
    )


def confusion_cell_ranking(
    fold: pd.DataFrame, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(in_worst, score)`` of the confusion-cell baseline for one held-out fold."""
    cells = fold["target"].astype(str) + "→" + fold["predicted_label"].astype(str)
    accuracy = fold.groupby(cells)["correct"].agg(["mean", "size"])
    worst = accuracy.sort_values(["mean", "size"], ascending=[True, False]).index[0]
    in_worst = (cells == worst).to_numpy()
    loss_rank = fold["loss"].rank(pct=True).to_numpy()
    return in_worst, np.where(in_worst, 1.0 + loss_rank, 0.5 * rng.random(len(fold)))


def random_partition_ranking(
    labels: np.ndarray, correct: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(in_worst, score)`` of a random partition with the sizes of ``labels``."""
    shuffled = rng.permutation(labels)
    metric, _ = cluster_metrics(shuffled, correct, k, "classification", 1.0)
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

    ``fold``: the fold's features table (``sample_id, target, predicted_label, correct,
    loss``); ``assignments`` / ``runs``: the selected clustering's rows of this fold;
    ``planted``: boolean, indexed by ``sample_id``. One row per (method, repeat).
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

    ``features``, ``assignments`` and ``runs`` hold every (n, fold) of the selected
    clustering; ``cv`` is the dataset's summary CV table restricted to it.
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
    the fold × repeat averaged CV is tested exactly as the summary tests it. Returns per n:
    replicates, the false-positive rate at 5 %, the mean p-value and the mean excess CV
    (√(CV² − null CV²)). Permuting correctness meets the test's null by construction, so this
    checks the implementation on real cluster sizes, not a realistic null.
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
    """The README's "Does it work?" tables, as measured."""
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


def run_validation_job(
    *,
    inputs: dict[str, dict[str, list[str]]],
    out_table: str,
    out_calibration: str,
    out_summary: str,
    settings: dict[str, dict],
    selected: dict,
    replicates: int,
    permutations: int,
    seed: int,
) -> None:
    """The validation rule: ``inputs[dataset]`` holds that dataset's file lists by kind."""
    from hetcv.errors import HetcvError
    from hetcv.io import atomic_path, write_csv

    def selected_rows(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["algorithm"] == selected["algorithm"]) & (frame["k"] == selected["k"])]

    tables, calibration = [], None
    for dataset in sorted(inputs, key=lambda name: setting_order(settings[name])):
        files = inputs[dataset]
        features = pd.concat(map(pd.read_parquet, files["features"]), ignore_index=True)
        assignments = selected_rows(
            pd.concat(map(pd.read_parquet, files["assignments"]), ignore_index=True)
        )
        runs = selected_rows(pd.concat(map(pd.read_parquet, files["runs"]), ignore_index=True))
        cv = selected_rows(pd.read_parquet(files["cv"][0]))
        planted = pd.read_parquet(files["manifest"][0]).set_index("sample_id")["planted"]
        label = setting_label(settings[dataset])
        tables.append(setting_table(label, dataset, features, assignments, runs, cv, planted, seed))
        if settings[dataset]["variant"] == "balanced":
            if calibration is not None:
                raise HetcvError("validation: more than one dataset has source.variant 'balanced'")
            calibration = null_calibration(features, assignments, replicates, permutations, seed)
    if calibration is None:
        raise HetcvError("validation: no dataset has source.variant 'balanced' (the null setting)")
    table = pd.concat(tables, ignore_index=True)
    write_csv(table, out_table)
    write_csv(calibration, out_calibration)
    with atomic_path(out_summary) as temporary:
        temporary.write_text(summary_markdown(table, calibration))
