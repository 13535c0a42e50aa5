"""The one exception users see, and the way a workflow script reports it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class HetcvError(Exception):
    """Bad input or configuration; the message names the file, row or key and the problem."""


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a :class:`HetcvError` into one log line and a non-zero exit, without a traceback.

    Any other exception is a bug and keeps its traceback.
    """
    try:
        yield
    except HetcvError as error:
        logging.getLogger("hetcv").error("%s", error)
        sys.exit(f"hetcv error: {error}")
