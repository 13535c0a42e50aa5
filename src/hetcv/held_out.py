"""The held-out fold's predictions and back-model features, after batch-norm recalibration."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from hetcv.columns import feature_names
from hetcv.device import InputPipeline, pipeline_rows
from hetcv.models import BackTopNet

EVAL_BATCH_SIZE = 512


# Enough images for per-channel statistics to within a few % of their sd even where the feature
# map is 1×1; the recalibration then costs at most a forward pass over this many images.
BN_RECALIBRATION_IMAGES = 1024


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
