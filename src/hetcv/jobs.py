"""The one adapter between a Snakemake script and a job function of the library.

Every rule's script is two lines: import its job, call :func:`run_from_snakemake`. Every job
function has the same signature, ``run_x_job(inputs, outputs, params)``:

- ``inputs`` and ``outputs`` map the rule's input and output names to a path (``str``) or,
  for a list-valued name, a list of paths;
- ``params`` is the rule's config slice (:func:`hetcv.params.rule_params`, which also holds
  the wildcard values the job needs, typed) plus ``threads``, the cores Snakemake gave the
  job. ``threads`` is not a Snakemake param, so running with more cores reruns nothing.

A job reads its inputs, calls functions that take and return arrays and DataFrames, and
writes its outputs; a :class:`~hetcv.errors.HetcvError` reaches the user as one line.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping

from hetcv.errors import one_line_errors

Files = Mapping[str, "str | list[str]"]
Job = Callable[[Files, Files, dict], None]


def named_files(named) -> dict[str, str | list[str]]:
    """Snakemake's named input or output list as ``{name: path or [paths]}``.

    Parameters
    ----------
    named : snakemake.io.Namedlist
        ``snakemake.input`` or ``snakemake.output``.

    Returns
    -------
    dict
        One entry per name; plain ``str`` paths, lists for list-valued names.
    """
    return {
        name: str(value) if isinstance(value, str) else [str(path) for path in value]
        for name, value in named.items()
    }


def run_from_snakemake(snakemake, job: Job) -> None:
    """Log to the rule's log file and run ``job`` on the rule's files and settings.

    Parameters
    ----------
    snakemake : snakemake.script.Snakemake
        The object Snakemake injects into a rule's script; its rule declares ``log`` and one
        param, ``settings``, the canonical JSON of :func:`hetcv.params.rule_params`.
    job : callable
        ``run_x_job(inputs, outputs, params)``.
    """
    logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
    params = {**json.loads(snakemake.params.settings), "threads": snakemake.threads}
    with one_line_errors():
        job(named_files(snakemake.input), named_files(snakemake.output), params)


def stop_rescheduling_timers() -> None:
    """Cancel every pending ``threading.Timer`` (the Snakefile's onsuccess and onerror handlers).

    Snakemake 9's scheduler re-runs on such timers (the only ones in its process), which would
    keep it alive up to one rate-limit timespan after the workflow has ended.
    """
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()
