"""The slice finders and baselines: each is fitted on one half of a fold and scores the other.

How the methods work and why: :mod:`hetcv.slices`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors

from hetcv.clustering import pca_scores

METHODS = ("domino", "george", "error_predictor", "worst_cluster", "neighbours")


BASELINES = ("random", "loss", "confusion_cell", "confidence_bins")


OUTCOME_DEFINED = ("loss", "confusion_cell")
FEATURE_FREE = ("loss", "confusion_cell", "confidence_bins")


CLASS_WEIGHT = 10.0  # Domino's y_log_likelihood_weight


PRIOR_SAMPLES = 10.0


TOP_SHARE = 0.1


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

    return pca_scores(vectors.reshape(len(vectors), -1), n_components)


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each column with mean 0 and standard deviation 1 (constant columns centred only)."""
    spread = scores.std(axis=0)
    return (scores - scores.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


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
