"""Does slice discovery find what it claims? The planted-subgroup benchmark (``make validate``).

Each validation dataset is a digits setting with a known ``planted`` group (``hetcv.sources``):
a rare digit, a digit with noisy labels, or nothing (``balanced``, the null), at one seed
(``source.draw`` redraws the planted sample; the dataset's name reseeds the training). The
benchmark is fair in the manner of dcbench (Eyuboglu et al. 2022):

- **Tuning and test digits.** Datasets whose planted ``digit`` is ``validation.tuning_digit``
  choose each method's settings (:data:`TUNING_GRID` × ``validation.embeddings`` ×
  :data:`PCA_GRID`) by their mean precision@10; everything is then frozen and scored on the
  other datasets (the test digit and the null). The default ``slices.method`` is the method
  with the best tuning score.
- **Cross-fitted scoring** (:mod:`hetcv.slices`): per fold, slices are found on one half of the
  held-out samples and ranked on the other; precision@10, precision@25 and the AUROC of the
  worst-slice score against the planted indicator are computed per evaluation half and
  averaged over folds and halves.
- **Held-out significance**: a seed "reports a significant slice" when its worst slice
  underperforms on the measuring halves as ``summary.md`` would say so
  (:func:`hetcv.slices.slice_summary`: the excess failure gap beyond the model's recalibrated
  confidence, one-sided p < 0.05). With nothing planted that rate is the false-positive rate.
  The raw failure gap's p-value is in the table too (``p_value``): a trained model's errors
  always gather on hard images, so it fires with nothing planted as well.
- **The ceiling** of each dataset: the planted group's accuracy against the rest's and the
  share of errors that are planted. A group whose accuracy is within noise of the rest's cannot
  be found by its errors.

Paired comparisons use the seeds: for each setting, the per-seed difference between two
methods' precision@10 with a t interval over seeds.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
from scipy import stats

from hetcv.columns import NULL_SETTING
from hetcv.errors import HetcvError
from hetcv.io import atomic_path, write_csv
from hetcv.seeding import derive_seed
from hetcv.slice_finders import BASELINES, METHODS, principal_scores
from hetcv.slices import fold_slices, fold_vectors, slice_summary
from hetcv.stats import SIGNIFICANCE
from hetcv.subgroup_variants import recovery

TUNING_GRID = {
    "domino": [{"components": c, "gamma": g} for c in (10, 25) for g in (1.0, 10.0)],
    "george": [{"components": c} for c in (3, 6)],
    "error_predictor": [{"c": c} for c in (0.1, 1.0)],
    "worst_cluster": [{}],
}
PCA_GRID = (10, 25)
RECOVERY = ["precision_at_10", "precision_at_25", "auroc"]


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


def ceiling(
    folds: list[pd.DataFrame], planted: pd.Series, digit: pd.Series | None = None
) -> dict[str, float]:
    """What errors can reveal: the planted group's accuracy against the rest's.

    Parameters
    ----------
    folds : list of DataFrame
        Held-out rows (``sample_id, correct``) of every fold.
    planted : Series of bool
        Planted indicator, indexed by ``sample_id``.
    digit : Series, optional
        The manifest's ``subgroup`` (the digit), indexed by ``sample_id``.

    Returns
    -------
    dict of str to float
        ``accuracy``, ``planted_accuracy`` and ``other_accuracy`` (NaN where empty),
        ``planted_error_share`` (planted errors / all errors), ``planted_share``,
        ``planted_gap_p`` (Fisher's exact test, one-sided: planted accuracy lower), and with
        ``digit``: ``digits_differ_p`` (chi-square test of correctness × digit: whether the
        ten digits, the natural subgroups of a binary digits task, differ in accuracy, planted
        or not), ``hardest_digit`` and ``hardest_digit_accuracy``.
    """
    rows = pd.concat(folds, ignore_index=True)
    member = planted.loc[rows["sample_id"]].to_numpy(dtype=bool)
    correct = rows["correct"].to_numpy(dtype=bool)
    table = [
        [int((~correct & member).sum()), int((correct & member).sum())],
        [int((~correct & ~member).sum()), int((correct & ~member).sum())],
    ]
    return {
        "accuracy": correct.mean(),
        "planted_accuracy": correct[member].mean() if member.any() else np.nan,
        "other_accuracy": correct[~member].mean(),
        "planted_error_share": (~correct & member).sum() / max(1, (~correct).sum()),
        "planted_share": member.mean(),
        "planted_gap_p": (
            stats.fisher_exact(table, alternative="greater").pvalue if member.any() else np.nan
        ),
        **(
            digit_spread(correct, digit.loc[rows["sample_id"]].to_numpy())
            if digit is not None
            else {}
        ),
    }


def digit_spread(correct: np.ndarray, digit: np.ndarray) -> dict[str, float]:
    """Do the digits differ in accuracy? Chi-square of correctness × digit, and the hardest.

    Parameters
    ----------
    correct : ndarray of bool
    digit : ndarray
        Each sample's digit.

    Returns
    -------
    dict
        ``digits_differ_p``, ``hardest_digit``, ``hardest_digit_accuracy``.
    """
    counts = pd.crosstab(digit, correct)
    accuracy = counts.get(True, 0) / counts.sum(axis=1)
    p_value = stats.chi2_contingency(counts.to_numpy())[1] if counts.shape[1] == 2 else 1.0
    return {
        "digits_differ_p": float(p_value),
        "hardest_digit": int(accuracy.idxmin()),
        "hardest_digit_accuracy": float(accuracy.min()),
    }


def half_recovery(per_sample: pd.DataFrame, planted: pd.Series) -> dict[str, float]:
    """Precision@10, @25 and AUROC per (fold, evaluation half), averaged.

    Parameters
    ----------
    per_sample : DataFrame
        One method's :func:`hetcv.slices.fold_slices` rows with ``fold``.
    planted : Series of bool
        Indexed by ``sample_id``.

    Returns
    -------
    dict of str to float
        :data:`RECOVERY` (NaN when nothing is planted).
    """
    member = planted.loc[per_sample["sample_id"]].to_numpy(dtype=bool)
    if not member.any():
        return dict.fromkeys(RECOVERY, np.nan)
    scores = []
    for _, rows in per_sample.assign(member=member).groupby(["fold", "half"], sort=True):
        found = recovery(
            rows["slice"].to_numpy() == 0, rows["score"].to_numpy(), rows["member"].to_numpy()
        )
        scores.append([found[key] for key in RECOVERY])
    return dict(zip(RECOVERY, np.nanmean(np.array(scores, dtype=float), axis=0), strict=True))


class PlantedDataset:
    """One validation dataset's held-out folds, embeddings and planted indicator.

    Parameters
    ----------
    name : str
    source : dict
        Its ``source`` config.
    manifest : DataFrame
        With ``sample_id`` and ``planted``.
    images : ndarray
        ``images.npy`` (rows as in the manifest).
    folds : list of DataFrame
        Every (n, fold)'s features rows; the largest n is scored.
    """

    def __init__(self, name, source, manifest, images, folds):
        self.name, self.source = name, source
        self.planted = manifest.set_index("sample_id")["planted"]
        self.digit = manifest.set_index("sample_id")["subgroup"] if "subgroup" in manifest else None
        largest = max(int(fold["n"].iloc[0]) for fold in folds)
        self.folds = [fold for fold in folds if int(fold["n"].iloc[0]) == largest]
        row_of = pd.Series(np.arange(len(manifest)), index=manifest["sample_id"])
        self.vectors = {
            embedding: [fold_vectors(fold, embedding, images, row_of) for fold in self.folds]
            for embedding in ("model", "pixels")
        }
        self._scores: dict[tuple, np.ndarray] = {}

    @property
    def label(self) -> str:
        return setting_label(self.source)

    def slices(self, method: str, settings: dict, clustering: dict, seed: int) -> pd.DataFrame:
        """One method's cross-fitted rows over every fold (``settings``: + embedding, pca)."""
        parts = []
        for number, fold in enumerate(self.folds):
            fold_seed = derive_seed(seed, self.name, number)
            found = fold_slices(
                fold,
                self.scores(settings["embedding"], settings["pca_components"], number),
                task="classification",
                settings={method: settings},
                clustering=clustering,
                seed=fold_seed,
                methods=(method,),
            )
            parts.append(found.assign(n=int(fold["n"].iloc[0]), fold=number))
        return pd.concat(parts, ignore_index=True)

    def scores(self, embedding: str, width: int, number: int) -> np.ndarray:
        """A fold's principal scores, computed once per (embedding, width, fold)."""
        key = (embedding, width, number)
        if key not in self._scores:
            self._scores[key] = principal_scores(self.vectors[embedding][number], width)
        return self._scores[key]

    def score(self, method: str, settings: dict, clustering: dict, seed: int) -> dict:
        """Recovery and the held-out significance of one method's worst slice."""
        per_sample = self.slices(method, settings, clustering, seed)
        worst = slice_summary(per_sample).query("slice == 0")
        if worst.empty:
            tested = dict.fromkeys(("gap", "p_value", "excess_gap", "excess_p_value"), np.nan)
            return {**half_recovery(per_sample, self.planted), **tested, "significant": False}
        row = worst.iloc[0]
        return {
            **half_recovery(per_sample, self.planted),
            **{key: float(row[key]) for key in ("gap", "p_value", "excess_gap", "excess_p_value")},
            "significant": bool(row["underperforms"]),
        }


def candidate_settings(method: str, embeddings: list[str]) -> list[dict]:
    """Every setting the tuning tries for ``method``: grid × embeddings × PCA widths."""
    grid = TUNING_GRID.get(method, [{}])
    return [
        {**setting, "embedding": embedding, "pca_components": width}
        for setting, embedding, width in itertools.product(grid, embeddings, PCA_GRID)
    ]


def tune(
    datasets: list[PlantedDataset], embeddings: list[str], clustering: dict, seed: int
) -> pd.DataFrame:
    """Every candidate setting of every method on the tuning datasets.

    Returns
    -------
    DataFrame
        One row per (method, candidate, dataset): ``method, settings`` (JSON), ``dataset``
        and :data:`RECOVERY`.
    """

    rows = []
    for method in METHODS:
        for settings in candidate_settings(method, embeddings):
            for dataset in datasets:
                found = dataset.score(method, settings, clustering, seed)
                rows.append(
                    {
                        "method": method,
                        "settings": json.dumps(settings, sort_keys=True),
                        "dataset": dataset.name,
                        "setting": dataset.label,
                        **{key: found[key] for key in RECOVERY},
                    }
                )
    return pd.DataFrame(rows)


def chosen_settings(tuning: pd.DataFrame) -> tuple[dict[str, dict], str]:
    """Each method's best candidate (mean precision@10, then AUROC) and the default method.

    Returns
    -------
    settings : dict of str to dict
        Method → its frozen settings.
    default : str
        The method whose best candidate scores highest.
    """

    means = tuning.groupby(["method", "settings"])[["precision_at_10", "auroc"]].mean()
    means = means.sort_values(["precision_at_10", "auroc"], ascending=False)
    best = means.reset_index().drop_duplicates("method")
    settings = {row.method: json.loads(row.settings) for row in best.itertuples()}
    return settings, best["method"].iloc[0]


def scored_table(
    datasets: list[PlantedDataset], settings: dict[str, dict], clustering: dict, seed: int
) -> pd.DataFrame:
    """Every method (frozen settings) and baseline on the test datasets, with their ceilings.

    Returns
    -------
    DataFrame
        One row per (dataset, method): ``setting, dataset, draw, method``, :data:`RECOVERY`,
        ``gap, p_value, excess_gap, excess_p_value, significant`` and the :func:`ceiling`
        columns.
    """
    rows = []
    baseline = {"embedding": "model", "pca_components": PCA_GRID[0]}
    for dataset in datasets:
        limit = ceiling(dataset.folds, dataset.planted, dataset.digit)
        for method in METHODS + BASELINES:
            found = dataset.score(method, settings.get(method, baseline), clustering, seed)
            rows.append(
                {
                    "setting": dataset.label,
                    "dataset": dataset.name,
                    "draw": dataset.source.get("draw", 0),
                    "method": method,
                    **found,
                    **limit,
                }
            )
    return pd.DataFrame(rows)


def paired_difference(table: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Per setting: the mean over seeds of ``first``'s precision@10 minus ``second``'s.

    Returns
    -------
    DataFrame
        ``setting, seeds, difference, low, high`` (95 % t interval over seeds; NaN bounds
        with fewer than two seeds).
    """
    wide = table.pivot_table(
        index=["setting", "draw"], columns="method", values="precision_at_10", sort=False
    )
    rows = []
    for setting, frame in wide.groupby(level="setting", sort=False):
        difference = (frame[first] - frame[second]).dropna().to_numpy()
        if len(difference) == 0:
            continue
        mean = difference.mean()
        half = (
            stats.t.ppf(0.975, len(difference) - 1)
            * difference.std(ddof=1)
            / np.sqrt(len(difference))
            if len(difference) > 1
            else np.nan
        )
        rows.append(
            {
                "setting": setting,
                "seeds": len(difference),
                "difference": mean,
                "low": mean - half,
                "high": mean + half,
            }
        )
    return pd.DataFrame(rows)


def mean_interval(values: pd.Series) -> str:
    """``0.62 (0.48–0.76)``: the mean over seeds with its 95 % t interval."""
    values = values.dropna()
    if len(values) < 2:
        return f"{values.mean():.2f}" if len(values) else "–"
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return f"{values.mean():.2f} ({values.mean() - half:.2f}–{values.mean() + half:.2f})"


def summary_markdown(
    table: pd.DataFrame, tuning: pd.DataFrame, settings: dict, default: str
) -> str:
    """The README's "Does it work?": the whole benchmark, as measured.

    Parameters
    ----------
    table : DataFrame
        :func:`scored_table`.
    tuning : DataFrame
        :func:`tune`.
    settings : dict
        Each method's frozen settings.
    default : str
        The default method.

    Returns
    -------
    str
        Markdown, ending with a newline.
    """
    methods = list(METHODS + BASELINES)
    planted = table[table["setting"] != NULL_SETTING]
    order = list(dict.fromkeys(planted["setting"]))
    sections = [
        f"Default method (best tuning precision@10): **{default}**. Frozen settings: "
        + "; ".join(f"{method} {settings[method]}" for method in METHODS)
        + ".",
    ]
    for value, title in (
        ("precision_at_10", "Precision@10"),
        ("precision_at_25", "Precision@25"),
        ("auroc", "AUROC of the worst-slice score"),
    ):
        by_cell = planted.groupby(["setting", "method"], sort=False)[value]
        view = by_cell.apply(mean_interval).unstack().reindex(index=order, columns=methods)
        sections += [f"{title} on the test digit (mean over seeds, 95 % CI):", view.to_markdown()]
    paired = []
    for baseline in BASELINES + tuple(m for m in METHODS if m != default):
        for row in paired_difference(planted, default, baseline).itertuples():
            paired.append(
                {
                    "setting": row.setting,
                    "against": baseline,
                    "difference": f"{row.difference:+.2f} ({row.low:+.2f} to {row.high:+.2f})",
                }
            )
    if paired:
        paired_view = pd.DataFrame(paired).pivot(
            index="setting", columns="against", values="difference"
        )
        sections += [
            f"Paired across seeds: {default}'s precision@10 minus each other method's (95 % CI):",
            paired_view.reindex(order).to_markdown(),
        ]
    rates = table.groupby(["setting", "method"], sort=False)["significant"].mean().unstack()
    raw = (
        (table.assign(raw=table["p_value"] < SIGNIFICANCE))
        .groupby(["setting", "method"], sort=False)["raw"]
        .mean()
        .unstack()
    )
    sections += [
        "Share of seeds in which the worst slice underperforms on the held-out halves as "
        "summary.md reports it (excess failure beyond the model's recalibrated confidence, "
        "one-sided p < 0.05); with nothing planted this is the false-positive rate. The "
        "outcome-defined baselines (loss, confusion_cell) select on the measured half's own "
        "errors, so for them it is no test:",
        rates[methods].to_markdown(floatfmt=".2f"),
        "The same for the raw failure gap (no confidence): hard images make it fire with "
        "nothing planted too:",
        raw[methods].to_markdown(floatfmt=".2f"),
    ]
    per_dataset = table.drop_duplicates("dataset")
    columns = ["planted_share", "planted_accuracy", "other_accuracy", "planted_error_share"]
    if "digits_differ_p" in per_dataset:
        per_dataset = per_dataset.assign(digits_differ=per_dataset["digits_differ_p"] < 0.05)
        columns += ["digits_differ", "hardest_digit_accuracy"]
    ceilings = per_dataset.groupby("setting", sort=False)[columns].mean()
    found = per_dataset.groupby("setting", sort=False)["planted_gap_p"]
    ceilings["seeds_planted_worse"] = found.apply(
        lambda p: f"{int((p < SIGNIFICANCE).sum())}/{p.notna().sum()}"
    )
    sections += [
        "The ceiling: the planted group's accuracy against the rest's, the share of errors "
        "that are planted, in how many seeds the planted group is significantly less "
        "accurate (Fisher, one-sided), the share of seeds whose ten digits differ in accuracy "
        "(chi-square p < 0.05: real slices, planted or not) and the hardest digit's accuracy:",
        ceilings.to_markdown(floatfmt=".3f"),
    ]
    tuned = tuning.groupby(["method", "settings"])[RECOVERY].mean().reset_index()
    tuned = tuned.sort_values(["method", "precision_at_10"], ascending=[True, False])
    sections += [
        "Tuning (the tuning digit; mean over its datasets):",
        tuned.to_markdown(index=False, floatfmt=".2f"),
    ]
    return "\n\n".join(sections) + "\n"


def load_datasets(inputs: dict, sources: dict[str, dict]) -> list[PlantedDataset]:
    """Read every planted dataset's manifest, images and folds."""
    datasets = []
    for name, source in sorted(sources.items(), key=lambda item: (setting_order(item[1]), item[0])):
        folds = [pd.read_parquet(path) for path in inputs[f"{name}_features"]]
        manifest = pd.read_parquet(inputs[f"{name}_manifest"][0])
        images = np.load(inputs[f"{name}_images"][0], mmap_mode="r")
        datasets.append(PlantedDataset(name, source, manifest, images, folds))
    return datasets


def split_roles(
    datasets: list[PlantedDataset], tuning_digit: int
) -> tuple[list[PlantedDataset], list[PlantedDataset]]:
    """Tuning datasets (planted ``digit`` = the tuning digit) and test datasets (the rest).

    Raises
    ------
    HetcvError
        When either side is empty, or no test dataset has nothing planted.
    """
    tuning = [
        d
        for d in datasets
        if d.source.get("digit", 8) == tuning_digit and d.source["variant"] != "balanced"
    ]
    test = [d for d in datasets if d not in tuning]
    if not tuning:
        raise HetcvError(
            f"validation.tuning_digit: no planted dataset has source.digit {tuning_digit}"
        )
    if not any(d.source["variant"] == "balanced" for d in test):
        raise HetcvError("validation: no dataset has source.variant 'balanced' (the null setting)")
    if not any(d.source["variant"] != "balanced" for d in test):
        raise HetcvError(
            f"validation: every planted dataset uses the tuning digit {tuning_digit}; "
            "nothing is left to test"
        )
    return tuning, test


def run_validation_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The validation rule: tune on the tuning digit, score everything on the test digit.

    Parameters
    ----------
    inputs : dict
        ``{dataset}_features`` (every fold), ``{dataset}_manifest`` and ``{dataset}_images``
        for each planted dataset.
    outputs : dict
        ``table`` (the test rows, CSV), ``tuning`` (CSV) and ``summary`` (Markdown).
    params : dict
        ``settings`` (dataset → source config), ``tuning_digit``, ``embeddings``,
        ``clustering`` (the selected one with ``fcm``) and ``seed``.
    """

    datasets = load_datasets(inputs, params["settings"])
    tuning_sets, test_sets = split_roles(datasets, params["tuning_digit"])
    clustering, seed = params["clustering"], params["seed"]
    tuning = tune(tuning_sets, params["embeddings"], clustering, seed)
    settings, default = chosen_settings(tuning)
    table = scored_table(test_sets, settings, clustering, seed)
    write_csv(tuning, outputs["tuning"])
    write_csv(table, outputs["table"])
    with atomic_path(outputs["summary"]) as temporary:
        temporary.write_text(summary_markdown(table, tuning, settings, default))
