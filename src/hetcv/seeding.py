"""Seeds derived from the config's ``seed`` and the wildcards, so every job is reproducible."""

from __future__ import annotations

import zlib


def derive_seed(seed: int, *keys: object) -> int:
    """A 32-bit seed that depends on ``seed`` and on every key (dataset, n, fold, …).

    Uses CRC32 of the keys' text rather than ``hash()``, which Python salts per process.
    """
    text = "/".join(str(key) for key in (seed, *keys))
    return zlib.crc32(text.encode("utf-8"))
