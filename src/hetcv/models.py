"""Back models (feature extractors, 512-d) and top models (heads), and their weights.

- ``resnet18``: torchvision ResNet18 up to the global average pool (512-d); head: one linear
  layer (the paper's PSP-plate model).
- ``vgg16``: torchvision VGG16 ``features`` → global average pool (512-d); head: a 4-layer
  fully connected network (the paper's bone-age model, after Calderon et al. 2018).

``pretrained`` is ``none`` (random initialisation), ``imagenet`` (torchvision's
IMAGENET1K_V1 weights through its weights API, from ``$TORCH_HOME/hub/checkpoints``), or the
path of a checkpoint holding a torchvision state dict of the same architecture (optionally
under a ``state_dict`` key). Nothing ever falls back silently to random weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models

from hetcv.columns import FEATURE_DIM
from hetcv.errors import HetcvError

ARCHITECTURES = ("resnet18", "vgg16")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Keys of torchvision's own classifier, which a checkpoint may carry and hetcv replaces.
CLASSIFIER_PREFIX = {"resnet18": "fc.", "vgg16": "classifier."}


class BackTopNet(nn.Module):
    """A back model (``(B, 3, H, W)`` → ``(B, 512)``) followed by a top model (→ outputs)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(outputs (B, n_outputs), features (B, 512))``."""
        features = self.backbone(images)
        return self.head(features), features


def make_head(arch: str, n_outputs: int) -> nn.Module:
    if arch == "resnet18":
        return nn.Linear(FEATURE_DIM, n_outputs)
    return nn.Sequential(
        nn.Linear(FEATURE_DIM, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(256, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(128, 64),
        nn.ReLU(inplace=True),
        nn.Linear(64, n_outputs),
    )


def imagenet_weights(arch: str) -> models.WeightsEnum:
    return {
        "resnet18": models.ResNet18_Weights.IMAGENET1K_V1,
        "vgg16": models.VGG16_Weights.IMAGENET1K_V1,
    }[arch]


def imagenet_cache_path(arch: str) -> Path:
    """Where torchvision looks for (and downloads) the ImageNet weights of ``arch``."""
    filename = Path(urlparse(imagenet_weights(arch).url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights from the torch hub cache, downloading them when they are missing."""
    weights = imagenet_weights(arch)
    path = imagenet_cache_path(arch)
    try:
        return weights.get_state_dict(progress=False)
    except (OSError, RuntimeError) as error:
        raise HetcvError(
            f"pretrained: imagenet: weights for {arch} are not cached and could not be "
            f"downloaded ({type(error).__name__}); place {path.name} from {weights.url} at "
            f"{path} (TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')})"
        ) from error


def load_checkpoint_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise HetcvError(f"pretrained: checkpoint file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt file
        raise HetcvError(f"pretrained: cannot read checkpoint {path}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise HetcvError(f"pretrained: checkpoint {path} holds no state dict")
    return state


def load_backbone_weights(base: nn.Module, arch: str, state: dict, origin: str) -> None:
    """Load ``state`` into a torchvision model; only its own classifier may differ."""
    result = base.load_state_dict(state, strict=False)
    prefix = CLASSIFIER_PREFIX[arch]
    missing = [key for key in result.missing_keys if not key.startswith(prefix)]
    unexpected = [key for key in result.unexpected_keys if not key.startswith(prefix)]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise HetcvError(f"pretrained: {origin} does not fit {arch}: {detail}")


def build_model(arch: str, n_outputs: int, pretrained: str) -> BackTopNet:
    """A back model with the requested weights and a freshly initialised head."""
    if arch not in ARCHITECTURES:
        raise HetcvError(f"model: unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    base = models.resnet18(weights=None) if arch == "resnet18" else models.vgg16(weights=None)
    if pretrained == "imagenet":
        load_backbone_weights(base, arch, load_imagenet_state_dict(arch), "ImageNet weights")
    elif pretrained != "none":
        state = load_checkpoint_state_dict(pretrained)
        load_backbone_weights(base, arch, state, f"checkpoint {pretrained}")
    if arch == "resnet18":
        base.fc = nn.Identity()
        backbone = base
    else:
        backbone = nn.Sequential(base.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return BackTopNet(backbone, make_head(arch, n_outputs))
