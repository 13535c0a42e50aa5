"""Train one (dataset, n, fold) model and extract the held-out fold's features.

Images stay uint8 (``(N, H, W)`` grey or ``(N, 3, H, W)`` colour): on a GPU they are copied
to the device once when they fit (grey ones as one channel), otherwise kept in pinned host
memory and gathered batch by batch; either way they are converted to float, augmented
(``train.augment``), expanded to 3 channels and normalised on the device, and no image is
decoded twice and no DataLoader worker started. On CUDA the model runs ``channels_last``
under bf16 autocast with cuDNN autotuning, and nothing inside an epoch waits for the GPU: the
batch order is copied to the device once per epoch, losses are summed on the device and read
once per epoch, and held-out outputs and features are gathered on the device and copied back
once. On the CPU it uses the job's threads.

The optimiser is ``torch.optim.Adam`` (the paper's), or ``torch.optim.AdamW`` with
``train.weight_decay`` > 0; the learning rate follows a ``torch.optim.lr_scheduler``
schedule. Optional, and off by default: augmentation (:mod:`hetcv.augment`), class weights
for imbalanced classes (``train.class_weights: balanced``) and early stopping on an inner
validation split of the training folds (``train.early_stopping``; the held-out fold never
takes part). ``history.csv`` records, per epoch, the losses and scores, the rate and what was
used.

Before every held-out pass the BatchNorm running statistics are recomputed over (up to
``BN_RECALIBRATION_IMAGES`` of) the training images: after the few optimiser steps of a small
fold (6 at n = 100 with 3 epochs) the momentum-averaged statistics are still far from the
data's, and the network that eval mode runs is then not the one that was trained. This made
regression predictions nearly constant and off-centre, depending on floating-point details.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from hetcv.augment import BatchAugment, describe
from hetcv.columns import feature_names
from hetcv.errors import HetcvError
from hetcv.io import atomic_path, write_csv, write_parquet
from hetcv.labels import label_columns
from hetcv.models import IMAGENET_MEAN, IMAGENET_STD, BackTopNet, build_model
from hetcv.seeding import derive_seed

log = logging.getLogger(__name__)
EVAL_BATCH_SIZE = 512
# Enough images for per-channel statistics to within a few % of their sd even where the feature
# map is 1×1; the recalibration then costs at most a forward pass over this many images.
BN_RECALIBRATION_IMAGES = 1024
# The prepared images are copied to the GPU when they take at most this share of its free
# memory (several train jobs may share one GPU); otherwise they stay in pinned host memory.
DEVICE_IMAGE_SHARE = 0.25
ONECYCLE_WARMUP = 0.25  # share of the steps over which "onecycle" rises to its peak
ONECYCLE_DIV = 25.0  # its first rate is the peak / 25 (as PyTorch's OneCycleLR's default)


@dataclass
class FoldResult:
    """What training one fold produces.

    Attributes
    ----------
    model : BackTopNet
        The trained model (with early stopping: the kept epoch's), on the CPU.
    history : DataFrame
        One row per epoch run: see :func:`fit_fold`.
    outputs : ndarray of shape (n_held_out, n_outputs), float32
        Raw head outputs of the held-out samples (logits, or values in target units).
    features : ndarray of shape (n_held_out, width), float32
        Back-model features of the held-out samples (``width``: the architecture's).
    """

    model: BackTopNet
    history: pd.DataFrame
    outputs: np.ndarray
    features: np.ndarray


def select_device() -> torch.device:
    """CUDA when present, else the CPU.

    With several visible GPUs (a local multi-GPU box run with ``--resources gpu=N``), the one
    with the most free memory, so that concurrent train jobs spread over the cards; SLURM jobs
    see only their own GPU.

    Returns
    -------
    torch.device
        ``cuda:<index>`` or ``cpu``.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    free = [torch.cuda.mem_get_info(index)[0] for index in range(torch.cuda.device_count())]
    return torch.device("cuda", int(max(range(len(free)), key=free.__getitem__)))


def images_fit_on_device(nbytes: int, free_bytes: int, share: float = DEVICE_IMAGE_SHARE) -> bool:
    """Whether images of ``nbytes`` should be kept on a GPU with ``free_bytes`` free.

    Parameters
    ----------
    nbytes : int
        The uint8 images' size (a 50,000-image study at 224 px: 2.5 GB grey, 7.5 GB colour).
    free_bytes : int
        The device's free memory.
    share : float
        The largest share of the free memory they may take.

    Returns
    -------
    bool
    """
    return nbytes <= share * free_bytes


class InputPipeline:
    """uint8 images → augmented, normalised float batches on the device.

    Parameters
    ----------
    images : ndarray of shape (n, size, size) or (n, 3, size, size), uint8
        Grey or colour images.
    device : torch.device
        Where batches are built and returned.
    mean, std : sequence of float
        Per-channel (RGB) normalisation on 0–1 pixels: the model's.
    resident : bool, optional
        CUDA only: keep the images on the device (True) or in pinned host memory (False);
        default: on the device when :func:`images_fit_on_device`. On the CPU they are used
        in place, without a copy.

    Attributes
    ----------
    resident : bool
        Whether the images are on ``device``: batches are then indexed by rows on the
        device, otherwise by rows on the CPU (``index_device``).
    """

    def __init__(
        self,
        images: np.ndarray,
        device: torch.device,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resident: bool | None = None,
    ):
        pixels = torch.from_numpy(images)
        self.device = device
        self.shape = tuple(pixels.shape[1:])
        if device.type == "cuda":
            if resident is None:
                resident = images_fit_on_device(images.nbytes, torch.cuda.mem_get_info(device)[0])
            pixels = pixels.to(device) if resident else pixels.pin_memory()
        self.resident = device.type != "cuda" or bool(resident)
        self.images = pixels
        self.index_device = device if self.resident else torch.device("cpu")
        std_ = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        mean_ = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        # (pixel / 255 − mean) / std as one multiply-add, from uint8 or from 0–1 pixels.
        self.scale_uint8 = 1.0 / (255.0 * std_)
        self.scale_unit = 1.0 / std_
        self.shift = -mean_ / std_
        self.memory_format = (
            torch.channels_last if device.type == "cuda" else torch.contiguous_format
        )

    def batch(self, index: torch.Tensor, augment: BatchAugment | None = None) -> torch.Tensor:
        """The images at ``index``, augmented, as 3 normalised channels.

        Parameters
        ----------
        index : Tensor of shape (batch,), int64
            Rows of ``images``, on ``index_device``.
        augment : BatchAugment, optional
            Applied to the 0–1 pixels (grey ones still one channel) before normalising.

        Returns
        -------
        Tensor of shape (batch, 3, size, size), float32
            On the pipeline's device; ``channels_last`` on CUDA.
        """
        if self.resident:
            pixels = self.images[index]
        else:  # gather in pinned memory, then an asynchronous copy
            staged = torch.empty((len(index), *self.shape), dtype=torch.uint8, pin_memory=True)
            torch.index_select(self.images, 0, index, out=staged)
            pixels = staged.to(self.device, non_blocking=True)
        if pixels.ndim == 3:
            pixels = pixels.unsqueeze(1)
        side = pixels.shape[-2:]
        out = torch.empty(
            (len(pixels), 3, *side), device=self.device, memory_format=self.memory_format
        )
        if augment is None:
            return torch.addcmul(self.shift, pixels.float(), self.scale_uint8, out=out)
        unit = augment(pixels.float().mul_(1.0 / 255.0))
        return torch.addcmul(self.shift, unit, self.scale_unit, out=out)


def batch_count(n: int, batch_size: int) -> int:
    """The number of batches :func:`training_batches` makes of ``n`` samples.

    Parameters
    ----------
    n, batch_size : int

    Returns
    -------
    int
    """
    count = math.ceil(n / batch_size)
    return count - 1 if count > 1 and n % batch_size == 1 else count


def training_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of indices; a last batch of one sample joins the previous one.

    (Batch norm cannot train on a batch of one once the feature map is 1×1.)

    Parameters
    ----------
    n : int
        The number of training samples.
    batch_size : int
        The size of every batch but possibly the last.
    generator : torch.Generator
        Draws the shuffle (on the CPU, so that it is the same on every device).

    Returns
    -------
    list of Tensor of shape (batch,), int64
        Positions ``0..n-1``, each exactly once; :func:`batch_count` of them.
    """
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


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
    from torch.optim import lr_scheduler

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
    from sklearn.utils.class_weight import compute_class_weight

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


def held_out_scores(
    outputs: torch.Tensor, target: torch.Tensor, loss_fn: Callable, scale: float, prefix: str
) -> dict[str, float]:
    """One epoch's loss and accuracy (classification) or RMSE in target units on a set.

    Parameters
    ----------
    outputs : Tensor of shape (n, n_outputs)
    target : Tensor of shape (n,)
        As :func:`training_objective` returns it, on the outputs' device.
    loss_fn : callable
    scale : float
        The regression targets' training sd (1 for classification).
    prefix : str
        ``"heldout"`` or ``"validation"``: the columns' prefix.

    Returns
    -------
    dict
        ``<prefix>_loss`` and ``<prefix>_accuracy`` or ``<prefix>_rmse``.
    """
    scores = {f"{prefix}_loss": float(loss_fn(outputs, target))}
    if target.dtype == torch.long:
        scores[f"{prefix}_accuracy"] = float((outputs.argmax(1) == target).float().mean())
    elif target.ndim == 2:  # multilabel: the labels' mean accuracy at 0.5
        scores[f"{prefix}_accuracy"] = float(((outputs > 0) == (target > 0.5)).float().mean())
    else:
        error = (outputs.squeeze(1) - target) * scale
        scores[f"{prefix}_rmse"] = float(error.pow(2).mean().sqrt())
    return scores


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


def settings_used(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    augment: dict | None,
    class_weights: np.ndarray | None,
    early_stopping: dict | None,
    train_samples: int,
    validation_samples: int,
) -> dict:
    """What a fold's training used beyond the model, as ``history.csv`` records it.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    schedule : str
    augment : dict or None
        ``train.augment`` resolved.
    class_weights : ndarray or None
        The cross-entropy's class weights.
    early_stopping : dict or None
    train_samples, validation_samples : int
        The samples trained on, and those of the inner validation split.

    Returns
    -------
    dict
        ``optimizer`` (``Adam`` | ``AdamW``), ``weight_decay``, ``schedule``, ``augment``
        (:func:`hetcv.augment.describe`), ``class_weights`` (``none`` or ``balanced`` with
        each class's weight), ``early_stopping`` (``none`` or its patience and validation
        share), ``train_samples`` and ``validation_samples``.
    """
    weights = "none"
    if class_weights is not None:
        weights = "balanced (" + " ".join(f"{w:.4g}" for w in class_weights) + ")"
    stopping = "none"
    if early_stopping:
        stopping = (
            f"patience {early_stopping['patience']}, "
            f"validation_fraction {early_stopping['validation_fraction']}"
        )
    return {
        "optimizer": type(optimizer).__name__,
        "weight_decay": float(optimizer.param_groups[0]["weight_decay"]),
        "schedule": schedule,
        "augment": describe(augment),
        "class_weights": weights,
        "early_stopping": stopping,
        "train_samples": train_samples,
        "validation_samples": validation_samples,
    }


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
    from hetcv.splits import inner_validation_split

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


def fit_fold(
    images: np.ndarray,
    targets: np.ndarray,
    train_index: np.ndarray,
    test_index: np.ndarray,
    *,
    task: str,
    n_outputs: int,
    arch: str,
    pretrained: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    schedule: str = "constant",
    weight_decay: float = 0.0,
    augment: dict | bool | None = None,
    class_weights: str = "none",
    early_stopping: dict | None = None,
    groups: np.ndarray | None = None,
    device: torch.device | None = None,
    checkpoint: Path | None = None,
    checkpoint_tag: str = "",
    checkpoint_every_s: float = 0.0,
) -> FoldResult:
    """Train on ``train_index``, evaluate on ``test_index`` after every epoch.

    ``targets``: class indices ``0..n_outputs-1`` (classification) or values (regression,
    standardised internally with the training mean and sd). Raw outputs are returned in
    target units for regression.

    With ``early_stopping``, a stratified ``validation_fraction`` of the training rows
    (whole groups when ``groups`` is given) is set aside; the model trains on the rest, and
    after each epoch its loss on the validation rows decides: the epoch with the lowest is
    kept (its model, held-out outputs and features), and training stops ``patience`` epochs
    after it (``epochs`` is then the most). The held-out rows never take part.

    With ``checkpoint``, the state after an epoch (model, optimiser, schedule, random
    generators, early stopping, history) is saved there once ``checkpoint_every_s`` seconds
    have passed since the last save (0: after every epoch), and a run finding a checkpoint
    with the same ``checkpoint_tag`` (the training settings) resumes after its epoch: a
    killed job loses at most that much time plus one epoch and ends, on the CPU, with the
    same model as an uninterrupted run.

    Parameters
    ----------
    images : ndarray of shape (n, size, size) or (n, 3, size, size), uint8
        The sample's images.
    targets : ndarray of shape (n,)
        One target per image, as above.
    train_index, test_index : ndarray of int
        Positions in ``images`` of the training and held-out samples.
    task : {"classification", "regression"}
    n_outputs : int
        The number of classes, or 1 for regression.
    arch : str
        The architecture (see :func:`hetcv.models.build_model`).
    pretrained : str
        ``"none"``, ``"imagenet"`` or a checkpoint path.
    epochs, batch_size : int
        Training length (the most, with early stopping) and batch size.
    lr : float
        The optimiser's learning rate; with ``schedule="onecycle"``, its peak.
    seed : int
        Seeds initialisation, shuffling, augmentation, the inner validation split and the
        BatchNorm recalibration sample.
    schedule : {"constant", "onecycle"}
        The learning rate over the steps (:func:`make_schedule`).
    weight_decay : float
        AdamW's decoupled weight decay; 0: Adam (:func:`make_optimizer`).
    augment : dict or None
        ``train.augment`` resolved (:class:`hetcv.augment.BatchAugment`), or None / False.
    class_weights : {"none", "balanced"}
        ``balanced``: cross-entropy weighted by :func:`balanced_class_weights` of the rows
        trained on.
    early_stopping : dict or None
        ``patience`` and ``validation_fraction``, or None.
    groups : ndarray of shape (n,), optional
        Each image's group (patient), for the inner validation split.
    device : torch.device, optional
        Default: :func:`select_device`.
    checkpoint : Path, optional
        Where to save and resume from; None disables checkpoints.
    checkpoint_tag : str
        The training settings a resumable checkpoint must have been made with.
    checkpoint_every_s : float
        The least time between two saves.

    Returns
    -------
    FoldResult
        Its history has one row per epoch run: ``epoch``, ``train_loss``, ``heldout_loss``,
        ``heldout_accuracy`` (classification) or ``heldout_rmse`` (regression), with early
        stopping ``validation_loss`` and ``validation_accuracy`` / ``validation_rmse``,
        ``lr`` (the epoch's last step's), ``kept`` (the epoch whose model was kept),
        ``seconds``, and the :class:`Settings` columns.

    Raises
    ------
    HetcvError
        When :func:`hetcv.models.build_model` cannot build the model or load its weights, or
        the inner validation split is impossible.
    """
    device = device or select_device()
    cuda = device.type == "cuda"
    torch.manual_seed(seed)
    model = build_model(arch, n_outputs, pretrained, image_size=images.shape[-1]).to(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    pipeline = InputPipeline(images, device, model.mean, model.std)

    fit_index, validation_index = split_for_early_stopping(
        targets, train_index, task, early_stopping, seed, groups
    )
    weights = None
    if class_weights == "balanced" and task == "classification":
        weights = balanced_class_weights(np.asarray(targets)[fit_index], n_outputs)
    loss_fn, y, shift, scale = training_objective(targets, fit_index, task, weights, device)
    rows = {
        name: torch.as_tensor(np.asarray(index, dtype=np.int64))
        for name, index in (("fit", fit_index), ("validation", validation_index))
    }
    rows["test"] = torch.as_tensor(np.asarray(test_index, dtype=np.int64))
    calibration_rows = batch_norm_sample(rows["fit"], seed)

    optimizer = make_optimizer(model.parameters(), lr, weight_decay, device)
    scheduler = make_schedule(optimizer, schedule, epochs * batch_count(len(fit_index), batch_size))
    generator = torch.Generator().manual_seed(seed)
    augmenter = BatchAugment(augment, device, derive_seed(seed, "augment")) if augment else None
    stopper = EarlyStopping(early_stopping["patience"]) if early_stopping else None
    used = settings_used(
        optimizer, schedule, augment, weights, early_stopping, len(fit_index), len(validation_index)
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    history: list[dict] = []
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    state |= {"generator": generator, "augment": augmenter, "early_stopping": stopper}
    done = resume(checkpoint, checkpoint_tag, state, history, device)
    outputs = features = None
    last_save = time.perf_counter()
    epoch = done
    while epoch < epochs and not (stopper and stopper.should_stop(epoch)):
        epoch += 1
        started = time.perf_counter()
        batches = [
            rows["fit"][batch]
            for batch in training_batches(len(rows["fit"]), batch_size, generator)
        ]
        train_loss, rate = train_epoch(
            model, pipeline, batches, y, loss_fn, optimizer, scheduler, autocast, augmenter
        )
        recalibrate_batch_norm(model, pipeline, calibration_rows, autocast)
        outputs, features = evaluate(model, pipeline, rows["test"], autocast)
        row = {"epoch": epoch, "train_loss": train_loss}
        row |= held_out_scores(outputs, y[rows["test"].to(device)], loss_fn, scale, "heldout")
        if stopper is not None:
            checked, _ = evaluate(model, pipeline, rows["validation"], autocast)
            target = y[rows["validation"].to(device)]
            row |= held_out_scores(checked, target, loss_fn, scale, "validation")
            stopper.update(epoch, row["validation_loss"], model, outputs, features)
        row |= {"lr": rate, "seconds": time.perf_counter() - started}
        log.info("epoch %s", row)
        history.append(row)
        if checkpoint is not None and time.perf_counter() - last_save >= checkpoint_every_s:
            save_checkpoint(checkpoint, checkpoint_tag, epoch, state, history)
            last_save = time.perf_counter()
    kept = epoch
    if stopper is not None and stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
        outputs, features, kept = stopper.best_outputs, stopper.best_features, stopper.best_epoch
        log.info("early stopping: kept epoch %d of %d", kept, epoch)
    if outputs is None:  # every epoch was done before a restart
        outputs, features = evaluate(model, pipeline, rows["test"], autocast)
    table = pd.DataFrame(history)
    table["kept"] = table["epoch"] == kept
    for key, value in used.items():
        table[key] = value
    outputs, features = outputs.cpu().numpy(), features.cpu().numpy()
    if task == "regression":
        outputs = outputs * scale + shift
    return FoldResult(model.cpu(), table, outputs, features)


def train_epoch(
    model: BackTopNet,
    pipeline: InputPipeline,
    batches: list[torch.Tensor],
    y: torch.Tensor,
    loss_fn: Callable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    autocast,
    augment: BatchAugment | None = None,
) -> tuple[float, float]:
    """One pass over ``batches`` (row indices); returns the mean loss and the last rate.

    Nothing waits for the device until the end: the batches' rows are copied to the device
    at once, the loss is summed on the device and read once (a per-batch ``float(loss)``
    would make the CPU wait for the GPU after every step), and the schedule works on host
    numbers.

    Parameters
    ----------
    model : BackTopNet
        Trained in place (train mode).
    pipeline : InputPipeline
        Builds each batch's images.
    batches : list of Tensor of shape (batch,), int64
        Image rows on the CPU, one tensor per optimiser step.
    y : Tensor of shape (n_images,)
        All targets, on the device (see :func:`training_objective`).
    loss_fn : callable
        ``loss_fn(outputs, target)``.
    optimizer : torch.optim.Optimizer
    scheduler : torch.optim.lr_scheduler.LRScheduler
        Stepped after every optimiser step.
    autocast : torch.autocast
        The autocast context (bf16 on CUDA, disabled on the CPU).
    augment : BatchAugment, optional
        Applied to every batch.

    Returns
    -------
    loss : float
        The sample-weighted mean loss of the epoch.
    rate : float
        The learning rate of its last step.
    """
    model.train()
    sizes = [len(rows) for rows in batches]
    on_device = torch.cat(batches).to(y.device).split(sizes)
    loss_sum = torch.zeros((), device=y.device)
    for host_rows, rows in zip(batches, on_device, strict=True):
        images = pipeline.batch(rows if pipeline.resident else host_rows, augment)
        with autocast:
            outputs, _ = model(images)
            loss = loss_fn(outputs.float(), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rate = optimizer.param_groups[0]["lr"]
        scheduler.step()
        loss_sum += loss.detach() * len(rows)
    return float(loss_sum) / sum(sizes), rate


def batch_norm_sample(train_rows: torch.Tensor, seed: int) -> torch.Tensor:
    """The training rows whose images set the BatchNorm statistics.

    All of them, or a seeded subset of ``BN_RECALIBRATION_IMAGES`` (drawn with its own
    generator, so that training's random stream is the same with or without it).

    Parameters
    ----------
    train_rows : Tensor of shape (n_train,), int64
        The training rows.
    seed : int
        Seeds the subset.

    Returns
    -------
    Tensor of shape (min(n_train, BN_RECALIBRATION_IMAGES),), int64
    """
    if len(train_rows) <= BN_RECALIBRATION_IMAGES:
        return train_rows
    order = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(seed))
    return train_rows[order[:BN_RECALIBRATION_IMAGES]]


def pipeline_rows(pipeline: InputPipeline, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` (on the CPU) where ``pipeline`` indexes its images, copied once.

    Parameters
    ----------
    pipeline : InputPipeline
    rows : Tensor of shape (n,), int64

    Returns
    -------
    Tensor of shape (n,), int64
    """
    return rows.to(pipeline.index_device)


@torch.no_grad()
def recalibrate_batch_norm(
    model: BackTopNet, pipeline: InputPipeline, rows: torch.Tensor, autocast
) -> None:
    """Recompute every BatchNorm layer's running mean and variance over the images of ``rows``.

    The statistics are reset and accumulated as an equal-weight average over near-equal batches
    (``momentum=None``), with every other layer in eval mode (dropout off, as in the held-out
    pass). The weights are untouched, and training, which uses batch statistics, is unaffected.
    The images are not augmented: eval mode sees unaugmented ones.

    Parameters
    ----------
    model, pipeline, autocast
        As for :func:`train_epoch`; ``model`` is left in eval mode.
    rows : Tensor of shape (n_rows,), int64
        The calibration rows (see :func:`batch_norm_sample`), on the CPU.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    indexed = pipeline_rows(pipeline, rows)
    for batch in indexed.tensor_split(-(-len(rows) // EVAL_BATCH_SIZE)):
        with autocast:
            model(pipeline.batch(batch))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


@torch.inference_mode()
def evaluate(
    model: BackTopNet, pipeline: InputPipeline, rows: torch.Tensor, autocast
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head outputs and back-model features of ``rows``, gathered on the device.

    Batches of ``EVAL_BATCH_SIZE``; the results are written into two tensors on the device,
    so that a caller copies them back once.

    Parameters
    ----------
    model, pipeline, autocast
        See :func:`train_epoch`; the model is put in eval mode.
    rows : Tensor of shape (n_rows,), int64
        The images to evaluate, in order, on the CPU.

    Returns
    -------
    outputs : Tensor of shape (n_rows, n_outputs), float32
    features : Tensor of shape (n_rows, width), float32
        On the pipeline's device.
    """
    model.eval()
    indexed = pipeline_rows(pipeline, rows)
    outputs = features = None
    for start in range(0, len(rows), EVAL_BATCH_SIZE):
        part = slice(start, start + EVAL_BATCH_SIZE)
        with autocast:
            out, feat = model(pipeline.batch(indexed[part]))
        if outputs is None:
            outputs = torch.empty((len(rows), out.shape[1]), device=out.device)
            features = torch.empty((len(rows), feat.shape[1]), device=feat.device)
        outputs[part] = out
        features[part] = feat
    return outputs, features


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


def held_out_table(
    manifest: pd.DataFrame,
    test_index: np.ndarray,
    n: int,
    fold: int,
    task: str,
    classes: np.ndarray,
    outputs: np.ndarray,
    features: np.ndarray,
) -> pd.DataFrame:
    """The ``features.parquet`` table: one row per held-out sample.

    Columns: ``sample_id``, ``n``, ``fold``, ``target``, ``prediction`` (binary: probability of the
    positive class; multi-class: probability of the predicted class; regression: predicted
    value), ``predicted_label`` and ``correct`` (classification) or ``sq_error``
    (regression), ``loss`` (cross-entropy of the true class, or the squared error), for
    classification ``probability_0`` … ``probability_{C-1}`` (softmax over ``classes`` in their
    sorted order); for multilabel ``target_<label>``, ``probability_<label>`` (sigmoid) and
    ``correct_<label>`` (at 0.5) per label, ``prediction`` their mean probability and ``loss``
    their mean cross-entropy; then ``f000`` … (float32 back-model
    features, as many as the architecture's width: ``f511`` for ResNet18, ``f1023`` for
    DenseNet121 …).

    Parameters
    ----------
    manifest : DataFrame
        The prepared manifest (``sample_id``, ``target``).
    test_index : ndarray of shape (n_held_out,)
        The held-out rows of ``manifest``.
    n, fold : int
        The sample size and fold, repeated on every row.
    task : {"classification", "regression", "multilabel"}
    classes : ndarray of shape (n_classes,)
        The sorted class labels (empty for regression; the label keys for multilabel).
    outputs : ndarray of shape (n_held_out, n_outputs)
        Raw head outputs: logits, or values in target units.
    features : ndarray of shape (n_held_out, width)

    Returns
    -------
    DataFrame
        One row per held-out sample, the columns above.
    """
    held_out = manifest.iloc[test_index]
    table = pd.DataFrame(
        {
            "sample_id": held_out["sample_id"].to_numpy(),
            "n": np.full(len(test_index), n, dtype=np.int64),
            "fold": np.full(len(test_index), fold, dtype=np.int64),
            "target": held_out["target"].to_numpy(),
        }
    )
    if task == "classification":
        probability = torch.softmax(torch.from_numpy(outputs), dim=1).numpy()
        predicted = classes[probability.argmax(1)]
        if len(classes) == 2:
            table["prediction"] = probability[:, 1].astype(np.float64)
        else:
            table["prediction"] = probability.max(1).astype(np.float64)
        table["predicted_label"] = predicted
        table["correct"] = predicted == table["target"].to_numpy()
        true_class = np.searchsorted(classes, table["target"].to_numpy())
        picked = probability[np.arange(len(table)), true_class]
        table["loss"] = -np.log(np.clip(picked, 1e-12, None)).astype(np.float64)
        for index in range(len(classes)):
            table[f"probability_{index}"] = probability[:, index].astype(np.float64)
    elif task == "multilabel":
        probability = torch.sigmoid(torch.from_numpy(outputs)).numpy().astype(np.float64)
        target = held_out[[f"target_{key}" for key in classes]].to_numpy(np.int64)
        table["prediction"] = probability.mean(axis=1)
        picked = np.where(target == 1, probability, 1 - probability)
        table["loss"] = -np.log(np.clip(picked, 1e-12, None)).mean(axis=1)
        for index, key in enumerate(classes):
            table[f"target_{key}"] = target[:, index]
            table[f"probability_{key}"] = probability[:, index]
            table[f"correct_{key}"] = (probability[:, index] >= 0.5) == (target[:, index] == 1)
    else:
        table["prediction"] = outputs[:, 0].astype(np.float64)
        table["sq_error"] = (table["prediction"] - table["target"]) ** 2
        table["loss"] = table["sq_error"]
    columns = feature_names(features.shape[1])
    feature_frame = pd.DataFrame(features.astype(np.float32), columns=columns)
    return pd.concat([table, feature_frame], axis=1)


def fold_rows(
    split: pd.DataFrame, fold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sample's rows of the prepared data, and the fold's train and held-out positions.

    Parameters
    ----------
    split : DataFrame
        The split table: ``index`` (row of the prepared data) and ``fold``.
    fold : int
        The held-out fold.

    Returns
    -------
    rows : ndarray of shape (n,)
        The sample's rows of the prepared data, sorted: only these images are loaded.
    test_index : ndarray of shape (n_held_out,)
        The held-out rows of the prepared data.
    local_train, local_test : ndarray
        Positions of the training and held-out samples within ``rows``.
    """
    rows = np.sort(split["index"].to_numpy())
    held_out = split["fold"].to_numpy() == fold
    test_index = split.loc[held_out, "index"].to_numpy()
    local_train = np.searchsorted(rows, split.loc[~held_out, "index"].to_numpy())
    return rows, test_index, local_train, np.searchsorted(rows, test_index)


TRAINING_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "schedule",
    "weight_decay",
    "augment",
    "class_weights",
    "early_stopping",
    "seed",
)


def run_train_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The train rule: read the prepared data and split, train, write the three outputs.

    Parameters
    ----------
    inputs : dict
        ``images``, ``manifest`` and ``split``.
    outputs : dict
        ``model`` (checkpoint), ``features`` (held-out features table) and ``history``.
    params : dict
        ``dataset``, ``n``, ``fold``, ``task``, ``model``, ``pretrained``, the
        :data:`TRAINING_KEYS` (``datasets.<name>.train``, with ``seed`` the fold's) and
        ``threads``.

    Raises
    ------
    HetcvError
        Naming ``datasets.<dataset>.<key>``, for a model, weights, image size or inner
        validation split that does not work.
    """
    task, fold = params["task"], params["fold"]
    torch.set_num_threads(max(1, params["threads"]))
    pixels = np.load(inputs["images"], mmap_mode="r")
    table = pd.read_parquet(inputs["manifest"])
    split = pd.read_parquet(inputs["split"])
    rows, test_index, local_train, local_test = fold_rows(split, fold)
    groups = split.set_index("index").loc[rows, "group"].to_numpy() if "group" in split else None
    if task == "classification":
        classes, encoded = np.unique(table["target"].to_numpy(), return_inverse=True)
        targets, n_outputs = encoded[rows], len(classes)
    elif task == "multilabel":
        classes = np.array(label_columns(table))
        targets = table[[f"target_{key}" for key in classes]].to_numpy(np.float32)[rows]
        n_outputs = len(classes)
    else:
        classes, targets, n_outputs = np.array([]), table["target"].to_numpy()[rows], 1
    device = select_device()
    # SLURM sets this when the job was given a GPU: logged as evidence of the allocation.
    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    log.info(
        "fold %d: %d train, %d held out, device %s, %d threads, model %s",
        fold,
        len(local_train),
        len(local_test),
        device,
        torch.get_num_threads(),
        params["model"],
    )
    checkpoint = Path(outputs["model"]).with_name("checkpoint.pt")
    training = {key: params[key] for key in TRAINING_KEYS}
    tag = {"task": task, "model": params["model"], "pretrained": params["pretrained"]}
    try:
        result = fit_fold(
            np.ascontiguousarray(pixels[rows]),
            targets,
            local_train,
            local_test,
            task=task,
            n_outputs=n_outputs,
            arch=params["model"],
            pretrained=params["pretrained"],
            **training,
            groups=groups,
            device=device,
            checkpoint=checkpoint,
            checkpoint_tag=json.dumps(
                {**tag, **training, "split": inputs["split"]}, sort_keys=True
            ),
            checkpoint_every_s=float(os.environ.get("HETCV_CHECKPOINT_SECONDS", "60")),
        )
    except HetcvError as error:
        raise HetcvError(f"datasets.{params['dataset']}.{error}") from error
    features = held_out_table(
        table, test_index, params["n"], fold, task, classes, result.outputs, result.features
    )
    saved = {
        "arch": params["model"],
        "task": task,
        "classes": classes.tolist(),
        "image_size": int(pixels.shape[-1]),
        "feature_width": result.model.width,
        "mean": list(result.model.mean),
        "std": list(result.model.std),
        "state_dict": result.model.state_dict(),
    }
    with atomic_path(outputs["model"]) as temporary:
        torch.save(saved, temporary)
    write_csv(result.history, outputs["history"])
    write_parquet(features, outputs["features"])
    checkpoint.unlink(missing_ok=True)
