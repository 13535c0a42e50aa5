"""Training-time augmentation of whole batches on the device (``train.augment``).

Every image of a batch gets its own random flips, rotation, crop and intensity jitter, drawn
from one seeded ``torch.Generator`` on the batch's device (reproducible run to run on the
same device; on the CPU byte for byte) and applied to the whole batch at once:

- flips: torchvision's ``transforms.v2.functional`` flips of the batch, kept per image;
- rotation by up to ``rotation`` degrees and a square crop of ``crop`` to 1 times the side at a
  random position, resized back: one affine map per image, all resampled in one
  ``torch.nn.functional.grid_sample`` call (bilinear, black outside the image), as
  ``RandomRotation`` and ``RandomResizedCrop`` would one image at a time;
- brightness and contrast factors in ``1 ± brightness`` and ``1 ± contrast`` (contrast about
  each image's mean grey level, as ``adjust_contrast``).

torchvision's random v2 transforms draw one set of parameters per call: applied to a batch,
every image would get the same flip and rotation. Calling them image by image would launch
a few kernels per image and step, which on a GPU costs more than the step itself for small
networks. Hence the per-image parameters here, applied batched.

Images are augmented as floats in 0–1, before normalisation, grey ones while still one
channel. Augmentation is off by default (the paper trained without it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as functional
from torchvision.transforms.v2 import functional as transforms

FLIP_AXES = {"none": (), "horizontal": (-1,), "vertical": (-2,), "both": (-1, -2)}


def describe(settings: dict | None) -> str:
    """One line saying what augmentation a run used, for ``history.csv``.

    Parameters
    ----------
    settings : dict or None
        ``train.augment`` as resolved (a mapping with every key), or None / False for none.

    Returns
    -------
    str
        ``"none"``, or e.g. ``"flip horizontal, rotation 10, crop 0.9, brightness 0.1,
        contrast 0.1"``.
    """
    if not settings:
        return "none"
    return ", ".join(f"{key} {settings[key]}" for key in sorted(settings))


class BatchAugment:
    """Random flips, rotations, crops and intensity jitter, drawn per image.

    Parameters
    ----------
    settings : dict
        ``flip`` (``none`` | ``horizontal`` | ``vertical`` | ``both``), ``rotation`` (largest
        angle, degrees), ``crop`` (smallest crop side, as a share of the image's), and
        ``brightness`` and ``contrast`` (largest relative change).
    device : torch.device
        Where the batches are, and the generator.
    seed : int
        Seeds the generator.
    """

    DRAWS = 8  # uniforms per image: 2 flips, angle, crop side, crop x and y, brightness, contrast

    def __init__(self, settings: dict, device: torch.device, seed: int):
        self.flip_axes = FLIP_AXES[settings["flip"]]
        self.rotation = math.radians(float(settings["rotation"]))
        self.crop = float(settings["crop"])
        self.brightness = float(settings["brightness"])
        self.contrast = float(settings["contrast"])
        # Made once: a tensor built from Python numbers per batch would be a host-to-device copy.
        self.jitter_range = torch.tensor([self.brightness, self.contrast], device=device)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a batch.

        Parameters
        ----------
        images : Tensor of shape (B, C, H, W), float
            Pixels in 0–1 (C = 1 or 3), on the generator's device.

        Returns
        -------
        Tensor of shape (B, C, H, W)
            The augmented pixels, in 0–1. Every image consumes the same number of random
            draws whatever the settings, so the stream is the same with any of them off.
        """
        draws = torch.rand(
            images.shape[0], self.DRAWS, generator=self.generator, device=images.device
        )
        images = self.flip(images, draws[:, :2])
        if self.rotation > 0 or self.crop < 1:
            images = self.rotate_and_crop(images, draws[:, 2:6])
        if self.brightness > 0 or self.contrast > 0:
            images = self.jitter(images, draws[:, 6:])
        return images

    def flip(self, images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Flip each image along each configured axis with probability 1/2.

        Parameters
        ----------
        images : Tensor of shape (B, C, H, W)
        draws : Tensor of shape (B, 2)
            Uniforms: horizontal, vertical.

        Returns
        -------
        Tensor of shape (B, C, H, W)
        """
        for axis in self.flip_axes:
            column = 0 if axis == -1 else 1
            flipped = (
                transforms.horizontal_flip(images)
                if axis == -1
                else transforms.vertical_flip(images)
            )
            chosen = (draws[:, column] < 0.5).view(-1, 1, 1, 1)
            images = torch.where(chosen, flipped, images)
        return images

    def rotate_and_crop(self, images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Rotate each image and crop a random square of it, resized to the full size.

        Output pixel ``p`` (in ``[-1, 1]`` coordinates) reads input ``s · R(θ) · p + t``: ``s``
        the crop's side as a share of the image, ``θ`` the angle and ``t`` the crop's centre,
        drawn so that the unrotated crop lies inside the image.

        Parameters
        ----------
        images : Tensor of shape (B, C, H, W)
        draws : Tensor of shape (B, 4)
            Uniforms: angle, side, centre x, centre y.

        Returns
        -------
        Tensor of shape (B, C, H, W)
        """
        angle = (2 * draws[:, 0] - 1) * self.rotation
        side = self.crop + (1 - self.crop) * draws[:, 1]
        centre = (1 - side).unsqueeze(1) * (2 * draws[:, 2:] - 1)
        cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
        theta = torch.stack(
            [
                torch.stack([cos, -sin, centre[:, 0]], dim=1),
                torch.stack([sin, cos, centre[:, 1]], dim=1),
            ],
            dim=1,
        )
        grid = functional.affine_grid(theta, list(images.shape), align_corners=False)
        return functional.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )

    def jitter(self, images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Scale each image's brightness, then its contrast about its mean grey level.

        Parameters
        ----------
        images : Tensor of shape (B, C, H, W)
        draws : Tensor of shape (B, 2)
            Uniforms: brightness, contrast.

        Returns
        -------
        Tensor of shape (B, C, H, W), clamped to 0–1
        """
        factors = 1 + (2 * draws - 1) * self.jitter_range
        images = (images * factors[:, 0].view(-1, 1, 1, 1)).clamp_(0, 1)
        grey = transforms.rgb_to_grayscale(images) if images.shape[1] == 3 else images
        mean = grey.mean(dim=(1, 2, 3), keepdim=True)
        return (mean + factors[:, 1].view(-1, 1, 1, 1) * (images - mean)).clamp_(0, 1)

    def state_dict(self) -> dict:
        """The generator's state, for a checkpoint.

        Returns
        -------
        dict
            ``{"generator": ByteTensor}``.
        """
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue the random stream of a checkpoint.

        Parameters
        ----------
        state : dict
            From :meth:`state_dict`.
        """
        self.generator.set_state(state["generator"])
