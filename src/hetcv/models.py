"""Back models (feature extractors, 512-d) and top models (heads), and their weights.

- ``resnet18``: ResNet18 up to the global average pool (512-d); head: one linear layer (the
  paper's PSP-plate model).
- ``vgg16``: VGG16 ``features`` → global average pool (512-d); head: a 4-layer fully
  connected network (the paper's bone-age model, after Calderon et al. 2018).

The back models are torchvision's architectures, written here with torchvision's parameter
names and initialisation (``tests/unit/test_models.py`` checks both against torchvision):
importing torchvision costs 3.4 s per train job (it loads ``torch._dynamo``), a tenth of a
small fold's training.

``pretrained`` is ``none`` (random initialisation), ``imagenet`` (torchvision's
IMAGENET1K_V1 weights, read from ``$TORCH_HOME/hub/checkpoints`` and downloaded there when
missing), or the path of a checkpoint holding a torchvision state dict of the same
architecture (optionally under a ``state_dict`` key). Nothing ever falls back silently to
random weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from hetcv.columns import FEATURE_DIM
from hetcv.errors import HetcvError

ARCHITECTURES = ("resnet18", "vgg16")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Keys of torchvision's own classifier, which a checkpoint may carry and hetcv replaces.
CLASSIFIER_PREFIX = {"resnet18": "fc.", "vgg16": "classifier."}
IMAGENET_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
VGG16_LAYERS = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def init_conv_and_norm(model: nn.Module) -> None:
    """Apply torchvision's initialisation: He (fan-out) convs, unit-scale norms, zero biases.

    Parameters
    ----------
    model : nn.Module
        Initialised in place: every ``Conv2d`` and ``BatchNorm2d`` among its modules.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block (3×3 convolutions with batch norm).

    Parameters
    ----------
    inplanes : int
        Input channels.
    planes : int
        Output channels of both convolutions.
    stride : int
        Stride of the first convolution; a 1×1 projection shortcut is added when the stride
        or the channel count changes.
    """

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block and add the (projected) input.

        Parameters
        ----------
        x : Tensor of shape (B, inplanes, H, W)

        Returns
        -------
        out : Tensor of shape (B, planes, ceil(H / stride), ceil(W / stride))
        """
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18Back(nn.Module):
    """ResNet18 (He et al. 2016) without its classifier: ``(B, 3, H, W)`` → ``(B, 512)``.

    Takes no parameters; module names (``conv1``, ``layer1`` … ``layer4``) follow
    torchvision so its state dicts load.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, FEATURE_DIM)
        for index, (inplanes, planes) in enumerate(zip((64, *widths[:-1]), widths, strict=True)):
            stride = 1 if index == 0 else 2
            layer = nn.Sequential(
                BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes, 1)
            )
            setattr(self, f"layer{index + 1}", layer)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        init_conv_and_norm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Extract globally average-pooled features.

        Parameters
        ----------
        x : Tensor of shape (B, 3, H, W)
            Normalised images.

        Returns
        -------
        features : Tensor of shape (B, 512)
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def vgg16_features() -> nn.Sequential:
    """VGG16's convolutional part (configuration D, Simonyan & Zisserman 2015).

    Returns
    -------
    features : nn.Sequential
        Maps ``(B, 3, H, W)`` to ``(B, 512, H // 32, W // 32)``; initialised as torchvision.
    """
    layers: list[nn.Module] = []
    channels = 3
    for width in VGG16_LAYERS:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    features = nn.Sequential(*layers)
    init_conv_and_norm(features)
    return features


def back_model(arch: str) -> nn.Module:
    """The back model with torchvision's parameter names, so torchvision state dicts load.

    Parameters
    ----------
    arch : {"resnet18", "vgg16"}
        Architecture; anything but ``"resnet18"`` gives VGG16.

    Returns
    -------
    model : nn.Module
        `ResNet18Back`, or for VGG16 a bare container whose ``features`` is
        `vgg16_features` (no pooling or forward: `build_model` adds them).
    """
    if arch == "resnet18":
        return ResNet18Back()
    vgg = nn.Module()
    vgg.features = vgg16_features()
    return vgg


class BackTopNet(nn.Module):
    """A back model (``(B, 3, H, W)`` → ``(B, 512)``) followed by a top model (→ outputs).

    Parameters
    ----------
    backbone : nn.Module
        Feature extractor, images to ``(B, 512)``.
    head : nn.Module
        Top model, ``(B, 512)`` to ``(B, n_outputs)``; see `make_head`.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict and return the features the predictions were made from.

        Parameters
        ----------
        images : Tensor of shape (B, 3, H, W)

        Returns
        -------
        outputs : Tensor of shape (B, n_outputs)
            Logits (classification) or standardised predictions (regression).
        features : Tensor of shape (B, 512)
            Back-model features, as clustered downstream.
        """
        features = self.backbone(images)
        return self.head(features), features


def make_head(arch: str, n_outputs: int) -> nn.Module:
    """A freshly initialised top model for ``arch``.

    Parameters
    ----------
    arch : {"resnet18", "vgg16"}
        ``"resnet18"``: one linear layer (PSP-plate model); otherwise the 4-layer fully
        connected network 512-256-128-64 with ReLU and dropout 0.5 (bone-age model).
    n_outputs : int
        Number of outputs (classes, or 1 for regression).

    Returns
    -------
    head : nn.Module
        Maps ``(B, 512)`` to ``(B, n_outputs)``.
    """
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


def imagenet_cache_path(arch: str) -> Path:
    """Where torchvision (and hetcv) look for, and download, the ImageNet weights of ``arch``.

    Parameters
    ----------
    arch : {"resnet18", "vgg16"}
        Architecture.

    Returns
    -------
    path : Path
        ``<torch hub dir>/checkpoints/<file name of the download URL>``.
    """
    filename = Path(urlparse(IMAGENET_URLS[arch]).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights from the torch hub cache, downloading them when they are missing.

    Parameters
    ----------
    arch : {"resnet18", "vgg16"}
        Architecture whose IMAGENET1K_V1 weights to load.

    Returns
    -------
    state : dict of str to Tensor
        torchvision's state dict, on the CPU, classifier included.

    Raises
    ------
    HetcvError
        If the weights are not cached and cannot be downloaded.
    """
    url = IMAGENET_URLS[arch]
    path = imagenet_cache_path(arch)
    try:
        return torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
    except (OSError, RuntimeError) as error:
        raise HetcvError(
            f"pretrained: imagenet: weights for {arch} are not cached and could not be "
            f"downloaded ({type(error).__name__}); place {path.name} from {url} at "
            f"{path} (TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')})"
        ) from error


def load_checkpoint_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a checkpoint file (tensors only, ``weights_only=True``).

    Parameters
    ----------
    path : str or os.PathLike
        A ``torch.save`` file holding a state dict, bare or under a ``state_dict`` key.

    Returns
    -------
    state : dict of str to Tensor
        Loaded on the CPU.

    Raises
    ------
    HetcvError
        If the file is missing, unreadable, or holds no state dict.
    """
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
    """Load a torchvision ``state`` into a back model; only its classifier may differ.

    Parameters
    ----------
    base : nn.Module
        A model from `back_model`, updated in place.
    arch : {"resnet18", "vgg16"}
        Its architecture, which names the classifier keys to ignore.
    state : dict of str to Tensor
        torchvision-named weights.
    origin : str
        Where ``state`` came from, for the error message.

    Raises
    ------
    HetcvError
        If any non-classifier key is missing from or unexpected in ``state``.
    """
    result = base.load_state_dict(state, strict=False)
    prefix = CLASSIFIER_PREFIX[arch]
    missing = [key for key in result.missing_keys if not key.startswith(prefix)]
    unexpected = [key for key in result.unexpected_keys if not key.startswith(prefix)]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise HetcvError(f"pretrained: {origin} does not fit {arch}: {detail}")


def build_model(arch: str, n_outputs: int, pretrained: str) -> BackTopNet:
    """A back model with the requested weights and a freshly initialised head.

    Parameters
    ----------
    arch : {"resnet18", "vgg16"}
        Architecture; VGG16 gets a global average pool so both give 512-d features.
    n_outputs : int
        Outputs of the head.
    pretrained : str
        ``"none"``, ``"imagenet"`` or the path of a torchvision checkpoint (module doc).

    Returns
    -------
    model : BackTopNet

    Raises
    ------
    HetcvError
        If ``arch`` is unknown or the requested weights cannot be loaded or do not fit.
    """
    if arch not in ARCHITECTURES:
        raise HetcvError(f"model: unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    base = back_model(arch)
    if pretrained == "imagenet":
        load_backbone_weights(base, arch, load_imagenet_state_dict(arch), "ImageNet weights")
    elif pretrained != "none":
        state = load_checkpoint_state_dict(pretrained)
        load_backbone_weights(base, arch, state, f"checkpoint {pretrained}")
    if arch == "resnet18":
        backbone = base
    else:
        backbone = nn.Sequential(base.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return BackTopNet(backbone, make_head(arch, n_outputs))
