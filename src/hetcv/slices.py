"""Where does the model fail? Cross-fitted slice discovery beside the paper's clustering.

Per (n, fold), the held-out samples are split at random into two halves, stratified by class.
Each method finds its slices on one half (the *fitting* half) and is scored on the other (the
*evaluation* half); then the halves swap. A slice is a region of the embedding (with the true
class where the method uses it): the evaluation half's memberships never use that half's
predictions or errors, so the gap measured there has no winner's curse, and a slice that
"underperforms" on the evaluation half does so on data that played no part in finding it.

The methods (:data:`METHODS`):

- ``domino``: an error-aware mixture in the manner of Domino (Eyuboglu et al., ICLR 2022):
  diagonal Gaussians over the embedding times a categorical over the true class (weight
  :data:`CLASS_WEIGHT`) and over the predicted class probabilities (weight ``gamma``),
  overclustered (``components``); fitted by EM on the fitting half. On the evaluation half the
  prediction term is left out, so membership depends on the embedding and the class alone.
- ``george``: overclustering within each true class in the manner of GEORGE (Sohoni et al.,
  NeurIPS 2020): a diagonal Gaussian mixture of ``components`` per class on the embedding.
- ``error_predictor``: a cross-fitted linear model on the embedding, one per class, that
  predicts each sample's failure (Jain et al., ICLR 2023: an SVM on CLIP features; here an
  L2-penalised logistic regression, a ridge for regression). The slice is the samples whose
  predicted failure is in the fitting half's top :data:`TOP_SHARE`.
- ``worst_cluster``: the paper's clustering (``clustering.selected`` on the PCA scores of the
  embedding, fitted on every held-out sample without labels); the worst cluster is chosen on
  the fitting half, samples ranked by their membership in it.
- ``neighbours``: each sample's shrunk failure rate among its ``k`` nearest fitting-half
  neighbours of the same class (:func:`hetcv.slice_finders.neighbours`), a local error-rate
  estimate.
- baselines: ``random`` (a random :data:`TOP_SHARE` of samples, ranked at random), ``loss``
  (samples ranked by their own loss: the slice is the top :data:`TOP_SHARE` by the fitting
  half's loss quantile) and ``confusion_cell`` (the fitting half's worst cell of the confusion
  matrix, the largest off-diagonal one, its evaluation-half members ranked by loss) and
  ``confidence_bins`` (quantile bins of the model's confidence, ranked on the fitting half). Both
  outcome-defined baselines select on the evaluation half's own errors: their "gap" is no
  test, only a ceiling for ranking.

Slices of every partition method are ranked worst first by their failure rate on the fitting
half, shrunk towards the half's rate by :data:`PRIOR_SAMPLES` pseudo-samples, so that a
component of three errors does not outrank one of thirty.

"Failure" is ``1 − correct`` for classification and the squared error divided by the
variance of the targets for regression; regression's "classes" are the target's quartiles
(:data:`REGRESSION_BINS`) and its "predicted class" the prediction's quartile.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats

from hetcv.calibration import confidence_design, fit_recalibration
from hetcv.clustering import fit_partition
from hetcv.columns import feature_columns
from hetcv.io import optional_file, write_csv, write_parquet
from hetcv.profiles import slice_profile
from hetcv.seeding import derive_seed
from hetcv.slice_finders import (
    BASELINES,
    FINDERS,
    METHODS,
    OUTCOME_DEFINED,
    SliceInputs,
    SliceScores,
    principal_scores,
    standardised,
)
from hetcv.stats import SIGNIFICANCE

REPORTED_SLICES = 3
REGRESSION_BINS = 4


# ---------------------------------------------------------------------------------------------
# Inputs


def slice_inputs(fold: pd.DataFrame, embedding: np.ndarray, task: str) -> SliceInputs:
    """:class:`SliceInputs` of one fold's held-out rows.

    Parameters
    ----------
    fold : DataFrame
        ``features.parquet`` rows: ``target, prediction, loss`` and ``correct`` with
        ``probability_*`` (classification) or ``sq_error`` (regression).
    embedding : ndarray of shape (n_samples, n_dims)
        The fold's :func:`standardised` principal scores, row for row.
    task : {"classification", "regression", "score"}

    Returns
    -------
    SliceInputs
    """
    if task == "classification":
        columns = sorted(
            (c for c in fold.columns if c.startswith("probability_")),
            key=lambda c: int(c.rsplit("_", 1)[1]),
        )
        classes = fold["target"].to_numpy(np.int64)
        probabilities = fold[columns].to_numpy(np.float64)
        failure = 1.0 - fold["correct"].to_numpy(np.float64)
    elif task == "score":
        # No classes and no prediction: one class, and a sample fails by its loss, its
        # distance from the best score (0 to 1).
        classes = np.zeros(len(fold), dtype=np.int64)
        probabilities = np.ones((len(fold), 1))
        failure = fold["loss"].to_numpy(np.float64)
    else:
        target = fold["target"].to_numpy(np.float64)
        edges = np.quantile(target, np.linspace(0, 1, REGRESSION_BINS + 1)[1:-1])
        classes = np.searchsorted(edges, target, side="right")
        predicted = np.searchsorted(edges, fold["prediction"].to_numpy(np.float64), side="right")
        probabilities = np.eye(REGRESSION_BINS)[predicted]
        spread = target.var()
        failure = fold["sq_error"].to_numpy(np.float64) / (spread if spread > 0 else 1.0)
    return SliceInputs(
        embedding, classes, probabilities, failure, fold["loss"].to_numpy(np.float64)
    )


def halves(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random split into halves 0 and 1, stratified by class (odd counts alternate).

    Parameters
    ----------
    classes : ndarray of shape (n_samples,)
    rng : Generator

    Returns
    -------
    ndarray of shape (n_samples,), int
    """
    half = np.empty(len(classes), dtype=np.int64)
    start = int(rng.integers(2))
    for value in np.unique(classes):
        rows = rng.permutation(np.flatnonzero(classes == value))
        half[rows] = (np.arange(len(rows)) + start) % 2
        start = (start + len(rows)) % 2
    return half


# ---------------------------------------------------------------------------------------------
# Ranking slices on the fitting half


# ---------------------------------------------------------------------------------------------
# The methods: each finds slices on `fit` and scores `evaluation`


def cross_fitted(
    data: SliceInputs, half: np.ndarray, method: str, settings: dict, seed: int
) -> SliceScores:
    """Slices of ``method`` found on each half and scored on the other, for every sample.

    Parameters
    ----------
    data : SliceInputs
        The whole fold.
    half : ndarray of shape (n_samples,)
        :func:`halves`.
    method : str
        A key of :data:`FINDERS`.
    settings : dict
        The method's settings (``worst_cluster``: ``membership``, the fold's memberships).
    seed : int

    Returns
    -------
    SliceScores
        Each sample's slice and score from the slices found on the other half.
    """
    slice_of = np.empty(len(data), dtype=np.int64)
    score = np.empty(len(data))
    for evaluated in (0, 1):
        fit_rows, evaluation_rows = half != evaluated, half == evaluated
        these = dict(settings)
        if method == "worst_cluster":
            membership = settings["membership"]
            these["membership"] = (membership[fit_rows], membership[evaluation_rows])
        found = FINDERS[method](
            data.take(fit_rows), data.take(evaluation_rows), these, seed + evaluated
        )
        slice_of[evaluation_rows], score[evaluation_rows] = found.slice, found.score
    return SliceScores(slice_of, score)


# ---------------------------------------------------------------------------------------------
# The held-out gap


def gap_estimate(failure: np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """Failure in the slice minus the rest's, and the variance of that difference.

    Binary failures use the Agresti–Caffo adjustment (one failure and one success added to
    each side) for the variance, so that a slice without errors still has one; continuous
    failures use Welch's variance.

    Parameters
    ----------
    failure : ndarray of shape (n_samples,)
    inside : ndarray of shape (n_samples,), bool

    Returns
    -------
    gap, variance : float
        NaN when either side has fewer than 2 samples.
    """
    slice_failure, rest_failure = failure[inside], failure[~inside]
    if min(len(slice_failure), len(rest_failure)) < 2:
        return np.nan, np.nan
    gap = slice_failure.mean() - rest_failure.mean()
    if np.isin(failure, (0.0, 1.0)).all():
        variance = sum(
            rate * (1 - rate) / (len(side) + 2)
            for side in (slice_failure, rest_failure)
            for rate in [(side.sum() + 1) / (len(side) + 2)]
        )
    else:
        variance = slice_failure.var(ddof=1) / len(slice_failure) + rest_failure.var(ddof=1) / len(
            rest_failure
        )
    return float(gap), float(variance)


def combined_gap(gaps: np.ndarray, variances: np.ndarray, sizes: np.ndarray) -> dict:
    """The size-weighted mean of independent halves' gaps, its 95 % CI and one-sided p-value.

    The halves are disjoint sets of samples, and each gap is measured where its slice was not
    found. Weighting by the slice's size in the measuring half (which its outcomes do not
    decide) keeps the mean unbiased while a half whose slice holds two samples counts little;
    its variance is Σ w²·v / (Σ w)² (normal approximation).

    Parameters
    ----------
    gaps, variances : ndarray
        One entry per (fold, half); NaN entries (a side too small) are left out.
    sizes : ndarray
        The slice's members in each (fold, half).

    Returns
    -------
    dict
        ``gap, gap_low, gap_high`` and ``p_value`` of "the slice fails more than the rest".
    """
    keep = np.isfinite(gaps) & np.isfinite(variances)
    if not keep.any():
        return {"gap": np.nan, "gap_low": np.nan, "gap_high": np.nan, "p_value": np.nan}
    weights = sizes[keep] / sizes[keep].sum()
    gap = float(weights @ gaps[keep])
    error = float(np.sqrt(weights**2 @ variances[keep]))
    if error == 0:
        return {"gap": gap, "gap_low": gap, "gap_high": gap, "p_value": float(gap <= 0)}
    half_width = stats.norm.ppf(0.975) * error
    return {
        "gap": gap,
        "gap_low": gap - half_width,
        "gap_high": gap + half_width,
        "p_value": float(stats.norm.sf(gap / error)),
    }


def expected_failure(data: SliceInputs, half: np.ndarray, task: str) -> np.ndarray:
    """Each sample's chance of being wrong by the model's own recalibrated confidence.

    1 − P(correct) under the logistic recalibration of correctness on confidence and
    predicted class (:func:`hetcv.calibration.fit_recalibration`), fitted on the *other*
    half, so that no sample's outcome calibrates its own expectation. Where the model is
    calibrated, a slice defined without the measuring half's outcomes fails as often as
    expected, however hard its images: the *excess* gap (observed − expected in the slice,
    minus the same in the rest) is then zero. A rare subgroup that the model gets wrong with
    confidence shows up there; a region of merely hard images does not. NaN for regression,
    which has no confidence.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    expected = np.full(len(data), np.nan)
    if task != "classification":
        return expected
    predicted = data.predicted
    design = confidence_design(
        data.probabilities[np.arange(len(data)), predicted], predicted, data.n_classes
    )
    correct = (predicted == data.classes).astype(np.float64)
    for measured in (0, 1):
        fit, rows = half != measured, half == measured
        coefficients = fit_recalibration(correct[fit], design[fit])[0][0]
        expected[rows] = 1.0 - special.expit(design[rows] @ coefficients)
    return expected


# ---------------------------------------------------------------------------------------------
# One dataset


def fold_slices(
    fold: pd.DataFrame,
    scores: np.ndarray,
    *,
    task: str,
    settings: dict,
    clustering: dict,
    seed: int,
    methods: tuple[str, ...] = METHODS + BASELINES,
) -> pd.DataFrame:
    """Every method's cross-fitted slices of one fold's held-out samples.

    Parameters
    ----------
    fold : DataFrame
        The fold's ``features.parquet`` rows (one n, one fold).
    scores : ndarray of shape (n_samples, n_components)
        :func:`principal_scores` of the fold's embedding, row for row.
    task : {"classification", "regression"}
    settings : dict
        One settings dict per method (:data:`METHODS`).
    clustering : dict
        The paper's selected clustering: ``algorithm``, ``k``, ``fcm``.
    seed : int
        Seeds the halves and every method.
    methods : tuple of str

    Returns
    -------
    DataFrame
        One row per (sample, method): ``sample_id, method, slice, score, half, failure`` and
        ``expected`` (:func:`expected_failure`).
    """

    rng = np.random.default_rng(seed)
    data = slice_inputs(fold, standardised(scores), task)
    half = halves(data.classes, rng)
    expected = expected_failure(data, half, task)
    rows = []
    for method in methods:
        these = dict(settings.get(method, {}))
        if method == "worst_cluster":
            # The paper's clustering: on the PCA scores as they are, not standardised.
            these["membership"] = fit_partition(
                scores, clustering["algorithm"], clustering["k"], seed, clustering["fcm"]
            ).membership
        found = cross_fitted(data, half, method, these, seed)
        rows.append(
            pd.DataFrame(
                {
                    "sample_id": fold["sample_id"].to_numpy(),
                    "method": method,
                    "slice": found.slice,
                    "score": found.score,
                    "half": half,
                    "failure": data.failure,
                    "expected": expected,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def slice_summary(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Per method, n and ranked slice: held-out size, failure, and gaps to the rest.

    Parameters
    ----------
    per_sample : DataFrame
        :func:`fold_slices` rows of every (n, fold), with ``n`` and ``fold``.

    Returns
    -------
    DataFrame
        ``method, n, slice, size`` (mean held-out members per fold), ``failure`` and
        ``rest_failure`` (pooled over folds and halves), :func:`combined_gap`'s columns for the
        failure gap (``gap, gap_low, gap_high, p_value``) and for the excess gap beyond the
        model's confidence (``excess_gap, excess_low, excess_high, excess_p_value``; NaN for
        regression), each the folds' and halves' gaps weighted by the slice's size in each,
        and ``underperforms``: the excess gap's p < 0.05 (classification) or the failure
        gap's (regression). Slices 0 … :data:`REPORTED_SLICES` − 1 where a method has them.
    """
    rows = []
    for (method, n), frame in per_sample.groupby(["method", "n"], sort=True):
        folds = frame["fold"].nunique()
        calibrated = frame["expected"].notna().all()
        for rank in range(REPORTED_SLICES):
            inside = frame["slice"].to_numpy() == rank
            if not inside.any():
                continue
            parts = {"gap": [], "excess": []}
            sizes = []
            for _, part in frame.groupby(["fold", "half"], sort=True):
                members = part["slice"].to_numpy() == rank
                failure = part["failure"].to_numpy(np.float64)
                parts["gap"].append(gap_estimate(failure, members))
                residual = failure - part["expected"].to_numpy(np.float64)
                parts["excess"].append(gap_estimate(residual, members))
                sizes.append(members.sum())
            gap, excess = (
                combined_gap(*np.array(parts[key]).T, np.array(sizes)) for key in ("gap", "excess")
            )
            if not calibrated:
                excess = dict.fromkeys(excess, np.nan)
            failure = frame["failure"].to_numpy(np.float64)
            test = excess["p_value"] if calibrated else gap["p_value"]
            rows.append(
                {
                    "method": method,
                    "n": int(n),
                    "slice": rank,
                    "size": inside.sum() / folds,
                    "failure": failure[inside].mean(),
                    "rest_failure": failure[~inside].mean(),
                    **gap,
                    "excess_gap": excess["gap"],
                    "excess_low": excess["gap_low"],
                    "excess_high": excess["gap_high"],
                    "excess_p_value": excess["p_value"],
                    "underperforms": bool(test < SIGNIFICANCE),
                }
            )
    return pd.DataFrame(rows)


PER_SAMPLE_COLUMNS = ["sample_id", "n", "fold", "method", "slice", "score", "half"]


def dataset_slices(
    folds: list[pd.DataFrame],
    vectors: list[np.ndarray],
    manifest: pd.DataFrame,
    *,
    task: str,
    settings: dict,
    clustering: dict,
    metadata_columns: list[str],
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every method's slices of every (n, fold), and their summary.

    Parameters
    ----------
    folds : list of DataFrame
        Each (n, fold)'s ``features.parquet`` rows.
    vectors : list of ndarray
        Each fold's embedding, row for row.
    manifest : DataFrame
        ``sample_id`` and the metadata columns.
    task, settings, clustering
        As for :func:`fold_slices`.
    metadata_columns : list of str
        Profiled in the summary's ``profile`` column.
    seed : int
        With n and fold, seeds each fold.

    Returns
    -------
    per_sample : DataFrame
        :data:`PER_SAMPLE_COLUMNS`, one row per (sample, n, fold, method).
    summary : DataFrame
        :func:`slice_summary` with ``metric`` (accuracy, or 1 − MSE / Var(target) for
        regression: 1 − failure), ``outcome_defined`` (the baselines that select on the
        evaluation half's own errors) and ``profile`` (:func:`slice_profile`).
    """

    parts = []
    for fold, embedding in zip(folds, vectors, strict=True):
        n, number = int(fold["n"].iloc[0]), int(fold["fold"].iloc[0])
        fold_seed = derive_seed(seed, n, number)
        found = fold_slices(
            fold,
            principal_scores(embedding, int(settings["pca_components"])),
            task=task,
            settings=settings,
            clustering=clustering,
            seed=fold_seed,
        )
        parts.append(found.assign(n=n, fold=number))
    per_sample = pd.concat(parts, ignore_index=True)
    summary = slice_summary(per_sample)
    summary["metric"] = 1.0 - summary["failure"]
    summary["outcome_defined"] = summary["method"].isin(OUTCOME_DEFINED)
    metadata = manifest.set_index("sample_id").loc[per_sample["sample_id"], metadata_columns]
    metadata = metadata.reset_index(drop=True)
    held_out = pd.concat(folds, ignore_index=True).drop_duplicates("sample_id")
    classes = (
        held_out.set_index("sample_id").loc[per_sample["sample_id"], "target"].to_numpy()
        if task == "classification"
        else None
    )
    summary["profile"] = [
        slice_profile(
            (
                (per_sample["method"] == row.method)
                & (per_sample["n"] == row.n)
                & (per_sample["slice"] == row.slice)
            ).to_numpy(),
            metadata,
            classes,
        )
        for row in summary.itertuples()
    ]
    return per_sample[PER_SAMPLE_COLUMNS], summary


def fold_vectors(fold: pd.DataFrame, embedding: str, images, row_of: pd.Series) -> np.ndarray:
    """One fold's embedding: its back-model (or imported) features, or its prepared images.

    Parameters
    ----------
    fold : DataFrame
        ``features.parquet`` rows.
    embedding : {"model", "pixels"}
    images : ndarray or None
        ``images.npy`` (rows as in the manifest) for ``pixels``.
    row_of : Series
        ``sample_id`` → row of ``images``.

    Returns
    -------
    ndarray of shape (n_samples, n_dims)
    """

    if embedding == "model":
        return fold[feature_columns(fold.columns)].to_numpy(np.float64)
    rows = row_of.loc[fold["sample_id"]].to_numpy()
    return np.asarray(images[rows], dtype=np.float64).reshape(len(rows), -1)


def run_slices_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The slices rule: cross-fitted slices of every (n, fold) of one dataset.

    Parameters
    ----------
    inputs : dict
        ``features`` (every (n, fold)), ``manifest`` and ``images`` (the prepared images, read
        for ``embedding: pixels``; empty for a features source).
    outputs : dict
        ``per_sample`` (``slices_per_sample.csv``) and ``slices`` (the summary, Parquet).
    params : dict
        ``task``, ``metadata_columns``, ``slices`` (embedding, pca_components and each method's
        settings), ``clustering`` (the selected one, with ``fcm``) and ``seed``.
    """

    manifest = pd.read_parquet(inputs["manifest"])
    settings = params["slices"]
    path = optional_file(inputs["images"])
    images = np.load(path, mmap_mode="r") if settings["embedding"] == "pixels" else None
    row_of = pd.Series(np.arange(len(manifest)), index=manifest["sample_id"])
    folds = [pd.read_parquet(path) for path in inputs["features"]]
    per_sample, summary = dataset_slices(
        folds,
        [fold_vectors(fold, settings["embedding"], images, row_of) for fold in folds],
        manifest,
        task=params["task"],
        settings=settings,
        clustering=params["clustering"],
        metadata_columns=params["metadata_columns"],
        seed=params["seed"],
    )
    write_csv(per_sample, outputs["slices_per_sample"])
    write_parquet(summary, outputs["slices"])
