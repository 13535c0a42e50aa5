"""Train one (dataset, n, fold) model and extract the held-out fold's features.

Images stay uint8 in memory (``(N, H, W)`` grey or ``(N, 3, H, W)`` colour) and are
converted, expanded to 3 channels and ImageNet-normalised on the device, batch by batch; no
image is decoded twice and no DataLoader workers are started. On CUDA the model runs
``channels_last`` under bf16 autocast with cuDNN autotuning; on the CPU it uses the job's
threads. The last epoch's held-out evaluation is also the feature extraction, so no pass is
repeated.

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

from hetcv.columns import FEATURE_COLUMNS
from hetcv.io import atomic_path, write_csv, write_parquet
from hetcv.models import IMAGENET_MEAN, IMAGENET_STD, BackTopNet, build_model

log = logging.getLogger(__name__)
EVAL_BATCH_SIZE = 512
# Enough images for per-channel statistics to within a few % of their sd even where the feature
# map is 1×1; the recalibration then costs at most a forward pass over this many images.
BN_RECALIBRATION_IMAGES = 1024


@dataclass
class FoldResult:
    """What training one fold produces.

    Attributes
    ----------
    model : BackTopNet
        The trained model, on the CPU.
    history : DataFrame
        One row per epoch: ``epoch``, ``train_loss``, ``heldout_loss``, ``heldout_accuracy``
        (classification) or ``heldout_rmse`` (regression), and ``seconds``.
    outputs : ndarray of shape (n_held_out, n_outputs), float32
        Raw head outputs of the held-out samples (logits, or values in target units).
    features : ndarray of shape (n_held_out, 512), float32
        Back-model features of the held-out samples.
    """

    model: BackTopNet
    history: pd.DataFrame  # one row per epoch
    outputs: np.ndarray  # (n_held_out, n_outputs) float32, raw head outputs
    features: np.ndarray  # (n_held_out, 512) float32, back-model output


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


class InputPipeline:
    """uint8 images → normalised float batches on the device.

    Parameters
    ----------
    images : ndarray of shape (n, size, size) or (n, 3, size, size), uint8
        Grey or colour images; kept on the host (pinned on CUDA) without a copy.
    device : torch.device
        Where batches are built and returned.
    """

    def __init__(self, images: np.ndarray, device: torch.device):
        self.images = torch.from_numpy(images)
        if device.type == "cuda":
            self.images = self.images.pin_memory()
        self.device = device
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """The images at ``index``, grey expanded to 3 channels, ImageNet-normalised.

        Parameters
        ----------
        index : Tensor of shape (batch,), int64
            Rows of ``images``.

        Returns
        -------
        Tensor of shape (batch, 3, size, size), float32
            On the pipeline's device; ``channels_last`` on CUDA.
        """
        pixels = self.images[index].to(self.device, non_blocking=True)
        if pixels.ndim == 3:
            pixels = pixels.unsqueeze(1).expand(-1, 3, -1, -1)
        batch = (pixels.float().div_(255.0) - self.mean) / self.std
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch


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
        Draws the shuffle.

    Returns
    -------
    list of Tensor of shape (batch,), int64
        Positions ``0..n-1``, each exactly once.
    """
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


ONECYCLE_WARMUP = 0.25  # share of the steps over which "onecycle" rises to its peak
ONECYCLE_START = 0.04  # its first rate, as a share of the peak (PyTorch's OneCycleLR: 1/25)


def learning_rate(step: int, total: int, peak: float, schedule: str) -> float:
    """The learning rate of step ``step`` (from 0) of ``total``.

    ``constant``: ``peak`` throughout. ``onecycle`` (Smith & Topin 2019, as PyTorch's
    ``OneCycleLR`` with cosine annealing): from ``ONECYCLE_START × peak`` up to ``peak`` over
    the first ``ONECYCLE_WARMUP`` of the steps, then down to 0 along a cosine. A function of
    the step alone, so that a resumed run continues the same schedule.

    Parameters
    ----------
    step, total : int
    peak : float
    schedule : {"constant", "onecycle"}

    Returns
    -------
    float
    """
    if schedule == "constant":
        return peak
    rise = max(1, round(ONECYCLE_WARMUP * total))
    if step < rise:
        start = ONECYCLE_START * peak
        return start + (peak - start) * step / rise
    fall = max(1, total - rise)
    return peak * 0.5 * (1.0 + math.cos(math.pi * (step - rise) / fall))


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
    device: torch.device | None = None,
    checkpoint: Path | None = None,
    checkpoint_tag: str = "",
    checkpoint_every_s: float = 0.0,
) -> FoldResult:
    """Train on ``train_index``, evaluate on ``test_index`` after every epoch.

    ``targets``: class indices ``0..n_outputs-1`` (classification) or values (regression,
    standardised internally with the training mean and sd). Raw outputs are returned in
    target units for regression.

    With ``checkpoint``, the state after an epoch (model, optimiser, random generators,
    history) is saved there once ``checkpoint_every_s`` seconds have passed since the last save
    (0: after every epoch), and a run finding a checkpoint with the same ``checkpoint_tag``
    (the training settings) resumes after its epoch: a killed job loses at most that much
    time plus one epoch and ends, on the CPU, with the same model as an uninterrupted run.

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
    arch : {"resnet18", "vgg16"}
        The architecture (see :func:`hetcv.models.build_model`).
    pretrained : str
        ``"none"``, ``"imagenet"`` or a checkpoint path.
    epochs, batch_size : int
        Training length and batch size.
    lr : float
        Adam's learning rate; with ``schedule="onecycle"``, its peak.
    seed : int
        Seeds initialisation, shuffling and the BatchNorm recalibration sample.
    schedule : {"constant", "onecycle"}
        The learning rate over the steps (:func:`learning_rate`).
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

    Raises
    ------
    HetcvError
        When :func:`hetcv.models.build_model` cannot build the model or load its weights.
    """
    device = device or select_device()
    cuda = device.type == "cuda"
    torch.manual_seed(seed)
    model = build_model(arch, n_outputs, pretrained).to(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    pipeline = InputPipeline(images, device)

    classification = task == "classification"
    loss_fn, y, shift, scale = training_objective(targets, train_index, task)
    y = y.to(device)
    train_rows = torch.as_tensor(train_index)
    test_rows = torch.as_tensor(test_index)
    calibration_rows = batch_norm_sample(train_rows, seed)

    optimizer = Adam(list(model.parameters()), lr)
    generator = torch.Generator().manual_seed(seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    history = []
    done = resume(checkpoint, checkpoint_tag, model, optimizer, generator, history)
    outputs = features = None
    last_save = time.perf_counter()
    for epoch in range(done + 1, epochs + 1):
        started = time.perf_counter()
        batches = [
            train_rows[batch] for batch in training_batches(len(train_rows), batch_size, generator)
        ]
        steps = [(epoch - 1) * len(batches) + b for b in range(len(batches))]
        rates = [learning_rate(step, epochs * len(batches), lr, schedule) for step in steps]
        train_loss = train_epoch(model, pipeline, batches, rates, y, loss_fn, optimizer, autocast)
        recalibrate_batch_norm(model, pipeline, calibration_rows, autocast)
        outputs, features = evaluate(model, pipeline, test_rows, autocast)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            **held_out_scores(torch.from_numpy(outputs), y[test_rows].cpu(), loss_fn, scale),
            "seconds": time.perf_counter() - started,
        }
        log.info("epoch %s", row)
        history.append(row)
        if checkpoint is not None and time.perf_counter() - last_save >= checkpoint_every_s:
            save_checkpoint(checkpoint, checkpoint_tag, epoch, model, optimizer, generator, history)
            last_save = time.perf_counter()
    if outputs is None:  # every epoch was done before a restart
        outputs, features = evaluate(model, pipeline, test_rows, autocast)
    if not classification:
        outputs = outputs * scale + shift
    return FoldResult(model.cpu(), pd.DataFrame(history), outputs, features)


def training_objective(
    targets: np.ndarray, train_index: np.ndarray, task: str
) -> tuple[Callable, torch.Tensor, float, float]:
    """The loss and the targets it compares against, standardised for regression.

    Parameters
    ----------
    targets : ndarray of shape (n_images,)
        Class indices (classification) or values (regression).
    train_index : ndarray of shape (n_train,)
        Rows whose mean and sd standardise regression targets.
    task : {"classification", "regression"}

    Returns
    -------
    loss_fn : callable
        ``loss_fn(outputs (batch, n_outputs), target (batch,))``: cross-entropy or MSE.
    y : Tensor of shape (n_images,)
        The targets as the loss sees them (long, or standardised float).
    shift, scale : float
        ``target = y · scale + shift`` (0 and 1 for classification).
    """
    if task == "classification":
        return nn.CrossEntropyLoss(), torch.as_tensor(targets, dtype=torch.long), 0.0, 1.0
    mse = nn.MSELoss()

    def loss_fn(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse(outputs.squeeze(1), target)

    y = torch.as_tensor(targets, dtype=torch.float32)
    shift = float(y[train_index].mean())
    scale = float(y[train_index].std()) or 1.0
    return loss_fn, (y - shift) / scale, shift, scale


def held_out_scores(
    outputs: torch.Tensor, target: torch.Tensor, loss_fn: Callable, scale: float
) -> dict[str, float]:
    """One epoch's held-out loss and accuracy (classification) or RMSE in target units.

    Parameters
    ----------
    outputs : Tensor of shape (n_held_out, n_outputs)
    target : Tensor of shape (n_held_out,)
        As :func:`training_objective` returns it.
    loss_fn : callable
    scale : float
        The regression targets' training sd (1 for classification).

    Returns
    -------
    dict
        ``heldout_loss`` and ``heldout_accuracy`` or ``heldout_rmse``.
    """
    scores = {"heldout_loss": float(loss_fn(outputs, target))}
    if target.dtype == torch.long:
        scores["heldout_accuracy"] = float((outputs.argmax(1) == target).float().mean())
    else:
        error = (outputs.squeeze(1) - target) * scale
        scores["heldout_rmse"] = float(error.pow(2).mean().sqrt())
    return scores


class Adam:
    """Adam (Kingma & Ba 2015) exactly as ``torch.optim.Adam`` with its defaults, bar the module.

    Every ``torch.optim`` optimiser imports ``torch._dynamo`` when it is built and stepped:
    2.5 s of each train job's start on a CPU (measured), for a compiler hetcv does not use.
    Same update as PyTorch's (betas 0.9 and 0.999, eps 1e-8, no weight decay; checked
    against it in the tests), on all parameters at once with ``torch._foreach`` kernels.

    Parameters
    ----------
    parameters : list of Tensor
        The model's parameters.
    lr : float
        The learning rate; set ``lr`` between steps to follow a schedule.
    """

    BETAS = (0.9, 0.999)
    EPS = 1e-8

    def __init__(self, parameters: list[torch.Tensor], lr: float) -> None:
        self.parameters = parameters
        self.lr = lr
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in parameters]
        self.exp_avg_sq = [torch.zeros_like(p) for p in parameters]

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        rows = [i for i, p in enumerate(self.parameters) if p.grad is not None]
        parameters = [self.parameters[i] for i in rows]
        grads = [p.grad for p in parameters]
        exp_avg = [self.exp_avg[i] for i in rows]
        exp_avg_sq = [self.exp_avg_sq[i] for i in rows]
        beta1, beta2 = self.BETAS
        self.steps += 1
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1 - beta2)
        denominator = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denominator, math.sqrt(1 - beta2**self.steps))
        torch._foreach_add_(denominator, self.EPS)
        step_size = self.lr / (1 - beta1**self.steps)
        torch._foreach_addcdiv_(parameters, exp_avg, denominator, -step_size)

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    def state_dict(self) -> dict:
        return {"steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        for mine, saved in zip(
            self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"], strict=True
        ):
            mine.copy_(saved)


def train_epoch(
    model: BackTopNet,
    pipeline: InputPipeline,
    batches: list[torch.Tensor],
    rates: list[float],
    y: torch.Tensor,
    loss_fn,
    optimizer: Adam,
    autocast,
) -> float:
    """One pass over ``batches`` (row indices); returns the mean training loss.

    The loss is summed on the device and read once at the end: a per-batch ``float(loss)``
    would make the CPU wait for the GPU after every step.

    Parameters
    ----------
    model : BackTopNet
        Trained in place (train mode).
    pipeline : InputPipeline
        Builds each batch's images.
    batches : list of Tensor of shape (batch,), int64
        Image rows, one tensor per optimiser step.
    rates : list of float
        The learning rate of each step.
    y : Tensor of shape (n_images,)
        All targets, on the device (see :func:`training_objective`).
    loss_fn : callable
        ``loss_fn(outputs, target)``.
    optimizer : Adam
    autocast : torch.autocast
        The autocast context (bf16 on CUDA, disabled on the CPU).

    Returns
    -------
    float
        The sample-weighted mean loss of the epoch.
    """
    model.train()
    loss_sum = torch.zeros((), device=y.device)
    count = 0
    for rows, rate in zip(batches, rates, strict=True):
        optimizer.lr = rate
        with autocast:
            outputs, _ = model(pipeline.batch(rows))
            loss = loss_fn(outputs.float(), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(rows)
        count += len(rows)
    return float(loss_sum) / count


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


@torch.no_grad()
def recalibrate_batch_norm(
    model: BackTopNet, pipeline: InputPipeline, rows: torch.Tensor, autocast
) -> None:
    """Recompute every BatchNorm layer's running mean and variance over the images of ``rows``.

    The statistics are reset and accumulated as an equal-weight average over near-equal batches
    (``momentum=None``), with every other layer in eval mode (dropout off, as in the held-out
    pass). The weights are untouched, and training, which uses batch statistics, is unaffected.

    Parameters
    ----------
    model, pipeline, autocast
        As for :func:`train_epoch`; ``model`` is left in eval mode.
    rows : Tensor of shape (n_rows,), int64
        The calibration rows (see :func:`batch_norm_sample`).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    model.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    for batch in rows.tensor_split(-(-len(rows) // EVAL_BATCH_SIZE)):
        with autocast:
            model(pipeline.batch(batch))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def save_checkpoint(path, tag, epoch, model, optimizer, generator, history) -> None:
    """Save the training state after ``epoch``, atomically, for :func:`resume`.

    Parameters
    ----------
    path : path-like
        The checkpoint file.
    tag : str
        The training settings (JSON); a checkpoint resumes only a run with the same tag.
    epoch : int
        The last completed epoch.
    model : BackTopNet
    optimizer : Adam
    generator : torch.Generator
        The batch-shuffling generator; the global CPU and CUDA generators are saved too.
    history : list of dict
        The history rows so far.
    """
    state = {
        "tag": tag,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": history,
    }
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def resume(path, tag, model, optimizer, generator, history) -> int:
    """Load a matching checkpoint into the training state; returns the epochs it holds.

    Parameters
    ----------
    path, tag
        As for :func:`save_checkpoint`; ``path`` may be None or missing (nothing to resume).
    model, optimizer, generator
        Loaded in place, with the global random generators.
    history : list of dict
        Extended with the checkpoint's history rows.

    Returns
    -------
    int
        The last epoch done, or 0 when there is no checkpoint or its tag differs.
    """
    if path is None or not Path(path).exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("tag") != tag:
        log.warning("ignoring checkpoint %s: it was made with other settings", path)
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    history.extend(state["history"])
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return int(state["epoch"])


@torch.inference_mode()
def evaluate(
    model: BackTopNet, pipeline: InputPipeline, rows: torch.Tensor, autocast
) -> tuple[np.ndarray, np.ndarray]:
    """Head outputs and back-model features of ``rows``, as float32 arrays.

    Parameters
    ----------
    model, pipeline, autocast
        See :func:`train_epoch`; the model is put in eval mode.
    rows : Tensor of shape (n_rows,), int64
        The images to evaluate, in order.

    Returns
    -------
    outputs : ndarray of shape (n_rows, n_outputs), float32
    features : ndarray of shape (n_rows, 512), float32
    """
    model.eval()
    outputs, features = [], []
    for batch in rows.split(EVAL_BATCH_SIZE):
        with autocast:
            out, feat = model(pipeline.batch(batch))
        outputs.append(out.float().cpu())
        features.append(feat.float().cpu())
    return torch.cat(outputs).numpy(), torch.cat(features).numpy()


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
    sorted order: what temperature scaling needs), then ``f000`` … ``f511`` (float32
    back-model features).

    Parameters
    ----------
    manifest : DataFrame
        The prepared manifest (``sample_id``, ``target``).
    test_index : ndarray of shape (n_held_out,)
        The held-out rows of ``manifest``.
    n, fold : int
        The sample size and fold, repeated on every row.
    task : {"classification", "regression"}
    classes : ndarray of shape (n_classes,)
        The sorted class labels (empty for regression).
    outputs : ndarray of shape (n_held_out, n_outputs)
        Raw head outputs: logits, or values in target units.
    features : ndarray of shape (n_held_out, 512)

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
    else:
        table["prediction"] = outputs[:, 0].astype(np.float64)
        table["sq_error"] = (table["prediction"] - table["target"]) ** 2
        table["loss"] = table["sq_error"]
    feature_frame = pd.DataFrame(features.astype(np.float32), columns=FEATURE_COLUMNS)
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


def run_train_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The train rule: read the prepared data and split, train, write the three outputs.

    Parameters
    ----------
    inputs : dict
        ``images``, ``manifest`` and ``split``.
    outputs : dict
        ``model`` (checkpoint), ``features`` (held-out features table) and ``history``.
    params : dict
        ``n``, ``fold``, ``task``, ``model``, ``pretrained``, ``epochs``, ``batch_size``,
        ``lr``, ``seed`` and ``threads``.
    """
    task, fold = params["task"], params["fold"]
    torch.set_num_threads(max(1, params["threads"]))
    pixels = np.load(inputs["images"], mmap_mode="r")
    table = pd.read_parquet(inputs["manifest"])
    rows, test_index, local_train, local_test = fold_rows(pd.read_parquet(inputs["split"]), fold)
    if task == "classification":
        classes, encoded = np.unique(table["target"].to_numpy(), return_inverse=True)
        targets, n_outputs = encoded[rows], len(classes)
    else:
        classes, targets, n_outputs = np.array([]), table["target"].to_numpy()[rows], 1
    device = select_device()
    # SLURM sets this when the job was given a GPU: logged as evidence of the allocation.
    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    log.info(
        "fold %d: %d train, %d held out, device %s, %d threads",
        fold,
        len(local_train),
        len(local_test),
        device,
        torch.get_num_threads(),
    )
    checkpoint = Path(outputs["model"]).with_name("checkpoint.pt")
    training = {key: params[key] for key in ("epochs", "batch_size", "lr", "schedule", "seed")}
    tag = {"task": task, "model": params["model"], "pretrained": params["pretrained"]}
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
        device=device,
        checkpoint=checkpoint,
        checkpoint_tag=json.dumps({**tag, **training, "split": inputs["split"]}, sort_keys=True),
        checkpoint_every_s=float(os.environ.get("HETCV_CHECKPOINT_SECONDS", "60")),
    )
    features = held_out_table(
        table, test_index, params["n"], fold, task, classes, result.outputs, result.features
    )
    saved = {
        "arch": params["model"],
        "task": task,
        "classes": classes.tolist(),
        "image_size": int(pixels.shape[-1]),
        "state_dict": result.model.state_dict(),
    }
    with atomic_path(outputs["model"]) as temporary:
        torch.save(saved, temporary)
    write_csv(result.history, outputs["history"])
    write_parquet(features, outputs["features"])
    checkpoint.unlink(missing_ok=True)
