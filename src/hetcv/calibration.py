"""Are errors more uneven over clusters than the model's own confidence predicts?

A classifier's confidence already says which images are hard. The question a user asks of a
cluster is whether it fails *beyond* that: more errors than the model's own (recalibrated)
confidence predicts. A single fold's model is rarely calibrated, and separately trained
models are miscalibrated differently, so each fold's confidence is recalibrated on that fold's
own held-out samples by a logistic model of correctness,

    logit P(correct) = a[predicted class] + b · logit(confidence),

which holds temperature scaling (binary: a = 0, b = 1/T), an over- or under-confident model,
an intercept shift, and a class whose predictions are right more or less often than their
confidence says. The null hypothesis is that this model holds with no cluster effect; the
statistic is Pearson's Σ_c (O_c − E_c)² / V_c over clusters, and its null distribution comes
from a parametric bootstrap that draws correctness from the fitted model and *refits* it
(so the calibration's own estimation error is in the null). Because the model has a
per-class intercept, errors concentrated in a predicted class are absorbed by it; the test
is of clusters within predicted class, like the within-class permutation test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from hetcv.errors import HetcvError
from hetcv.partitions import SampleSize, chunks, fold_seeds, membership_matrix
from hetcv.stats import permutation_p_value

# Confidence is clipped to [CLIP, 1 − CLIP] before its logit: float32 softmax outputs of 1.0.
CLIP = 1e-6
NEWTON_STEPS = 50
HALVINGS = 20
TOLERANCE = 1e-6
# Rows × samples × coefficients² of one batch of Newton steps (about 64 MiB of float64).
BATCH_ELEMENTS = 2**23


def confidence_design(confidence: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Design matrix of the recalibration: one column per predicted class, then logit(conf).

    Parameters
    ----------
    confidence : ndarray of shape (n_samples,)
        The model's probability of its own prediction (the largest class probability).
    predicted : ndarray of shape (n_samples,)
        Class code 0..n_classes-1 of each prediction.
    n_classes : int
        Number of classes.

    Returns
    -------
    design : ndarray of shape (n_samples, n_classes + 1)
    """
    confidence = np.clip(np.asarray(confidence, dtype=np.float64), CLIP, 1 - CLIP)
    one_hot = np.eye(n_classes)[np.asarray(predicted)]
    return np.column_stack([one_hot, special.logit(confidence)])


def fit_recalibration(
    correct: np.ndarray, design: np.ndarray, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Firth-penalised logistic regressions of correctness on the design, many rows at once.

    Firth's (1993) penalty, ½ log det of the Fisher information, removes the maximum
    likelihood estimate's O(1/n) bias, which is large with a few dozen samples a fold and
    sends a fold or class whose predictions are all right to infinity; Firth's estimate is
    always finite. Newton–Raphson with the modified score and step halving on the penalised
    likelihood, from the identity calibration (intercepts 0, slope 1), on
    ``(rows, n_samples)`` outcomes sharing one design. A design column that is 0 for every
    sample (a class never predicted here) carries no information: it is left out of the fit
    and gets the mean of the other classes' intercepts, which is what a sample of that class
    elsewhere (another half of the fold) is then given.

    Parameters
    ----------
    correct : ndarray of shape (n_rows, n_samples) or (n_samples,)
        0/1 correctness, one data set per row.
    design : ndarray of shape (n_samples, n_coefficients)
        From :func:`confidence_design`.
    start : ndarray of shape (n_coefficients,) or None, default=None
        Where Newton starts (e.g. the observed fit, for bootstrap draws from it); None: the
        identity calibration.

    Returns
    -------
    coefficients : ndarray of shape (n_rows, n_coefficients)
    probability : ndarray of shape (n_rows, n_samples)
        The fitted P(correct) of every sample.
    """
    y = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    rows, m = y.shape
    used = np.flatnonzero(np.any(design != 0, axis=0))
    fitted = design[:, used]
    q = len(used)
    step = max(1, BATCH_ELEMENTS // max(1, m * q * q))
    coefficients = np.empty((rows, design.shape[1]))
    probability = np.empty((rows, m))
    for first in range(0, rows, step):
        last = min(first + step, rows)
        start_used = None if start is None else np.asarray(start)[used]
        coefficients[first:last, used], probability[first:last] = _newton(
            y[first:last], fitted, start_used
        )
    intercepts = np.setdiff1d(np.arange(design.shape[1] - 1), used)
    if len(intercepts):
        present = np.setdiff1d(used, [design.shape[1] - 1])
        coefficients[:, intercepts] = coefficients[:, present].mean(axis=1, keepdims=True)
    return coefficients, probability


def _penalised_likelihood(
    y: np.ndarray, beta: np.ndarray, design: np.ndarray, products: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Firth's objective ℓ(β) + ½ log det I(β) per row, with p and I at β.

    ``products`` ``(m, q²)`` holds each sample's outer product of its design row, so the
    information of every row is one matrix product.
    """
    eta = beta @ design.T
    p = special.expit(eta)
    likelihood = (y * eta - np.logaddexp(0.0, eta)).sum(axis=1)
    q = design.shape[1]
    information = ((p * (1 - p)) @ products).reshape(len(y), q, q)
    return likelihood + 0.5 * np.linalg.slogdet(information)[1], p, information


def _newton(
    y: np.ndarray, design: np.ndarray, start: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    rows, q = len(y), design.shape[1]
    products = (design[:, :, None] * design[:, None, :]).reshape(len(design), q * q)
    beta = np.zeros((rows, q))
    beta[:, -1] = 1.0  # the model's own confidence
    if start is not None:
        beta[:] = start
    objective, p, information = _penalised_likelihood(y, beta, design, products)
    active = np.ones(rows, dtype=bool)
    for _ in range(NEWTON_STEPS):
        index = np.flatnonzero(active)
        inverse = np.linalg.pinv(information[index], hermitian=True)
        # Firth's modified score: the hat values h pull each residual towards ½.
        hat = p[index] * (1 - p[index]) * (inverse.reshape(len(index), q * q) @ products.T)
        score = (y[index] - p[index] + hat * (0.5 - p[index])) @ design
        delta = np.einsum("rij,rj->ri", inverse, score)
        # Step halving: the penalised likelihood is not concave everywhere.
        step = np.ones(len(index))
        for _ in range(HALVINGS):
            trial = beta[index] + step[:, None] * delta
            value, p_trial, info_trial = _penalised_likelihood(y[index], trial, design, products)
            better = value >= objective[index] - 1e-12
            if better.all():
                break
            step = np.where(better, step, step / 2)
        accept = index[better]
        beta[accept] = trial[better]
        objective[accept], p[accept], information[accept] = (
            value[better],
            p_trial[better],
            info_trial[better],
        )
        moved = np.abs(step[:, None] * delta).max(axis=1)
        active[index[(moved < TOLERANCE) | ~better]] = False
        if not active.any():
            break
    return beta, p


def recalibrated_p_correct(
    correct: np.ndarray, confidence: np.ndarray, predicted: np.ndarray, n_classes: int
) -> np.ndarray:
    """Each sample's probability of being right under its fold's fitted recalibration.

    Parameters
    ----------
    correct : ndarray of shape (n_samples,)
        0/1 correctness of the fold's held-out predictions.
    confidence, predicted, n_classes
        As for :func:`confidence_design`.

    Returns
    -------
    p_correct : ndarray of shape (n_samples,)
    """
    design = confidence_design(confidence, predicted, n_classes)
    return fit_recalibration(correct, design)[1][0]


@dataclass(frozen=True)
class CalibrationTest:
    """Confidence-calibrated test of uneven errors; returned by `calibration_test`.

    Attributes
    ----------
    statistic : float
        Pearson deviation of observed from recalibrated-expected correct counts, averaged
        over folds × repeats.
    null : ndarray of shape (n_draws,)
        The statistic in each parametric-bootstrap draw (correctness drawn from the fitted
        recalibration, which is then refitted).
    p_value : float
        (1 + #(null >= statistic)) / (1 + n_draws).
    """

    statistic: float
    null: np.ndarray
    p_value: float


def calibration_test(sample: SampleSize, n_draws: int, seed: int) -> CalibrationTest:
    """Are errors more uneven over the clusters than the recalibrated confidence predicts?

    Per fold, correctness is regressed on the model's confidence and predicted class
    (:func:`fit_recalibration`); per run, Pearson's statistic Σ_c (O_c − E_c)² / V_c compares
    each cluster's correct count O_c with its expectation E_c = Σ p̂ and variance
    V_c = Σ p̂(1 − p̂) (clusters with V_c = 0 add 0), averaged over folds × repeats. Each null
    draw replaces every fold's correctness by Bernoulli(p̂) (one draw per fold, shared by its
    repeats), refits the fold's recalibration and recomputes the statistic.

    Parameters
    ----------
    sample : SampleSize
        A classification sample whose every fold has ``confidence`` and ``predicted``.
    n_draws : int
        Number of parametric-bootstrap draws.
    seed : int
        Seed of the draws; fold f draws from ``SeedSequence(seed).spawn(n_folds)[f]``.

    Returns
    -------
    CalibrationTest

    Raises
    ------
    HetcvError
        If the task is not classification, or a fold lacks ``confidence`` or ``predicted``.
    """
    if sample.task != "classification":
        raise HetcvError("the confidence-calibrated test needs a classification task")
    if any(fold.confidence is None or fold.predicted is None for fold in sample.folds):
        raise HetcvError("the confidence-calibrated test needs confidence and predicted classes")
    k, n_repeats = sample.k, sample.n_repeats
    n_classes = max(2, *(int(np.max(fold.predicted)) + 1 for fold in sample.folds))
    statistic = np.empty((1 + n_draws, len(sample.folds), n_repeats))  # row 0: observed
    for f, (fold, fold_seed) in enumerate(
        zip(sample.folds, fold_seeds(seed, len(sample.folds)), strict=True)
    ):
        m = len(fold.score)
        correct = np.asarray(fold.score if fold.correct is None else fold.correct, np.float64)
        design = confidence_design(fold.confidence, fold.predicted, n_classes)
        indicator = membership_matrix(fold.labels, k)
        coefficients, fitted = fit_recalibration(correct, design)
        statistic[0, f] = _pearson(correct[None], fitted, indicator, n_repeats, k)[0]
        rng = np.random.default_rng(fold_seed)
        for start, stop in chunks(n_draws, m * design.shape[1]):
            drawn = (rng.random((stop - start, m)) < fitted).astype(np.float64)
            refitted = fit_recalibration(drawn, design, coefficients[0])[1]
            statistic[1 + start : 1 + stop, f] = _pearson(drawn, refitted, indicator, n_repeats, k)
    averaged = statistic.mean(axis=(1, 2))
    return CalibrationTest(
        statistic=float(averaged[0]),
        null=averaged[1:],
        p_value=permutation_p_value(averaged[0], averaged[1:]),
    )


def _pearson(
    correct: np.ndarray, p: np.ndarray, indicator: np.ndarray, n_repeats: int, k: int
) -> np.ndarray:
    """``(D, R)`` Pearson statistics of ``(D, m)`` correctness against ``(D, m)`` or (1, m) p."""
    rows = len(correct)
    observed = (correct @ indicator).reshape(rows, n_repeats, k)
    expected = (p @ indicator).reshape(-1, n_repeats, k)
    variance = ((p * (1 - p)) @ indicator).reshape(-1, n_repeats, k)
    variance = np.broadcast_to(variance, observed.shape)
    terms = np.divide(
        (observed - expected) ** 2, variance, out=np.zeros(observed.shape), where=variance > 0
    )
    return terms.sum(axis=-1)
