"""Where training runs, and the images on the device: the input pipeline and its batches."""

from __future__ import annotations

import math

import numpy as np
import torch

from hetcv.augment import BatchAugment
from hetcv.models import IMAGENET_MEAN, IMAGENET_STD

# The prepared images are copied to the GPU when they take at most this share of its free
# memory (several train jobs may share one GPU); otherwise they stay in pinned host memory.
DEVICE_IMAGE_SHARE = 0.25


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
