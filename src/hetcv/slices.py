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
  neighbours of the same class (:func:`neighbours`), a local error-rate estimate.
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

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from hetcv.calibration import confidence_design, fit_recalibration
from hetcv.stats import SIGNIFICANCE

METHODS = ("domino", "george", "error_predictor", "worst_cluster", "neighbours")
BASELINES = ("random", "loss", "confusion_cell", "confidence_bins")
OUTCOME_DEFINED = ("loss", "confusion_cell")
FEATURE_FREE = ("loss", "confusion_cell", "confidence_bins")
CLASS_WEIGHT = 10.0  # Domino's y_log_likelihood_weight
PRIOR_SAMPLES = 10.0
TOP_SHARE = 0.1
REPORTED_SLICES = 3
REGRESSION_BINS = 4
EM_ITERATIONS = 200
EM_TOLERANCE = 1e-6
SMOOTHING = 0.1  # pseudo-counts of each class in a component's categorical terms
VARIANCE_FLOOR = 1e-3  # on standardised coordinates


@dataclass(frozen=True)
class SliceInputs:
    """The held-out samples of one fold (or one half of it), as the methods see them.

    Attributes
    ----------
    embedding : ndarray of shape (n_samples, n_dims)
        Standardised principal-component scores (:func:`standardised`).
    classes : ndarray of shape (n_samples,), int
        True class (0 … n_classes − 1), or the target's quartile for regression.
    probabilities : ndarray of shape (n_samples, n_classes)
        Predicted class probabilities (one-hot of the prediction's quartile for regression).
    failure : ndarray of shape (n_samples,)
        1 − correct, or the squared error over the targets' variance.
    loss : ndarray of shape (n_samples,)
        The model's per-sample loss.
    """

    embedding: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray
    failure: np.ndarray
    loss: np.ndarray

    def __len__(self) -> int:
        return len(self.failure)

    def take(self, rows: np.ndarray) -> SliceInputs:
        return SliceInputs(
            self.embedding[rows],
            self.classes[rows],
            self.probabilities[rows],
            self.failure[rows],
            self.loss[rows],
        )

    @property
    def n_classes(self) -> int:
        return self.probabilities.shape[1]

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


@dataclass(frozen=True)
class SliceScores:
    """One method's slices on an evaluation half.

    Attributes
    ----------
    slice : ndarray of shape (n_samples,), int
        The ranked slice each sample belongs to (0 = the worst), or -1 for none.
    score : ndarray of shape (n_samples,)
        Membership in, or score for, the worst slice: higher ranks first.
    """

    slice: np.ndarray
    score: np.ndarray


# ---------------------------------------------------------------------------------------------
# Inputs


def principal_scores(vectors: np.ndarray, n_components: int) -> np.ndarray:
    """PCA scores of one fold's embedding (model features, the user's, or pixels).

    Fitted on every held-out sample of the fold: PCA sees no label, so no half learns from the
    other's outcomes. The paper's worst cluster clusters these scores as they are; the other
    methods see them :func:`standardised`.

    Parameters
    ----------
    vectors : ndarray of shape (n_samples, ...)
        Flattened to one row per sample.
    n_components : int
        ``slices.pca_components``; capped at ``n_samples − 1`` and the vectors' width.

    Returns
    -------
    ndarray of shape (n_samples, n_kept)
    """
    from hetcv.cluster import pca_scores

    return pca_scores(vectors.reshape(len(vectors), -1), n_components)


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each column with mean 0 and standard deviation 1 (constant columns centred only)."""
    spread = scores.std(axis=0)
    return (scores - scores.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


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


def shrunk_failure(weights: np.ndarray, failure: np.ndarray) -> np.ndarray:
    """Each slice's failure rate, shrunk to the overall rate by :data:`PRIOR_SAMPLES`.

    Parameters
    ----------
    weights : ndarray of shape (n_samples, n_slices)
        Memberships (soft or 0/1).
    failure : ndarray of shape (n_samples,)

    Returns
    -------
    ndarray of shape (n_slices,)
    """
    overall = failure.mean()
    return (failure @ weights + PRIOR_SAMPLES * overall) / (weights.sum(axis=0) + PRIOR_SAMPLES)


def ranked(
    fit_weights: np.ndarray, fit_failure: np.ndarray, evaluation_weights: np.ndarray
) -> SliceScores:
    """Rank slices worst first on the fitting half; assign the evaluation half to them.

    Parameters
    ----------
    fit_weights : ndarray of shape (n_fit, n_slices)
        Memberships of the fitting half.
    fit_failure : ndarray of shape (n_fit,)
    evaluation_weights : ndarray of shape (n_evaluation, n_slices)
        Memberships of the evaluation half, computed without its outcomes.

    Returns
    -------
    SliceScores
        ``slice``: the rank of each sample's most likely slice; ``score``: its expected failure
        rate, the memberships weighing the slices' shrunk fitting-half rates. The worst slice's
        members rank first, the central ones before those on its border, and the next worst
        slice's members after them, where a bare membership would tie.
    """
    rates = shrunk_failure(fit_weights, fit_failure)
    order = np.argsort(-rates, kind="stable")
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(len(order))
    return SliceScores(rank_of[evaluation_weights.argmax(axis=1)], evaluation_weights @ rates)


# ---------------------------------------------------------------------------------------------
# The methods: each finds slices on `fit` and scores `evaluation`


def _log_gaussian(points: np.ndarray, means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """log N(x; μ_k, diag σ²_k) for every sample and component, shape (n, k)."""
    precision = 1.0 / variances
    quadratic = (
        (points**2) @ precision.T
        - 2.0 * points @ (means * precision).T
        + np.sum(means**2 * precision, axis=1)
    )
    return -0.5 * (quadratic + np.sum(np.log(2.0 * np.pi * variances), axis=1))


def _softmax_rows(log_weights: np.ndarray) -> np.ndarray:
    shifted = np.exp(log_weights - log_weights.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class ErrorAwareMixture:
    """A fitted Domino-style mixture: Gaussian embedding × class × prediction terms."""

    log_weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    log_class: np.ndarray
    log_prediction: np.ndarray

    def log_joint(self, data: SliceInputs, gamma: float) -> np.ndarray:
        """Unnormalised log responsibilities; ``gamma = 0`` leaves out the prediction."""
        one_hot = np.eye(data.n_classes)[data.classes]
        joint = (
            self.log_weights
            + _log_gaussian(data.embedding, self.means, self.variances)
            + CLASS_WEIGHT * one_hot @ self.log_class.T
        )
        if gamma:
            joint = joint + gamma * data.probabilities @ self.log_prediction.T
        return joint


def fit_error_aware_mixture(
    data: SliceInputs, components: int, gamma: float, seed: int
) -> ErrorAwareMixture:
    """EM for the mixture of :func:`domino`, started from k-means on the joint features.

    Parameters
    ----------
    data : SliceInputs
        The fitting half.
    components : int
        Mixture components (capped at a fifth of the samples).
    gamma : float
        Weight of the predicted-probability term.
    seed : int

    Returns
    -------
    ErrorAwareMixture
    """
    from sklearn.cluster import KMeans

    components = max(1, min(components, len(data) // 5))
    one_hot = np.eye(data.n_classes)[data.classes]
    joint = np.column_stack(
        [data.embedding, np.sqrt(CLASS_WEIGHT) * one_hot, np.sqrt(gamma) * data.probabilities]
    )
    labels = KMeans(n_clusters=components, n_init=3, random_state=seed).fit_predict(joint)
    responsibility = np.eye(components)[labels]
    previous = -np.inf
    for _ in range(EM_ITERATIONS):
        mass = responsibility.sum(axis=0) + 1e-10
        means = responsibility.T @ data.embedding / mass[:, None]
        variances = responsibility.T @ data.embedding**2 / mass[:, None] - means**2
        smoothing = SMOOTHING * data.n_classes
        model = ErrorAwareMixture(
            np.log(mass / mass.sum()),
            means,
            np.maximum(variances, VARIANCE_FLOOR),
            np.log((responsibility.T @ one_hot + SMOOTHING) / (mass[:, None] + smoothing)),
            np.log(
                (responsibility.T @ data.probabilities + SMOOTHING) / (mass[:, None] + smoothing)
            ),
        )
        log_joint = model.log_joint(data, gamma)
        top = log_joint.max(axis=1, keepdims=True)
        likelihood = float(np.mean(top[:, 0] + np.log(np.exp(log_joint - top).sum(axis=1))))
        responsibility = _softmax_rows(log_joint)
        if likelihood - previous < EM_TOLERANCE * abs(likelihood):
            break
        previous = likelihood
    return model


def domino(fit: SliceInputs, evaluation: SliceInputs, settings: dict, seed: int) -> SliceScores:
    """Error-aware overclustered mixture (Domino); see the module doc."""
    gamma = float(settings["gamma"])
    model = fit_error_aware_mixture(fit, int(settings["components"]), gamma, seed)
    return ranked(
        _softmax_rows(model.log_joint(fit, gamma)),
        fit.failure,
        _softmax_rows(model.log_joint(evaluation, 0.0)),
    )


def george(fit: SliceInputs, evaluation: SliceInputs, settings: dict, seed: int) -> SliceScores:
    """Within-class overclustering (GEORGE); a class's components hold only its samples."""
    from sklearn.mixture import GaussianMixture

    fit_columns, evaluation_columns = [], []
    for value in range(fit.n_classes):
        fit_rows, evaluation_rows = fit.classes == value, evaluation.classes == value
        count = min(int(settings["components"]), int(fit_rows.sum()) // 5)
        if count < 1:
            continue
        model = GaussianMixture(
            n_components=count, covariance_type="diag", reg_covar=VARIANCE_FLOOR, random_state=seed
        ).fit(fit.embedding[fit_rows])
        for rows, data, columns in (
            (fit_rows, fit, fit_columns),
            (evaluation_rows, evaluation, evaluation_columns),
        ):
            block = np.zeros((len(data), count))
            if rows.any():
                block[rows] = model.predict_proba(data.embedding[rows])
            columns.append(block)
    if not fit_columns:  # no class has the five samples a component needs
        return SliceScores(np.full(len(evaluation), -1), np.zeros(len(evaluation)))
    return ranked(np.hstack(fit_columns), fit.failure, np.hstack(evaluation_columns))


def top_share_slice(fit_score: np.ndarray, evaluation_score: np.ndarray) -> SliceScores:
    """Slice 0: evaluation samples scoring above the fitting half's top-:data:`TOP_SHARE` cut."""
    cut = np.quantile(fit_score, 1.0 - TOP_SHARE)
    inside = evaluation_score >= cut
    return SliceScores(np.where(inside, 0, -1), evaluation_score.astype(np.float64))


def _predicted_failure(model, points: np.ndarray) -> np.ndarray:
    """A classifier's probability of failure, or a regressor's predicted failure."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(points)[:, 1]
    return model.predict(points)


def error_predictor(
    fit: SliceInputs, evaluation: SliceInputs, settings: dict, seed: int
) -> SliceScores:
    """A per-class linear failure predictor on the embedding (Jain et al. 2023)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    binary = np.isin(fit.failure, (0.0, 1.0)).all()
    fit_score, evaluation_score = np.empty(len(fit)), np.empty(len(evaluation))
    for value in range(fit.n_classes):
        fit_rows, evaluation_rows = fit.classes == value, evaluation.classes == value
        target = fit.failure[fit_rows]
        if binary and min(target.sum(), len(target) - target.sum()) < 2:
            # Too few failures (or successes) in the class to fit a direction: its rate stands.
            rate = (target.sum() + PRIOR_SAMPLES * fit.failure.mean()) / (
                len(target) + PRIOR_SAMPLES
            )
            fit_score[fit_rows], evaluation_score[evaluation_rows] = rate, rate
            continue
        if binary:
            model = LogisticRegression(C=float(settings["c"]), max_iter=1000)
        else:
            model = Ridge(alpha=1.0 / float(settings["c"]))
        model.fit(fit.embedding[fit_rows], target)
        fit_score[fit_rows] = _predicted_failure(model, fit.embedding[fit_rows])
        if evaluation_rows.any():
            evaluation_score[evaluation_rows] = _predicted_failure(
                model, evaluation.embedding[evaluation_rows]
            )
    return top_share_slice(fit_score, evaluation_score)


def worst_cluster(
    fit: SliceInputs, evaluation: SliceInputs, settings: dict, seed: int
) -> SliceScores:
    """The paper's worst cluster; ``settings["membership"]`` holds both halves' memberships."""
    fit_membership, evaluation_membership = settings["membership"]
    return ranked(fit_membership, fit.failure, evaluation_membership)


def random_slice(
    fit: SliceInputs, evaluation: SliceInputs, settings: dict, seed: int
) -> SliceScores:
    """A random :data:`TOP_SHARE` of samples, ranked at random."""
    rng = np.random.default_rng(seed)
    return top_share_slice(rng.random(len(fit)), rng.random(len(evaluation)))


def loss_slice(fit: SliceInputs, evaluation: SliceInputs, settings: dict, seed: int) -> SliceScores:
    """Samples ranked by their own loss."""
    return top_share_slice(fit.loss, evaluation.loss)


def confusion_cell(
    fit: SliceInputs, evaluation: SliceInputs, settings: dict, seed: int
) -> SliceScores:
    """The fitting half's largest off-diagonal confusion cell, ranked by loss within it."""
    cells = fit.classes * fit.n_classes + fit.predicted
    wrong = fit.classes != fit.predicted
    if not wrong.any():
        return SliceScores(np.full(len(evaluation), -1), evaluation.loss.copy())
    worst = np.bincount(cells[wrong], minlength=fit.n_classes**2).argmax()
    inside = evaluation.classes * evaluation.n_classes + evaluation.predicted == worst
    rank = stats.rankdata(evaluation.loss) / len(evaluation)
    return SliceScores(np.where(inside, 0, -1), inside + rank)


def _local_rate(near: np.ndarray, prior: float) -> np.ndarray:
    """Shrunk failure rate of each row's neighbours (nearest first), the nearest fifth's as a
    tie-break."""
    width = near.shape[1]
    close = near[:, : max(1, width // 5)].mean(axis=1)
    return (near.sum(axis=1) + PRIOR_SAMPLES * prior) / (width + PRIOR_SAMPLES) + 1e-3 * close


def neighbours(fit: SliceInputs, evaluation: SliceInputs, settings: dict, seed: int) -> SliceScores:
    """Each sample's shrunk failure rate among its ``k`` nearest fitting-half neighbours.

    Within each true class, the ``k`` nearest fitting-half samples in the embedding (a
    fitting-half sample leaves itself out); their failure rate, shrunk to the fitting half's
    by :data:`PRIOR_SAMPLES`, is the score, with the nearest fifth's rate as a tie-break. The
    slice is the samples scoring strictly above the fitting half's top-:data:`TOP_SHARE` cut
    (at most that share; fewer where the rates tie): a local
    error-rate estimate, so a small pocket of failures (a missing marker, a second scanner)
    ranks first however the rest of the class is spread.
    """
    from sklearn.neighbors import NearestNeighbors

    k = int(settings.get("k", 25))
    prior = fit.failure.mean()
    fit_score, evaluation_score = np.full(len(fit), prior), np.full(len(evaluation), prior)
    for value in range(fit.n_classes):
        fit_rows = np.flatnonzero(fit.classes == value)
        evaluation_rows = np.flatnonzero(evaluation.classes == value)
        if len(fit_rows) < 3:
            continue
        width = min(k, len(fit_rows) - 1)
        index = NearestNeighbors(n_neighbors=width + 1).fit(fit.embedding[fit_rows])
        failure = fit.failure[fit_rows]
        own = index.kneighbors(fit.embedding[fit_rows], return_distance=False)[:, 1:]
        fit_score[fit_rows] = _local_rate(failure[own], prior)
        if len(evaluation_rows):
            found = index.kneighbors(
                evaluation.embedding[evaluation_rows], n_neighbors=width, return_distance=False
            )
            evaluation_score[evaluation_rows] = _local_rate(failure[found], prior)
    # The local rates are discrete: most samples of an accurate model share the lowest one,
    # which a ">= the 90th percentile" cut would let into the slice. Strictly above the cut.
    cut = np.quantile(fit_score, 1.0 - TOP_SHARE)
    return SliceScores(np.where(evaluation_score > cut, 0, -1), evaluation_score)


CONFIDENCE_BINS = 10


def confidence_bins(
    fit: SliceInputs, evaluation: SliceInputs, settings: dict, seed: int
) -> SliceScores:
    """Quantile bins of the model's confidence (its top probability), ranked on the fitting half.

    A feature-free baseline: :data:`CONFIDENCE_BINS` bins cut at the fitting half's quantiles
    of the predicted class's probability, ranked worst first by their shrunk fitting-half
    failure rate; evaluation samples score their bin's rate, lower confidence first within it.
    """
    fit_confidence = fit.probabilities.max(axis=1)
    evaluation_confidence = evaluation.probabilities.max(axis=1)
    edges = np.unique(np.quantile(fit_confidence, np.linspace(0, 1, CONFIDENCE_BINS + 1)[1:-1]))
    fit_bin = np.searchsorted(edges, fit_confidence, side="right")
    evaluation_bin = np.searchsorted(edges, evaluation_confidence, side="right")
    columns = len(edges) + 1
    scores = ranked(np.eye(columns)[fit_bin], fit.failure, np.eye(columns)[evaluation_bin])
    return SliceScores(scores.slice, scores.score + 1e-6 * (1.0 - evaluation_confidence))


FINDERS = {
    "domino": domino,
    "george": george,
    "error_predictor": error_predictor,
    "worst_cluster": worst_cluster,
    "neighbours": neighbours,
    "random": random_slice,
    "loss": loss_slice,
    "confusion_cell": confusion_cell,
    "confidence_bins": confidence_bins,
}


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
    from hetcv.cluster import fit_partition

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


def slice_profile(
    inside: np.ndarray, metadata: pd.DataFrame, classes: np.ndarray | None = None
) -> str:
    """What sets a slice apart in the metadata: each column's most over-represented level.

    Parameters
    ----------
    inside : ndarray of shape (n_samples,), bool
        Membership of the slice (held-out rows of every fold).
    metadata : DataFrame
        The metadata columns, row for row.
    classes : ndarray of shape (n_samples,), optional
        The true class, row for row: each class the slice holds then gets its own profile of
        the categorical columns (a shortcut slice gathers the marker's absence in one class
        and its presence in the other, which the overall share hides).

    Returns
    -------
    str
        ``"site B 62 % (30 % overall); age 71.0 (64.2 overall)"``: for each categorical column
        (:func:`hetcv.profiles.is_categorical`) the level whose share rises most in the slice,
        for each numeric one the slice's median against the overall one; with ``classes``,
        then ``"; within class 1 (40 of them): marker no 88 % (3 % in the class)"`` for each
        class holding at least a tenth of the slice; empty without metadata.
    """
    from hetcv.profiles import is_categorical

    parts = []
    for column in metadata.columns:
        values = metadata[column]
        present = values.notna().to_numpy()
        if not (present & inside).any():
            continue
        if is_categorical(values[present]):
            inner = values[present & inside].value_counts(normalize=True)
            outer = values[present].value_counts(normalize=True)
            level = (inner - outer.reindex(inner.index)).idxmax()
            parts.append(
                f"{column} {level} {100 * inner[level]:.0f} % ({100 * outer[level]:.0f} % overall)"
            )
        else:
            parts.append(
                f"{column} {values[present & inside].median():.3g} "
                f"({values[present].median():.3g} overall)"
            )
    if classes is not None and parts:
        parts += _class_parts(inside, metadata, np.asarray(classes))
    return "; ".join(parts)


def _class_parts(inside: np.ndarray, metadata: pd.DataFrame, classes: np.ndarray) -> list[str]:
    """``within class 1 (40 of them): marker no 88 % (3 % in the class)`` per class held."""
    from hetcv.planted import class_profile
    from hetcv.profiles import is_categorical

    categorical = [c for c in metadata.columns if is_categorical(metadata[c].dropna())]
    if not categorical:
        return []
    present = metadata[categorical].notna().all(axis=1).to_numpy()
    rows = class_profile(
        inside & present,
        classes,
        metadata[categorical].reset_index(drop=True).astype(object),
    )
    parts = []
    for row in rows:
        if row["members"] < 0.1 * inside.sum():
            continue
        parts.append(
            f"within class {row['class']} ({row['members']} of them): {row['column']} "
            f"{row['level']} {100 * row['share']:.0f} % ({100 * row['class_share']:.0f} % "
            "in the class)"
        )
    return parts


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
    from hetcv.seeding import derive_seed

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
    from hetcv.columns import feature_columns

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
    from hetcv.io import optional_file, write_csv, write_parquet

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
    write_csv(per_sample, outputs["per_sample"])
    write_parquet(summary, outputs["slices"])
