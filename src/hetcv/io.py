"""File I/O at the edges: atomic writes, so a failed job never leaves a file that looks complete."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hetcv.errors import HetcvError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    The parent folder is created; the temporary file is removed whether or not the block
    succeeds, so a failed job never leaves a complete-looking ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The final destination.

    Yields
    ------
    temporary : Path
        A hidden ``.{name}.tmp{pid}`` file in the same folder, to be written by the block.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.tmp{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``frame`` as Parquet (pyarrow) without its index, atomically.

    Parameters
    ----------
    frame : DataFrame
        The table to write.
    path : str or os.PathLike
        Destination ``.parquet`` file; see `atomic_path`.
    """
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False, engine="pyarrow")


@contextmanager
def parquet_parts(path: str | os.PathLike) -> Iterator[Callable[[pd.DataFrame], None]]:
    """Yield a function that appends a DataFrame to one Parquet file; the file appears whole.

    Each part becomes a row group, so a table far larger than memory's share can be written a
    part at a time. Every part must have the first one's columns and types. As with
    :func:`write_parquet`, the file is renamed into place only if the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.parquet`` file.

    Yields
    ------
    write : callable
        ``write(frame)`` appends ``frame`` (without its index).
    """

    writer = None
    with atomic_path(path) as temporary:

        def write(frame: pd.DataFrame) -> None:
            nonlocal writer
            part = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(temporary, part.schema)
            writer.write_table(part)

        try:
            yield write
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise HetcvError(f"{path}: no rows were written")


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``frame`` as CSV without its index, atomically.

    Parameters
    ----------
    frame : DataFrame
        Any table; its index is dropped.
    path : str or os.PathLike
        Destination ``.csv`` file, replaced only once fully written.
    """
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)


def optional_file(named: str | list[str]) -> str | None:
    """The one path of a named input that may be empty (an input function's ``[]``).

    Parameters
    ----------
    named : str or list of str
        A :func:`hetcv.jobs.named_files` value: one path, or a list of none or one.

    Returns
    -------
    str or None
    """
    if isinstance(named, str):
        return named
    return named[0] if named else None


def read_tables(paths: dict[str, str], names) -> dict[str, pd.DataFrame]:
    """The Parquet files ``paths[name]`` for each of ``names``, read, by name."""
    return {name: pd.read_parquet(paths[name]) for name in names}


def read_per_sample(path: str) -> pd.DataFrame:
    """A per-sample CSV with ``sample_id`` as text: ids such as RSNA's ``1377`` stay ids."""
    return pd.read_csv(path, dtype={"sample_id": str})
