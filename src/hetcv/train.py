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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hetcv.augment import BatchAugment, describe
from hetcv.checkpoints import resume, save_checkpoint
from hetcv.device import InputPipeline, batch_count, select_device, training_batches
from hetcv.errors import HetcvError
from hetcv.held_out import (
    batch_norm_sample,
    evaluate,
    fold_rows,
    held_out_scores,
    held_out_table,
    recalibrate_batch_norm,
)
from hetcv.io import atomic_path, write_csv, write_parquet
from hetcv.label_names import label_columns
from hetcv.models import BackTopNet, build_model
from hetcv.optimisation import (
    EarlyStopping,
    balanced_class_weights,
    make_optimizer,
    make_schedule,
    split_for_early_stopping,
    training_objective,
)
from hetcv.seeding import derive_seed

log = logging.getLogger(__name__)


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
