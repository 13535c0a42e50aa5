"""Decode, validate and resize one dataset's images (the prepare rule)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from hetcv.errors import HetcvError
from hetcv.image_files import dataset_window, is_colour, resized
from hetcv.io import atomic_path, write_parquet
from hetcv.label_names import validate_labels
from hetcv.source_data import SourceData
from hetcv.sources import load_source

log = logging.getLogger(__name__)


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
