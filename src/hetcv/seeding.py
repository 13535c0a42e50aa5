"""Seeds derived from the config's ``seed`` and the wildcards, so every job is reproducible."""

from __future__ import annotations

import zlib


def derive_seed(seed: int, *keys: object) -> int:
    """Derive a 32-bit seed that depends on ``seed`` and on every key (dataset, n, fold, …).

    Uses CRC32 of the keys' text rather than ``hash()``, which Python salts per process, so
    the same keys give the same seed in every job.

    Parameters
    ----------
    seed : int
        The config's ``seed``.
    *keys : object
        Wildcards or labels that distinguish the job or stream; joined by ``/`` as text.

    Returns
    -------
    seed : int
        The derived seed, in ``[0, 2**32)``.
    """
    text = "/".join(str(key) for key in (seed, *keys))
    return zlib.crc32(text.encode("utf-8"))
