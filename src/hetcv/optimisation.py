"""The optimiser, its schedule, the class weights and early stopping (torch.optim)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.optim import lr_scheduler

from hetcv.seeding import derive_seed
from hetcv.split import inner_validation_split

ONECYCLE_WARMUP = 0.25  # share of the steps over which "onecycle" rises to its peak


ONECYCLE_DIV = 25.0  # its first rate is the peak / 25 (as PyTorch's OneCycleLR's default)


def make_optimizer(
    parameters, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (the paper's), or ``AdamW`` when ``weight_decay`` > 0.

    Parameters
    ----------
    parameters : iterable of Tensor
        The model's parameters.
    lr : float
        The learning rate (with a schedule, its peak).
    weight_decay : float
        Decoupled weight decay (Loshchilov & Hutter 2019); 0 gives plain Adam.
    device : torch.device
        The parameters' device: on CUDA and the CPU the fused implementation (one kernel
        for all parameters) is used.

    Returns
    -------
    torch.optim.Optimizer
    """
    fused = device.type in ("cuda", "cpu")
    if weight_decay > 0:
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused)
    return torch.optim.Adam(parameters, lr=lr, fused=fused)


def make_schedule(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning rate over the ``total_steps`` optimiser steps, stepped once per step.

    ``constant``: the optimiser's rate throughout (``ConstantLR`` with factor 1).
    ``onecycle`` (Smith & Topin 2019), with the optimiser's rate as its peak: ``LinearLR``
    from peak / ``ONECYCLE_DIV`` up to the peak over the first ``ONECYCLE_WARMUP`` of the
    steps, then ``CosineAnnealingLR`` down to 0, chained by ``SequentialLR``. That is the
    shape of ``OneCycleLR`` with cosine annealing and without momentum cycling, which itself
    divides by zero on some short runs (4 steps).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    schedule : {"constant", "onecycle"}
    total_steps : int
        Every step of the run (epochs × :func:`batch_count`).

    Returns
    -------
    torch.optim.lr_scheduler.LRScheduler
    """

    if schedule == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    rise = max(1, round(ONECYCLE_WARMUP * total_steps))
    warm_up = lr_scheduler.LinearLR(
        optimizer, start_factor=1 / ONECYCLE_DIV, end_factor=1.0, total_iters=rise
    )
    cool_down = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - rise))
    return lr_scheduler.SequentialLR(optimizer, [warm_up, cool_down], milestones=[rise])


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's ``balanced`` class weights, ``n / (n_classes_present × count)``.

    Parameters
    ----------
    labels : ndarray of shape (n,), int
        Class indices ``0..n_classes-1`` of the samples trained on.
    n_classes : int

    Returns
    -------
    ndarray of shape (n_classes,), float32
        A class absent from ``labels`` (it cannot affect training) gets 1.
    """

    present = np.unique(labels)
    weights = np.ones(n_classes, dtype=np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def training_objective(
    targets: np.ndarray,
    train_index: np.ndarray,
    task: str,
    class_weights: np.ndarray | None = None,
    device: torch.device | None = None,
) -> tuple[Callable, torch.Tensor, float, float]:
    """The loss and the targets it compares against, standardised for regression.

    Parameters
    ----------
    targets : ndarray of shape (n_images,) or (n_images, n_labels)
        Class indices (classification), values (regression), or 0/1 per label
        (multilabel).
    train_index : ndarray of shape (n_train,)
        The rows trained on, whose mean and sd standardise regression targets.
    task : {"classification", "regression", "multilabel"}
    class_weights : ndarray of shape (n_classes,), optional
        Per-class weights of the cross-entropy (see :func:`balanced_class_weights`).
    device : torch.device, optional
        Where the loss and the targets live (default: the CPU).

    Returns
    -------
    loss_fn : callable
        ``loss_fn(outputs (batch, n_outputs), target (batch,))``: (weighted) cross-entropy,
        MSE, or the labels' mean binary cross-entropy (one sigmoid output per label).
    y : Tensor of shape (n_images,)
        The targets as the loss sees them (long, or standardised float), on ``device``.
    shift, scale : float
        ``target = y · scale + shift`` (0 and 1 for classification).
    """
    device = device or torch.device("cpu")
    if task == "classification":
        weight = None if class_weights is None else torch.as_tensor(class_weights, device=device)
        y = torch.as_tensor(targets, dtype=torch.long).to(device)
        return nn.CrossEntropyLoss(weight=weight), y, 0.0, 1.0
    if task == "multilabel":
        y = torch.as_tensor(targets, dtype=torch.float32).to(device)
        return nn.BCEWithLogitsLoss(), y, 0.0, 1.0
    mse = nn.MSELoss()

    def loss_fn(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse(outputs.squeeze(1), target)

    y = torch.as_tensor(targets, dtype=torch.float32)
    shift = float(y[train_index].mean())
    scale = float(y[train_index].std()) or 1.0
    return loss_fn, ((y - shift) / scale).to(device), shift, scale


@dataclass
class EarlyStopping:
    """Keeps the epoch with the lowest validation loss; stops after ``patience`` without.

    Attributes
    ----------
    patience : int
        Epochs without a lower validation loss after which training stops.
    best_loss : float
        The lowest validation loss so far.
    best_epoch : int
        Its epoch (0 before the first).
    best_state : dict or None
        The model's state dict at that epoch.
    best_outputs, best_features : Tensor or None
        The held-out outputs and features at that epoch.
    """

    patience: int
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict | None = None
    best_outputs: torch.Tensor | None = None
    best_features: torch.Tensor | None = None

    def update(self, epoch, loss, model, outputs, features) -> bool:
        """Record an epoch; keep it if its validation loss is the lowest so far.

        Parameters
        ----------
        epoch : int
        loss : float
            Its validation loss.
        model : nn.Module
            The model after the epoch (state copied when kept).
        outputs, features : Tensor
            Its held-out outputs and features.

        Returns
        -------
        bool
            Whether the epoch was kept.
        """
        if not loss < self.best_loss:  # also False for NaN
            return False
        self.best_loss, self.best_epoch = float(loss), epoch
        self.best_state = {key: value.clone() for key, value in model.state_dict().items()}
        self.best_outputs, self.best_features = outputs, features
        return True

    def should_stop(self, epoch: int) -> bool:
        """Whether ``patience`` epochs up to ``epoch`` brought no lower validation loss.

        Parameters
        ----------
        epoch : int

        Returns
        -------
        bool
        """
        return self.best_epoch > 0 and epoch - self.best_epoch >= self.patience

    def state_dict(self) -> dict:
        """Everything kept, on the CPU, for a checkpoint.

        Returns
        -------
        dict
        """
        state = {key: getattr(self, key) for key in ("best_loss", "best_epoch")}
        for key in ("best_state", "best_outputs", "best_features"):
            value = getattr(self, key)
            if isinstance(value, dict):
                value = {name: tensor.cpu() for name, tensor in value.items()}
            state[key] = value.cpu() if isinstance(value, torch.Tensor) else value
        return state

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        """Restore :meth:`state_dict`, tensors onto ``device``.

        Parameters
        ----------
        state : dict
        device : torch.device
        """
        self.best_loss, self.best_epoch = state["best_loss"], state["best_epoch"]
        best = state["best_state"]
        self.best_state = None if best is None else {k: v.to(device) for k, v in best.items()}
        for key in ("best_outputs", "best_features"):
            value = state[key]
            setattr(self, key, None if value is None else value.to(device))


def split_for_early_stopping(
    targets: np.ndarray,
    train_index: np.ndarray,
    task: str,
    early_stopping: dict | None,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The training rows trained on and the inner validation rows (none without early stopping).

    Parameters
    ----------
    targets : ndarray of shape (n_images,)
    train_index : ndarray of shape (n_train,)
        The fold's training rows (never the held-out fold's).
    task : {"classification", "regression"}
    early_stopping : dict or None
        ``validation_fraction`` (and ``patience``), or None.
    seed : int
        The fold's seed; the split uses a stream derived from it.
    groups : ndarray of shape (n_images,), optional
        Each image's group: validation takes whole groups.

    Returns
    -------
    fit_index, validation_index : ndarray of int
        Rows of ``targets``; ``validation_index`` is empty without early stopping.
    """
    if not early_stopping:
        return np.asarray(train_index), np.array([], dtype=np.int64)

    strata = np.asarray(targets)
    if strata.ndim == 2:  # multilabel: stratify on each sample's set of labels
        strata, task = np.unique(strata, axis=0, return_inverse=True)[1].ravel(), "classification"
    fit, validation = inner_validation_split(
        strata[train_index],
        task,
        early_stopping["validation_fraction"],
        derive_seed(seed, "validation"),
        None if groups is None else np.asarray(groups)[train_index],
    )
    return np.asarray(train_index)[fit], np.asarray(train_index)[validation]
