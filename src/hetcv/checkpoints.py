"""Checkpoints: a fold's training state saved each epoch and resumed."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hetcv.io import atomic_path

log = logging.getLogger(__name__)


def save_checkpoint(path, tag: str, epoch: int, state: dict, history: list[dict]) -> None:
    """Save the training state after ``epoch``, atomically, for :func:`resume`.

    Parameters
    ----------
    path : path-like
        The checkpoint file.
    tag : str
        The training settings (JSON); a checkpoint resumes only a run with the same tag.
    epoch : int
        The last completed epoch.
    state : dict
        ``model``, ``optimizer``, ``scheduler``, ``generator`` (the batch shuffle's; the
        global CPU and CUDA generators are saved too), ``augment`` and ``early_stopping``
        (either may be None).
    history : list of dict
        The history rows so far.
    """
    saved = {
        "tag": tag,
        "epoch": epoch,
        "generator": state["generator"].get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": history,
    }
    for key in ("model", "optimizer", "scheduler", "augment", "early_stopping"):
        saved[key] = None if state[key] is None else state[key].state_dict()
    with atomic_path(path) as temporary:
        torch.save(saved, temporary)


def resume(path, tag: str, state: dict, history: list[dict], device: torch.device) -> int:
    """Load a matching checkpoint into the training state; returns the epochs it holds.

    Parameters
    ----------
    path, tag
        As for :func:`save_checkpoint`; ``path`` may be None or missing (nothing to resume).
    state : dict
        As for :func:`save_checkpoint`; loaded in place, with the global random generators.
    history : list of dict
        Extended with the checkpoint's history rows.
    device : torch.device
        Where the early-stopping state's tensors go.

    Returns
    -------
    int
        The last epoch done, or 0 when there is no checkpoint or its tag differs.
    """
    if path is None or not Path(path).exists():
        return 0
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved.get("tag") != tag:
        log.warning("ignoring checkpoint %s: it was made with other settings", path)
        return 0
    for key in ("model", "optimizer", "scheduler", "augment"):
        if state[key] is not None:
            state[key].load_state_dict(saved[key])
    if state["early_stopping"] is not None:
        state["early_stopping"].load_state_dict(saved["early_stopping"], device)
    state["generator"].set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    history.extend(saved["history"])
    log.info("resuming from %s after epoch %d", path, saved["epoch"])
    return int(saved["epoch"])
