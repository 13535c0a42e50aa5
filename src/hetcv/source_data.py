"""The images, targets and metadata a source yields, before they are prepared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


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
