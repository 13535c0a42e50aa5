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
import os
import time
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
    """What training one fold produces."""

    model: BackTopNet
    history: pd.DataFrame  # one row per epoch
    outputs: np.ndarray  # (n_held_out, n_outputs) float32, raw head outputs
    features: np.ndarray  # (n_held_out, 512) float32, back-model output


def select_device() -> torch.device:
    """CUDA when present, else the CPU. With several visible GPUs (a local multi-GPU box run
    with ``--resources gpu=N``), the one with the most free memory, so that concurrent train
    jobs spread over the cards; SLURM jobs see only their own GPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    free = [torch.cuda.mem_get_info(index)[0] for index in range(torch.cuda.device_count())]
    return torch.device("cuda", int(max(range(len(free)), key=free.__getitem__)))


class InputPipeline:
    """uint8 images → normalised float batches on the device."""

    def __init__(self, images: np.ndarray, device: torch.device):
        self.images = torch.from_numpy(images)
        if device.type == "cuda":
            self.images = self.images.pin_memory()
        self.device = device
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
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
    """
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


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
    y = torch.as_tensor(targets, dtype=torch.long if classification else torch.float32)
    if classification:
        loss_fn = nn.CrossEntropyLoss()
        shift, scale = 0.0, 1.0
    else:
        mse = nn.MSELoss()

        def loss_fn(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return mse(outputs.squeeze(1), target)

        shift = float(y[train_index].mean())
        scale = float(y[train_index].std()) or 1.0
        y = (y - shift) / scale
    y = y.to(device)
    train_rows = torch.as_tensor(train_index)
    test_rows = torch.as_tensor(test_index)
    calibration_rows = batch_norm_sample(train_rows, seed)

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
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
        train_loss = train_epoch(model, pipeline, batches, y, loss_fn, optimizer, autocast)
        recalibrate_batch_norm(model, pipeline, calibration_rows, autocast)
        outputs, features = evaluate(model, pipeline, test_rows, autocast)
        heldout = y[test_rows].cpu()
        raw = torch.from_numpy(outputs)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "heldout_loss": float(loss_fn(raw, heldout)),
            "seconds": time.perf_counter() - started,
        }
        if classification:
            row["heldout_accuracy"] = float((raw.argmax(1) == heldout).float().mean())
        else:
            row["heldout_rmse"] = float(((raw.squeeze(1) - heldout) * scale).pow(2).mean().sqrt())
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


def train_epoch(
    model: BackTopNet,
    pipeline: InputPipeline,
    batches: list[torch.Tensor],
    y: torch.Tensor,
    loss_fn,
    optimizer: torch.optim.Optimizer,
    autocast,
) -> float:
    """One pass over ``batches`` (row indices); returns the mean training loss.

    The loss is summed on the device and read once at the end: a per-batch ``float(loss)``
    would make the CPU wait for the GPU after every step.
    """
    model.train()
    loss_sum = torch.zeros((), device=y.device)
    count = 0
    for rows in batches:
        with autocast:
            outputs, _ = model(pipeline.batch(rows))
            loss = loss_fn(outputs.float(), y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(rows)
        count += len(rows)
    return float(loss_sum) / count


def batch_norm_sample(train_rows: torch.Tensor, seed: int) -> torch.Tensor:
    """The training rows whose images set the BatchNorm statistics: all of them, or a seeded
    subset of ``BN_RECALIBRATION_IMAGES`` (drawn with its own generator, so that training's
    random stream is the same with or without it)."""
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
    """Load a matching checkpoint into the training state; returns the epochs it holds."""
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
    """Head outputs and back-model features of ``rows``, as float32 arrays."""
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


def run_train_job(
    *,
    images: str,
    manifest: str,
    split: str,
    n: int,
    fold: int,
    out_model: str,
    out_features: str,
    out_history: str,
    threads: int,
    task: str,
    model: str,
    pretrained: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> None:
    """The train rule: read the prepared data and split, train, write the three outputs."""
    torch.set_num_threads(max(1, threads))
    pixels = np.load(images, mmap_mode="r")
    table = pd.read_parquet(manifest)
    assignment = pd.read_parquet(split)
    train_index = assignment.loc[assignment["fold"] != fold, "index"].to_numpy()
    test_index = assignment.loc[assignment["fold"] == fold, "index"].to_numpy()
    rows = np.sort(assignment["index"].to_numpy())
    # Only the sample's images are loaded; indices are remapped into that subset.
    subset = np.ascontiguousarray(pixels[rows])
    position = {row: i for i, row in enumerate(rows)}
    local_train = np.array([position[row] for row in train_index])
    local_test = np.array([position[row] for row in test_index])

    target = table["target"].to_numpy()[rows]
    if task == "classification":
        classes, encoded = np.unique(table["target"].to_numpy(), return_inverse=True)
        targets, n_outputs = encoded[rows], len(classes)
    else:
        classes, targets, n_outputs = np.array([]), target.astype(np.float32), 1
    device = select_device()
    # SLURM sets this when the job was given a GPU: logged as evidence of the allocation.
    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    log.info(
        "fold %d: %d train, %d held out, device %s, %d threads",
        fold,
        len(train_index),
        len(test_index),
        device,
        torch.get_num_threads(),
    )
    checkpoint = Path(out_model).with_name("checkpoint.pt")
    tag = json.dumps(
        {
            "task": task,
            "model": model,
            "pretrained": pretrained,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "split": split,
        },
        sort_keys=True,
    )
    result = fit_fold(
        subset,
        targets,
        local_train,
        local_test,
        task=task,
        n_outputs=n_outputs,
        arch=model,
        pretrained=pretrained,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        checkpoint=checkpoint,
        checkpoint_tag=tag,
        checkpoint_every_s=float(os.environ.get("HETCV_CHECKPOINT_SECONDS", "60")),
    )
    features = held_out_table(
        table, test_index, n, fold, task, classes, result.outputs, result.features
    )
    saved = {
        "arch": model,
        "task": task,
        "classes": classes.tolist(),
        "image_size": int(pixels.shape[-1]),
        "state_dict": result.model.state_dict(),
    }
    with atomic_path(out_model) as temporary:
        torch.save(saved, temporary)
    write_csv(result.history, out_history)
    write_parquet(features, out_features)
    checkpoint.unlink(missing_ok=True)
