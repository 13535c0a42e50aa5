"""What a planted failure allows: the validity gate, within-class recovery and the ceiling.

Used by the benchmark (:mod:`hetcv.validation`) on every planted setting:

- :func:`validity_gate`: does the model really fail on the planted group? Its held-out accuracy
  against the rest's, the gap with a 95 % CI (Agresti–Caffo), the planted share of the errors;
  *strong* when the gap is at least :data:`STRONG_GAP` with at least :data:`STRONG_COUNT`
  planted held-out samples.
- :func:`within_class_auroc`: the AUROC of a slice score for membership within each true class,
  averaged over the classes that hold both members and others. A shortcut or shift slice sits
  inside each class, where the confusion cell says nothing.
- :func:`membership_ceiling`: a cross-fitted logistic regression per class that predicts the
  planted membership itself from the same embedding, on the same halves: what the embedding
  allows a slice finder at best.
- :func:`precision_at`: the share of planted samples among the ``k`` highest scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

STRONG_GAP = 0.15
STRONG_COUNT = 50


def precision_at(score: np.ndarray, member: np.ndarray, k: int) -> float:
    """Share of members among the ``k`` highest scores (ties broken by position).

    Parameters
    ----------
    score : ndarray of shape (n_samples,)
    member : ndarray of shape (n_samples,), bool
    k : int

    Returns
    -------
    float
    """
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    return float(np.asarray(member, dtype=bool)[order[:k]].mean())


def within_class_auroc(score: np.ndarray, member: np.ndarray, classes: np.ndarray) -> float:
    """Mean over classes of the AUROC of ``score`` for ``member`` within the class.

    Parameters
    ----------
    score : ndarray of shape (n_samples,)
    member : ndarray of shape (n_samples,), bool
    classes : ndarray of shape (n_samples,)

    Returns
    -------
    float
        NaN when no class holds both members and non-members.
    """
    member = np.asarray(member, dtype=bool)
    values = []
    for value in np.unique(classes):
        rows = classes == value
        if 0 < member[rows].sum() < rows.sum():
            values.append(roc_auc_score(member[rows], score[rows]))
    return float(np.mean(values)) if values else np.nan


def accuracy_gap(correct: np.ndarray, member: np.ndarray) -> dict[str, float]:
    """The rest's accuracy minus the members', with a 95 % Agresti–Caffo interval.

    Returns
    -------
    dict
        ``planted_accuracy, other_accuracy, gap, gap_low, gap_high`` (NaN without members).
    """
    correct, member = np.asarray(correct, dtype=bool), np.asarray(member, dtype=bool)
    if not member.any() or member.all():
        return dict.fromkeys(
            ("planted_accuracy", "other_accuracy", "gap", "gap_low", "gap_high"), np.nan
        )
    inside, outside = correct[member], correct[~member]
    gap = outside.mean() - inside.mean()
    adjusted = [(side.sum() + 1) / (len(side) + 2) for side in (inside, outside)]
    error = np.sqrt(
        sum(
            p * (1 - p) / (len(side) + 2)
            for p, side in zip(adjusted, (inside, outside), strict=True)
        )
    )
    centre = adjusted[1] - adjusted[0]
    half = stats.norm.ppf(0.975) * error
    return {
        "planted_accuracy": float(inside.mean()),
        "other_accuracy": float(outside.mean()),
        "gap": float(gap),
        "gap_low": float(centre - half),
        "gap_high": float(centre + half),
    }


def validity_gate(correct: np.ndarray, member: np.ndarray) -> dict[str, float]:
    """Does the model fail on the planted group? (every held-out sample, every fold).

    Parameters
    ----------
    correct : ndarray of shape (n_samples,), bool
    member : ndarray of shape (n_samples,), bool

    Returns
    -------
    dict
        ``planted_accuracy, other_accuracy``, :func:`accuracy_gap`'s gap and interval as
        ``gate_gap, gate_gap_low, gate_gap_high``, ``planted_held_out`` (count),
        ``planted_error_share`` (planted errors / errors) and ``strong`` (gap >=
        :data:`STRONG_GAP` and at least :data:`STRONG_COUNT` planted held-out samples).
    """
    correct, member = np.asarray(correct, dtype=bool), np.asarray(member, dtype=bool)
    found = accuracy_gap(correct, member)
    errors = ~correct
    return {
        "planted_accuracy": found["planted_accuracy"],
        "other_accuracy": found["other_accuracy"],
        **{f"gate_{key}": found[key] for key in ("gap", "gap_low", "gap_high")},
        "planted_held_out": int(member.sum()),
        "planted_error_share": float((errors & member).sum() / max(1, errors.sum())),
        "strong": bool(
            member.sum() >= STRONG_COUNT
            and np.isfinite(found["gap"])
            and found["gap"] >= STRONG_GAP
        ),
    }


def membership_ceiling(
    embedding: np.ndarray,
    classes: np.ndarray,
    member: np.ndarray,
    half: np.ndarray,
    c: float = 1.0,
) -> np.ndarray:
    """Cross-fitted predicted membership: per class, a logistic regression fitted on one half.

    Parameters
    ----------
    embedding : ndarray of shape (n_samples, n_dims)
        The fold's standardised principal scores (what the slice finders see).
    classes : ndarray of shape (n_samples,), int
    member : ndarray of shape (n_samples,), bool
        The planted indicator (the ceiling sees it; no slice finder does).
    half : ndarray of shape (n_samples,), int
        0 / 1: each half's scores come from the model fitted on the other.
    c : float
        Inverse L2 penalty.

    Returns
    -------
    ndarray of shape (n_samples,)
        Predicted probability of membership (the fitting half's class share where a class of
        the fitting half holds no member or no other sample).
    """
    member = np.asarray(member, dtype=bool)
    score = np.zeros(len(member))
    for measured in (0, 1):
        for value in np.unique(classes):
            fit = (half != measured) & (classes == value)
            rows = (half == measured) & (classes == value)
            if not rows.any():
                continue
            if not 0 < member[fit].sum() < fit.sum():
                score[rows] = member[fit].mean() if fit.any() else 0.0
                continue
            model = LogisticRegression(C=c, max_iter=2000).fit(embedding[fit], member[fit])
            score[rows] = model.predict_proba(embedding[rows])[:, 1]
    return score


def class_profile(
    inside: np.ndarray, classes: np.ndarray, metadata: pd.DataFrame
) -> list[dict[str, object]]:
    """Within each class a slice holds: each categorical column's most over-represented level.

    Parameters
    ----------
    inside : ndarray of shape (n_samples,), bool
        Slice membership (measuring-half rows).
    classes : ndarray of shape (n_samples,)
        True class, row for row.
    metadata : DataFrame
        Categorical metadata columns, row for row.

    Returns
    -------
    list of dict
        One per (class with slice members, column): ``class, column, level, share`` (in the
        slice's members of that class), ``class_share`` (in the class) and ``lift``.
    """
    rows = []
    for value in np.unique(classes[inside]):
        in_class = classes == value
        for column in metadata.columns:
            values = metadata[column].to_numpy()
            inner = pd.Series(values[in_class & inside]).value_counts(normalize=True)
            outer = pd.Series(values[in_class]).value_counts(normalize=True)
            lift = inner / outer.reindex(inner.index)
            level = (inner - outer.reindex(inner.index)).idxmax()
            rows.append(
                {
                    "class": value,
                    "column": column,
                    "level": level,
                    "share": float(inner[level]),
                    "class_share": float(outer[level]),
                    "lift": float(lift[level]),
                    "members": int((in_class & inside).sum()),
                }
            )
    return rows
