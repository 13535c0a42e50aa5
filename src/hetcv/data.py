"""Data sources and ``prepare``: decode every image once, resize it, keep it as uint8.

A source yields a manifest (``sample_id``, ``target``, metadata columns) and the images in
the manifest's row order. ``images.npy`` row ``i`` is the image of manifest row ``i``.

Sources (``datasets.<name>.source.kind``):

- ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8×8 scans), no download.
  ``variant: udigits`` is binary classification (label = digit >= 5) with a planted rare
  subgroup: only a quarter of the 8s are kept (the "U-MNIST" construction of Sohoni et al.
  2020). The true digit is kept as the metadata column ``subgroup`` and never used to train.
  ``variant: digitvalue`` is regression of the digit's value (0–9) from the image.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from PIL import Image

from hetcv.errors import HetcvError
from hetcv.seeding import derive_seed

DIGITS_VARIANTS = ("udigits", "digitvalue")
RARE_DIGIT = 8
RARE_DIGIT_KEPT_FRACTION = 0.25


def load_digits_source(variant: str, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """The embedded demo datasets.

    Returns ``images: (N, 8, 8) uint8`` (0–255) and the manifest. For ``udigits`` the kept
    quarter of the 8s is drawn with a seed derived from ``seed``.
    """
    from sklearn.datasets import load_digits

    if variant not in DIGITS_VARIANTS:
        raise HetcvError(
            f"source.variant: unknown digits variant {variant!r}; "
            f"choose one of {', '.join(DIGITS_VARIANTS)}"
        )
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    digit = digits.target.astype(np.int64)
    sample_id = np.array([f"digit{index:04d}" for index in range(len(digit))])

    if variant == "digitvalue":
        manifest = pd.DataFrame({"sample_id": sample_id, "target": digit.astype(np.float64)})
        return images, manifest

    rare = np.flatnonzero(digit == RARE_DIGIT)
    rng = np.random.default_rng(derive_seed(seed, "udigits"))
    n_kept = math.ceil(len(rare) * RARE_DIGIT_KEPT_FRACTION)
    dropped = np.setdiff1d(rare, rng.choice(rare, size=n_kept, replace=False))
    keep = np.setdiff1d(np.arange(len(digit)), dropped)
    manifest = pd.DataFrame(
        {
            "sample_id": sample_id[keep],
            "target": (digit[keep] >= 5).astype(np.int64),
            "subgroup": digit[keep],
        }
    )
    return images[keep], manifest


def resize_grey(images: np.ndarray, image_size: int) -> np.ndarray:
    """Resize ``(N, H, W)`` uint8 images to ``(N, image_size, image_size)``, bilinear."""
    out = np.empty((len(images), image_size, image_size), dtype=np.uint8)
    for index, image in enumerate(images):
        resized = Image.fromarray(image).resize((image_size, image_size), Image.Resampling.BILINEAR)
        out[index] = np.asarray(resized)
    return out


def load_source(source: dict, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Images (uint8, source resolution) and manifest of a configured source."""
    kind = source["kind"]
    if kind == "digits":
        return load_digits_source(source["variant"], seed)
    raise HetcvError(f"source.kind: {kind!r} is not supported (supported: digits)")


def source_has_subgroups(source: dict) -> bool:
    """Whether a source's manifest carries a ``subgroup`` column (known before preparing)."""
    return source["kind"] == "digits" and source["variant"] == "udigits"


def count_samples(source: dict, seed: int) -> int:
    """How many samples a source holds, for resolving ``half`` / ``all`` at DAG-build time."""
    return len(load_source(source, seed)[1])


def validate_manifest(manifest: pd.DataFrame, task: str, where: str) -> None:
    """Check ids and targets; ``where`` names the source in the error message."""
    duplicated = manifest["sample_id"][manifest["sample_id"].duplicated()]
    if len(duplicated):
        raise HetcvError(f"{where}: duplicate sample id {duplicated.iloc[0]!r}")
    target = pd.to_numeric(manifest["target"], errors="coerce")
    bad = target.isna() | ~np.isfinite(target)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise HetcvError(
            f"{where}: row {row} (sample {manifest['sample_id'].iloc[row]!r}) has a missing "
            f"or non-numeric target {manifest['target'].iloc[row]!r}"
        )
    if task == "classification" and target.nunique() < 2:
        raise HetcvError(f"{where}: a classification set needs at least 2 classes, found 1")


def prepare_dataset(
    source: dict, task: str, image_size: int, seed: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """Decode, validate and resize a source: ``(N, image_size, image_size)`` uint8 and manifest."""
    images, manifest = load_source(source, seed)
    validate_manifest(manifest, task, where=f"source {source['kind']}")
    return resize_grey(images, image_size), manifest.reset_index(drop=True)


def run_prepare_job(
    *, out_images: str, out_manifest: str, source: dict, task: str, image_size: int, seed: int
) -> None:
    """The prepare rule: write ``images.npy`` and ``manifest.parquet``."""
    from hetcv.io import write_npy, write_parquet

    images, manifest = prepare_dataset(source, task, image_size, seed)
    write_npy(images, out_images)
    write_parquet(manifest, out_manifest)
