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

from hetcv import mnist
from hetcv.clustering import fit_partition
from hetcv.columns import NULL_SETTING
from hetcv.errors import HetcvError
from hetcv.io import atomic_path, write_csv
from hetcv.metrics import dataset_metric
from hetcv.partitions import SampleSize
from hetcv.planted import class_profile, membership_ceiling, validity_gate, within_class_auroc
from hetcv.seeding import derive_seed
from hetcv.selected import fold_partitions, selected_statistics
from hetcv.slice_finders import BASELINES, METHODS, principal_scores, standardised
from hetcv.slices import fold_slices, fold_vectors, slice_summary
from hetcv.subgroup_variants import recovery
from hetcv.validation_report import CEILING, RECOVERY, summary_markdown

TUNING_GRID = {
    "domino": [{"components": c, "gamma": g} for c in (10, 25) for g in (1.0, 10.0)],
    "george": [{"components": c} for c in (3, 6)],
    "error_predictor": [{"c": c} for c in (0.1, 1.0)],
    "worst_cluster": [{}],
    "neighbours": [{"k": k} for k in (10, 25, 50)],
}
PCA_GRID = (10, 25)


def is_mnist(source: dict) -> bool:
    return source.get("kind") == "mnist"


def is_null(source: dict) -> bool:
    """Whether a validation setting plants nothing (digits ``balanced``, an MNIST null rung)."""
    return mnist.is_null(source) if is_mnist(source) else source["variant"] == "balanced"


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
    if is_mnist(source):
        return mnist.setting_label(source)
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
    if is_mnist(source):
        return (mnist.MECHANISMS.index(source["mechanism"]), -mnist.strength(source))
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
        **validity_gate(correct, member),
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


def half_recovery(
    per_sample: pd.DataFrame, planted: pd.Series, target: pd.Series | None = None
) -> dict[str, float]:
    """Precision@10, @25, AUROC and within-class AUROC per (fold, evaluation half), averaged.

    Parameters
    ----------
    per_sample : DataFrame
        One method's :func:`hetcv.slices.fold_slices` rows with ``fold``.
    planted : Series of bool
        Indexed by ``sample_id``.
    target : Series, optional
        The true class, indexed by ``sample_id`` (without it, ``within_auroc`` is NaN).

    Returns
    -------
    dict of str to float
        :data:`RECOVERY` (NaN when nothing is planted).
    """
    member = planted.loc[per_sample["sample_id"]].to_numpy(dtype=bool)
    if not member.any():
        return dict.fromkeys(RECOVERY, np.nan)
    classes = (
        target.loc[per_sample["sample_id"]].to_numpy()
        if target is not None
        else np.zeros(len(per_sample), dtype=int)
    )
    scores = []
    framed = per_sample.assign(member=member, classes=classes)
    for _, rows in framed.groupby(["fold", "half"], sort=True):
        found = recovery(
            rows["slice"].to_numpy() == 0, rows["score"].to_numpy(), rows["member"].to_numpy()
        )
        found["within_auroc"] = (
            within_class_auroc(
                rows["score"].to_numpy(), rows["member"].to_numpy(), rows["classes"].to_numpy()
            )
            if target is not None
            else np.nan
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
        indexed = manifest.set_index("sample_id")
        self.planted = indexed["planted"]
        self.digit = indexed["subgroup"] if "subgroup" in manifest else None
        self.metadata = indexed[[c for c in ("marker", "scanner") if c in indexed]]
        largest = max(int(fold["n"].iloc[0]) for fold in folds)
        self.folds = [fold for fold in folds if int(fold["n"].iloc[0]) == largest]
        held_out = pd.concat(self.folds, ignore_index=True).drop_duplicates("sample_id")
        self.target = held_out.set_index("sample_id")["target"]
        row_of = pd.Series(np.arange(len(manifest)), index=manifest["sample_id"])
        self.vectors = {
            embedding: [fold_vectors(fold, embedding, images, row_of) for fold in self.folds]
            for embedding in ("model", "pixels")
        }
        self._scores: dict[tuple, np.ndarray] = {}

    @property
    def label(self) -> str:
        return setting_label(self.source)

    @property
    def null(self) -> bool:
        return is_null(self.source)

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

    def ceiling_score(self, settings: dict, clustering: dict, seed: int) -> dict:
        """:func:`hetcv.planted.membership_ceiling` on the default's embedding and halves."""
        halves = self.slices("random", settings, clustering, seed)
        parts = []
        for number, fold in enumerate(self.folds):
            rows = halves[halves["fold"] == number]
            embedding = standardised(
                self.scores(settings["embedding"], settings["pca_components"], number)
            )
            member = self.planted.loc[fold["sample_id"]].to_numpy(dtype=bool)
            if member.any():
                score = membership_ceiling(
                    embedding, fold["target"].to_numpy(), member, rows["half"].to_numpy()
                )
            else:
                score = np.zeros(len(fold))
            parts.append(rows.assign(score=score, slice=-1))
        per_sample = pd.concat(parts, ignore_index=True)
        tested = dict.fromkeys(("gap", "p_value", "excess_gap", "excess_p_value"), np.nan)
        return {
            **half_recovery(per_sample, self.planted, self.target),
            **tested,
            "significant": False,
        }

    def profile(self, per_sample: pd.DataFrame) -> dict:
        """The worst slice's most over-represented metadata level within its main class."""
        if self.metadata.empty:
            return {}
        inside = per_sample["slice"].to_numpy() == 0
        if not inside.any():
            return {}
        ids = per_sample["sample_id"]
        rows = class_profile(
            inside,
            self.target.loc[ids].to_numpy(),
            self.metadata.loc[ids].reset_index(drop=True),
        )
        main = max(rows, key=lambda row: (row["members"], row["lift"]))
        return {f"profile_{key}": value for key, value in main.items()}

    def score(self, method: str, settings: dict, clustering: dict, seed: int) -> dict:
        """Recovery and the held-out significance of one method's worst slice."""
        per_sample = self.slices(method, settings, clustering, seed)
        worst = slice_summary(per_sample).query("slice == 0")
        found = half_recovery(per_sample, self.planted, self.target)
        if worst.empty:
            tested = dict.fromkeys(("gap", "p_value", "excess_gap", "excess_p_value"), np.nan)
            return {**found, **tested, "significant": False}
        row = worst.iloc[0]
        return {
            **found,
            **self.profile(per_sample),
            **{key: float(row[key]) for key in ("gap", "p_value", "excess_gap", "excess_p_value")},
            "significant": bool(row["underperforms"]),
        }


INDEX_BOOTSTRAP = 200
INDEX_PERMUTATIONS = 200
INDEX_COLUMNS = ["cv", "debiased_cv", "i_squared", "p_value", "p_calibrated"]


def ladder_index(dataset: PlantedDataset, clustering: dict, seed: int) -> dict[str, float]:
    """The paper's heterogeneity index on one benchmark dataset (its dose–response point).

    The paper's clustering (``clustering``: ``algorithm``, ``k``, ``fcm``, ``pca_components``)
    of each fold's back-model features, one seeded run per fold, and the statistics the study
    reports (:func:`hetcv.summarize.selected_statistics`, with :data:`INDEX_BOOTSTRAP`
    bootstrap replicates and :data:`INDEX_PERMUTATIONS` permutations).

    Returns
    -------
    dict
        :data:`INDEX_COLUMNS`: the raw and the debiased CV (%), I², the permutation p-value
        and the confidence-calibrated one.
    """

    metric = dataset_metric("accuracy", dataset.target.to_numpy(), None)
    width = int(clustering.get("pca_components", PCA_GRID[0]))
    folds = []
    for number, fold in enumerate(dataset.folds):
        run_seed = derive_seed(seed, dataset.name, "index", number)
        partition = fit_partition(
            dataset.scores("model", width, number),
            clustering["algorithm"],
            clustering["k"],
            run_seed,
            clustering["fcm"],
        )
        assignments = pd.DataFrame(
            {
                "repeat": 0,
                "sample_id": fold["sample_id"].to_numpy(),
                "cluster": partition.membership.argmax(axis=1),
            }
        )
        folds.append(fold_partitions(assignments, fold, metric, "all"))
    sample = SampleSize(folds, int(clustering["k"]), "classification")
    row = selected_statistics(
        sample,
        error_aware=False,
        bootstrap=INDEX_BOOTSTRAP,
        permutations=INDEX_PERMUTATIONS,
        seed=derive_seed(seed, dataset.name, "index"),
    )[0]
    return {key: float(row[key]) for key in INDEX_COLUMNS}


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
    means = means.sort_values(["precision_at_10", "auroc"], ascending=False, kind="stable")
    best = means.reset_index().drop_duplicates("method")
    settings = {row.method: json.loads(row.settings) for row in best.itertuples()}
    return settings, best["method"].iloc[0]


def scored_table(
    datasets: list[PlantedDataset],
    settings: dict[str, dict],
    clustering: dict,
    seed: int,
    default: str | None = None,
) -> pd.DataFrame:
    """Every method (frozen settings) and baseline on the test datasets, with their ceilings.

    Parameters
    ----------
    datasets, settings, clustering, seed
        The test datasets, each method's frozen settings, the paper's clustering, the seed.
    default : str, optional
        The default method: the membership ceiling (method :data:`CEILING`) uses its
        embedding and PCA width; without it, the model's features at the first PCA width.

    Returns
    -------
    DataFrame
        One row per (dataset, method): ``setting, dataset, draw, null, mechanism, strength,
        method``, :data:`RECOVERY`, ``gap, p_value, excess_gap, excess_p_value,
        significant``, the worst slice's ``profile_*`` (metadata level over-represented in its
        main class) and the :func:`ceiling` columns (the validity gate among them).
    """
    rows = []
    baseline = {"embedding": "model", "pca_components": PCA_GRID[0]}
    for dataset in datasets:
        limit = ceiling(dataset.folds, dataset.planted, dataset.digit)
        described = {
            "setting": dataset.label,
            "dataset": dataset.name,
            "draw": dataset.source.get("draw", 0),
            "null": dataset.null,
            "mechanism": dataset.source.get("mechanism", dataset.source.get("variant")),
            "strength": mnist.strength(dataset.source) if is_mnist(dataset.source) else np.nan,
            **{
                f"index_{key}": value
                for key, value in ladder_index(dataset, clustering, seed).items()
            },
        }
        for method in METHODS + BASELINES:
            found = dataset.score(method, settings.get(method, baseline), clustering, seed)
            rows.append({**described, "method": method, **found, **limit})
        frozen = {
            **baseline,
            **{
                k: v
                for k, v in settings.get(default, {}).items()
                if k in ("embedding", "pca_components")
            },
        }
        found = dataset.ceiling_score(frozen, clustering, seed)
        rows.append({**described, "method": CEILING, **found, **limit})
    return pd.DataFrame(rows)


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
    """Tuning datasets and test datasets (the rest).

    MNIST datasets tune when their ``source.family`` is ``tune``; digits datasets when their
    planted ``digit`` is the tuning digit.

    Raises
    ------
    HetcvError
        When either side is empty, or no test dataset has nothing planted.
    """

    def tunes(d: PlantedDataset) -> bool:
        if is_mnist(d.source):
            return d.source.get("family", "test") == "tune"
        return d.source.get("digit", 8) == tuning_digit and d.source["variant"] != "balanced"

    tuning = [d for d in datasets if tunes(d)]
    test = [d for d in datasets if d not in tuning]
    if not tuning:
        raise HetcvError(
            f"validation.tuning_digit: no planted dataset has source.digit {tuning_digit} "
            "(nor source.family tune)"
        )
    if not any(d.null for d in test):
        raise HetcvError(
            "validation: no test dataset has source.variant 'balanced' or an MNIST null rung "
            "(the null setting)"
        )
    if not any(not d.null for d in test):
        raise HetcvError(
            "validation: every planted dataset is a tuning one; nothing is left to test"
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
    tuning_sets, test_sets = split_roles(datasets, params.get("tuning_digit", 3))
    clustering, seed = params["clustering"], params["seed"]
    tuning = tune(tuning_sets, params["embeddings"], clustering, seed)
    settings, default = chosen_settings(tuning)
    table = scored_table(test_sets, settings, clustering, seed, default)
    write_csv(tuning, outputs["tuning"])
    write_csv(table, outputs["table"])
    with atomic_path(outputs["summary"]) as temporary:
        temporary.write_text(summary_markdown(table, tuning, settings, default))
