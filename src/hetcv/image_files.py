"""Reading image files (PNG, JPEG, TIFF, DICOM) and making them uint8 arrays of one size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from hetcv.errors import HetcvError

# The dataset window is estimated from this many images and pixels per image (ample for the
# 0.5th and 99.5th percentiles) rather than from every pixel of a large dataset.
WINDOW_IMAGES = 500


WINDOW_PIXELS = 20_000


def read_dicom(path: Path) -> np.ndarray:
    """A DICOM file's pixels: rescaled, VOI LUT or window applied, MONOCHROME1 inverted.

    Parameters
    ----------
    path : Path
        A DICOM file, as named in the source.

    Returns
    -------
    ndarray of shape (H, W)
        uint8 when the file has a VOI LUT or window: the file's own display window, mapped
        from its full output range to 0–255, is final. float64 otherwise, for the dataset's
        window (see :func:`to_uint8`).
    """

    dataset = pydicom.dcmread(path)
    pixels = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float64)
    inverted = dataset.get("PhotometricInterpretation") == "MONOCHROME1"
    if "VOILUTSequence" in dataset or "WindowCenter" in dataset:
        display = to_uint8(apply_voi_lut(pixels, dataset), _voi_output_range(dataset))
        return 255 - display if inverted else display
    return pixels.max() - pixels if inverted else pixels


def _voi_output_range(dataset) -> tuple[float, float]:
    """The range a VOI LUT (its descriptor's bits) or a window (the stored bits) maps to."""
    if "VOILUTSequence" in dataset:
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(dataset.BitsStored)
    if dataset.get("PixelRepresentation", 0) == 0:
        return 0.0, float(2**bits - 1)
    return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)


def read_image_file(path: Path) -> np.ndarray:
    """Decode one image file into an array; one clear error when it cannot be read.

    Parameters
    ----------
    path : Path
        A PNG, JPEG, TIFF, BMP or DICOM (``.dcm``) file.

    Returns
    -------
    ndarray of shape (H, W) or (H, W, 3)
        The file's own dtype (uint8, uint16 …; float64 for DICOM); palette, alpha, CMYK
        and YCbCr images converted to RGB.

    Raises
    ------
    HetcvError
        When the file does not exist or cannot be decoded.
    """
    if not path.is_file():
        raise HetcvError(f"{path}: image file does not exist")
    try:
        if path.suffix.lower() == ".dcm":
            return read_dicom(path)
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA"):
                image = image.convert("RGB")
            return np.asarray(image)
    except HetcvError:
        raise
    except Exception as error:  # Pillow and pydicom raise many types for a broken file
        raise HetcvError(f"{path}: cannot read image ({type(error).__name__}: {error})") from error


def to_uint8(pixels: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """8-bit images as they are; anything else mapped to 0–255 through a window.

    Parameters
    ----------
    pixels : ndarray of any shape and dtype
        One image.
    window : (float, float), optional
        ``(low, high)``: values at or below ``low`` become 0, at or above ``high`` 255,
        linear between (the dataset's window, :func:`dataset_window`). Without it, the
        image's own minimum and maximum.

    Returns
    -------
    ndarray of the same shape, uint8
        All zeros when the window (or the image) is constant.
    """
    if pixels.dtype == np.uint8:
        return pixels
    pixels = pixels.astype(np.float64)
    low, high = window if window is not None else (np.nanmin(pixels), np.nanmax(pixels))
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    scaled = np.clip((pixels - low) / (high - low), 0.0, 1.0)
    return np.rint(scaled * 255.0).astype(np.uint8)


def dataset_window(
    read_image, rows: int, percentiles: list[float], seed: int, images: int = WINDOW_IMAGES
) -> tuple[float, float] | None:
    """One intensity window for a whole dataset: percentiles of its pooled pixels.

    So the same tissue gets the same grey level in every image, whatever else each image
    holds (a per-image min/max window would stretch each one differently).

    Parameters
    ----------
    read_image : callable
        ``read_image(row)`` → the decoded image (as :class:`SourceData` reads it).
    rows : int
        The dataset's number of images.
    percentiles : list of float
        ``[low, high]`` in 0–100 (``intensity.percentiles``).
    seed : int
        Seeds the images and pixels sampled.
    images : int, default=WINDOW_IMAGES
        At most this many images, drawn at random, each contributing up to
        :data:`WINDOW_PIXELS` random pixels.

    Returns
    -------
    (float, float) or None
        ``(low, high)``; None when every sampled image is 8-bit (nothing to window).
    """
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(rows, size=min(rows, images), replace=False))
    samples = []
    for row in chosen:
        pixels = read_image(int(row))
        if pixels.dtype == np.uint8:
            continue
        flat = pixels.astype(np.float64).ravel()
        flat = flat[np.isfinite(flat)]
        samples.append(rng.choice(flat, size=min(len(flat), WINDOW_PIXELS), replace=False))
    if not samples:
        return None
    low, high = np.percentile(np.concatenate(samples), percentiles)
    return float(low), float(high)


def is_colour(pixels: np.ndarray) -> bool:
    """Whether a decoded image is colour: a last axis of 3 or 4 channels.

    Parameters
    ----------
    pixels : ndarray of shape (H, W) or (H, W, C)
        One image as the source's reader returns it.

    Returns
    -------
    bool
    """
    return pixels.ndim == 3 and pixels.shape[-1] in (3, 4)


def resized(
    pixels: np.ndarray,
    image_size: int,
    colour: bool,
    window: tuple[float, float] | None = None,
    resize: str = "stretch",
) -> np.ndarray:
    """One image as uint8 ``(S, S)`` or ``(3, S, S)``; grey ↔ colour converted as needed.

    Parameters
    ----------
    pixels : ndarray of shape (H, W) or (H, W, 3)
        One decoded image, any dtype (mapped to 8 bits by :func:`to_uint8`).
    image_size : int
        The side ``S`` of the square output (bilinear resampling).
    colour : bool
        Whether the dataset is colour; grey images are then repeated over 3 channels and
        colour images otherwise converted to grey by luminance.
    window : (float, float), optional
        The dataset's intensity window (see :func:`to_uint8`).
    resize : {"stretch", "pad"}, default="stretch"
        ``stretch``: to S × S whatever the aspect ratio; ``pad``: the longer side to S, the
        aspect ratio kept, centred on black.

    Returns
    -------
    ndarray of shape (S, S) or (3, S, S), uint8
        Channels first when ``colour``.
    """
    image = Image.fromarray(to_uint8(pixels, window))
    image = image.convert("RGB" if colour else "L")
    if resize == "pad":
        scale = image_size / max(image.size)
        inner = tuple(max(1, round(side * scale)) for side in image.size)
        canvas = Image.new(image.mode, (image_size, image_size))
        offset = ((image_size - inner[0]) // 2, (image_size - inner[1]) // 2)
        canvas.paste(image.resize(inner, Image.Resampling.BILINEAR), offset)
        image = canvas
    else:
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(image)
    return np.moveaxis(array, -1, 0) if colour else array
