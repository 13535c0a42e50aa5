"""scikit-learn's 8×8 digits as a source: the demo's datasets and the planted benchmark's."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

from hetcv.errors import HetcvError
from hetcv.seeding import derive_seed
from hetcv.source_data import SourceData

DIGITS_VARIANTS = ("udigits", "digitvalue", "rare", "noisy", "balanced")


PLANTED_VARIANTS = ("rare", "noisy", "balanced")


RARE_DIGIT = 8


RARE_DIGIT_KEPT_FRACTION = 0.25


def binary_digit_label(digit: np.ndarray) -> np.ndarray:
    """The digits sets' binary label: 1 for digits 5 to 9, 0 for 0 to 4.

    Parameters
    ----------
    digit : ndarray of shape (n,), int
        Digit values 0 to 9.

    Returns
    -------
    ndarray of shape (n,), int64
    """
    return (digit >= 5).astype(np.int64)


def rare_subsample(digit: np.ndarray, planted: int, prevalence: float, rng) -> np.ndarray:
    """Rows kept when ``planted`` is cut down to ``prevalence`` of its binary class.

    Parameters
    ----------
    digit : ndarray of shape (n,), int
        The digit of every image.
    planted : int
        The digit whose images are subsampled.
    prevalence : float
        Wanted share of ``planted`` among the images of its binary class, in (0, 1).
    rng : numpy.random.Generator
        Draws the ``planted`` images that are kept.

    Returns
    -------
    ndarray of shape (n_kept,), int64
        Sorted rows of ``digit``: every other image and the kept ``planted`` ones.

    Raises
    ------
    HetcvError
        When ``prevalence`` needs fewer than one, or more ``planted`` images than exist.
    """
    same_class = binary_digit_label(digit) == binary_digit_label(np.array([planted]))[0]
    rows = np.flatnonzero(digit == planted)
    others = int(np.sum(same_class & (digit != planted)))
    wanted = round(prevalence * others / (1.0 - prevalence))
    if not 1 <= wanted <= len(rows):
        most = len(rows) / (len(rows) + others)
        raise HetcvError(
            f"source.prevalence: {prevalence} needs {wanted} images of digit {planted}, "
            f"{len(rows)} exist (possible: {1 / (1 + others):.3f} to {most:.3f})"
        )
    dropped = np.setdiff1d(rows, rng.choice(rows, size=wanted, replace=False))
    return np.setdiff1d(np.arange(len(digit)), dropped)


def digits_source(source: dict, seed: int) -> SourceData:
    """The embedded demo and validation datasets; every random draw uses ``seed``.

    Parameters
    ----------
    source, seed
        As for :func:`load_source` (``kind`` ``digits``).

    Returns
    -------
    SourceData
        8×8 uint8 images (0 to 255). Manifest: ``sample_id``, ``target`` (binary int64, or the
        digit as float64 for ``digitvalue``), else also ``subgroup`` (the digit) and, for
        ``rare``, ``noisy`` and ``balanced``, the boolean ``planted``.

    Raises
    ------
    HetcvError
        For an unknown ``variant`` or a ``prevalence`` that :func:`rare_subsample` cannot meet.
    """

    variant = source["variant"]
    if variant not in DIGITS_VARIANTS:
        raise HetcvError(f"source.variant: unknown digits variant {variant!r}")
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    digit = digits.target.astype(np.int64)
    sample_id = np.array([f"digit{index:04d}" for index in range(len(digit))])
    # Draw 0 is the original draw; others give the benchmark's seeds a new planted sample.
    draw = source.get("draw", 0)
    rng = np.random.default_rng(derive_seed(seed, variant, *([draw] if draw else [])))
    keep = np.arange(len(digit))
    if variant == "digitvalue":
        manifest = pd.DataFrame({"sample_id": sample_id, "target": digit.astype(np.float64)})
        return SourceData(manifest, lambda row: images[row], lambda row: f"digits[{row}]")
    if variant == "udigits":
        rare = np.flatnonzero(digit == RARE_DIGIT)
        n_kept = math.ceil(len(rare) * RARE_DIGIT_KEPT_FRACTION)
        dropped = np.setdiff1d(rare, rng.choice(rare, size=n_kept, replace=False))
        keep = np.setdiff1d(keep, dropped)
    target = binary_digit_label(digit)
    planted_digit = source.get("digit", RARE_DIGIT)
    if variant == "rare":
        keep = rare_subsample(digit, planted_digit, source["prevalence"], rng)
    if variant == "noisy":
        rows = np.flatnonzero(digit == planted_digit)
        flipped = rng.choice(rows, size=round(source["flip_rate"] * len(rows)), replace=False)
        target[flipped] = 1 - target[flipped]
    manifest = pd.DataFrame(
        {"sample_id": sample_id[keep], "target": target[keep], "subgroup": digit[keep]}
    )
    if variant in PLANTED_VARIANTS:
        manifest["planted"] = (digit[keep] == planted_digit) & (variant != "balanced")
    return SourceData(manifest, lambda row: images[keep[row]], lambda row: f"digits[{keep[row]}]")
