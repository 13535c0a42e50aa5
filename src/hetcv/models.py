"""Back models (feature extractors) and top models (heads), built and loaded by the libraries.

``model`` names an architecture:

- any torchvision classification architecture (``resnet18``, ``resnet50``, ``densenet121``,
  ``efficientnet_b0``, ``convnext_tiny``, ``vit_b_16`` …: ``torchvision.models.list_models(
  module=torchvision.models)``), built with ``torchvision.models.get_model``;
- ``timm:<name>`` for any timm model (the optional ``timm`` extra), built with
  ``timm.create_model(name, num_classes=0)``, which returns the pooled features.

The back model is the architecture without its classifier: torchvision's own model with its
final classification layer (the last layer with one output per ImageNet class: ``fc``,
``classifier``, ``heads.head`` …) replaced by the identity, and any auxiliary classifier
(GoogLeNet, Inception v3) removed, so that it outputs what the classifier would have read, at
the architecture's own width (512 for ResNet18, 1024 DenseNet121, 1280 EfficientNet-B0, 2048
ResNet50, 768 ConvNeXt-T and ViT-B/16 …). VGG and AlexNet follow the paper instead: their
convolutional ``features`` and a global average pool (512-d for VGG16), not the 4096-d output
of their fully connected classifier.

The top model is the paper's for its two architectures (``resnet18``: one linear layer, the
PSP-plate model; ``vgg16``: a 4-layer fully connected network, the bone-age model after
Calderon et al. 2018) and one linear layer for every other.

``pretrained`` is ``none`` (the library's random initialisation), ``imagenet`` (torchvision's
``DEFAULT`` weights of the architecture, or timm's ``pretrained=True``), or the path of a
checkpoint holding a state dict of the architecture (optionally under a ``state_dict`` key;
its classifier keys are ignored). ImageNet weights are read from the libraries' caches only:
torchvision's from ``$TORCH_HOME/hub/checkpoints/<file of the weights' URL>``, timm's from the
Hugging Face cache (``$HF_HOME/hub``, read with ``HF_HUB_OFFLINE=1``); nothing is ever
downloaded and nothing falls back to random weights: missing weights stop the job with one
line naming the file and the folder.

Images are normalised with the architecture's own mean and sd (its weights' transforms, or
timm's pretrained config): ImageNet's for almost all.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import VGG, AlexNet, get_model, get_model_weights, list_models

from hetcv.errors import HetcvError

DEFAULT_ARCHITECTURE = "resnet18"
PAPER_HEADS = ("resnet18", "vgg16")
TIMM_PREFIX = "timm:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CLASSES = 1000  # the width of the classification layer that get_model builds
# torchvision builders whose auxiliary classifiers are switched off (as torchvision does itself
# when its weights are asked for without them).
AUXILIARY = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}


@dataclass(frozen=True)
class BackModel:
    """A back model and what a caller needs to know about it.

    Attributes
    ----------
    module : nn.Module
        Images ``(B, 3, H, W)``, normalised with ``mean`` and ``std``, to ``(B, width)``.
    removed : tuple of str
        State-dict key prefixes of the parts that were removed (classifier, auxiliary heads):
        a checkpoint may hold them; they are ignored.
    mean, std : tuple of float
        The per-channel normalisation the architecture's weights expect (RGB, on 0–1 pixels).
    sizes : str
        What image sizes the architecture takes, as far as its library says (``"at least 75
        px"``, ``"224 px only"``), or ``""``; for error messages.
    """

    module: nn.Module
    removed: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sizes: str = ""


class BackTopNet(nn.Module):
    """A back model (``(B, 3, H, W)`` → ``(B, width)``) followed by a top model (→ outputs).

    Parameters
    ----------
    backbone : nn.Module
        Feature extractor, images to ``(B, width)``.
    head : nn.Module
        Top model, ``(B, width)`` to ``(B, n_outputs)``; see `make_head`.
    width : int
        The back model's feature width.
    mean, std : sequence of float
        The input normalisation the back model expects (per RGB channel, on 0–1 pixels).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        width: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.width = int(width)
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict and return the features the predictions were made from.

        Parameters
        ----------
        images : Tensor of shape (B, 3, H, W)
            Normalised images.

        Returns
        -------
        outputs : Tensor of shape (B, n_outputs)
            Logits (classification) or standardised predictions (regression).
        features : Tensor of shape (B, width)
            Back-model features, as clustered downstream.
        """
        features = self.backbone(images)
        return self.head(features), features


def parse_model_name(name: str) -> tuple[str, str]:
    """Which library builds ``name``, and its name there.

    Parameters
    ----------
    name : str
        ``datasets.<name>.model``: a torchvision architecture or ``timm:<name>``.

    Returns
    -------
    library : {"torchvision", "timm"}
    architecture : str
    """
    if name.startswith(TIMM_PREFIX):
        return "timm", name[len(TIMM_PREFIX) :]
    return "torchvision", name


def make_head(name: str, width: int, n_outputs: int) -> nn.Module:
    """A freshly initialised top model.

    Parameters
    ----------
    name : str
        The architecture: ``vgg16`` gets the paper's 4-layer fully connected network
        (width-256-128-64 with ReLU and dropout 0.5, the bone-age model), every other one
        linear layer (for ``resnet18``, the paper's PSP-plate model).
    width : int
        The back model's feature width.
    n_outputs : int
        Number of outputs (classes, or 1 for regression).

    Returns
    -------
    head : nn.Module
        Maps ``(B, width)`` to ``(B, n_outputs)``.
    """
    if name != "vgg16":
        return nn.Linear(width, n_outputs)
    return nn.Sequential(
        nn.Linear(width, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(256, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(128, 64),
        nn.ReLU(inplace=True),
        nn.Linear(64, n_outputs),
    )


def build_model(name: str, n_outputs: int, pretrained: str, image_size: int) -> BackTopNet:
    """A back model with the requested weights and a freshly initialised head.

    Parameters
    ----------
    name : str
        A torchvision classification architecture or ``timm:<name>`` (module doc).
    n_outputs : int
        Outputs of the head.
    pretrained : str
        ``"none"``, ``"imagenet"`` or the path of a checkpoint of the architecture.
    image_size : int
        The side of the (square) images the model will see; checked against what the
        architecture can take.

    Returns
    -------
    model : BackTopNet
        On the CPU, in train mode.

    Raises
    ------
    HetcvError
        With one line naming ``model``, ``pretrained`` or ``image_size``: an unknown
        architecture, timm missing, weights missing from the cache or not fitting, or images
        the architecture cannot take.
    """
    library, architecture = parse_model_name(name)
    build = build_timm_back_model if library == "timm" else build_torchvision_back_model
    back = build(architecture, pretrained)
    if pretrained not in ("none", "imagenet"):
        state = load_checkpoint_state_dict(pretrained)
        load_backbone_weights(back, state, f"checkpoint {pretrained}", name)
    width = feature_width(back.module, image_size, name, back.sizes)
    return BackTopNet(back.module, make_head(name, width, n_outputs), width, back.mean, back.std)


# ---------------------------------------------------------------------------------------------
# torchvision


def build_torchvision_back_model(architecture: str, pretrained: str) -> BackModel:
    """torchvision's ``architecture`` without its classifier.

    Parameters
    ----------
    architecture : str
        A name from ``torchvision.models.list_models(module=torchvision.models)``.
    pretrained : str
        ``"imagenet"`` loads the architecture's ``DEFAULT`` weights from torchvision's cache
        (:func:`torchvision_weights_file`); anything else builds it randomly initialised.

    Returns
    -------
    BackModel

    Raises
    ------
    HetcvError
        For an unknown architecture, or ImageNet weights that are not cached or do not load.
    """
    known = list_models(module=torchvision.models)
    if architecture not in known:
        raise HetcvError(
            f"model: {architecture!r} is not a torchvision classification architecture "
            f"(e.g. resnet18, resnet50, densenet121, efficientnet_b0, convnext_tiny, vit_b_16; "
            f"all {len(known)}: torchvision.models.list_models(module=torchvision.models)); "
            "a timm model is named timm:<name>"
        )
    default = get_model_weights(architecture).DEFAULT
    transforms = default.transforms()
    if pretrained == "imagenet":
        path = torchvision_weights_file(default)
        if not path.is_file():
            raise HetcvError(
                f"pretrained: imagenet: torchvision's {default} weights are not in its cache: "
                f"expected {path.name} in {path.parent} (TORCH_HOME="
                f"{os.environ.get('TORCH_HOME', '<unset>')}); copy it there from {default.url} "
                "(hetcv never downloads)"
            )
        try:
            model = get_model(architecture, weights=default)
        except RuntimeError as error:  # a cached file of other shapes
            first = str(error).strip().splitlines()[0]
            raise HetcvError(f"pretrained: imagenet: {path} does not load: {first}") from error
    else:
        extra = {"aux_logits": False, "init_weights": True} if architecture in AUXILIARY else {}
        model = get_model(architecture, weights=None, **extra)
    fixed = getattr(model, "image_size", None)  # torchvision's vision transformers
    smallest = max(default.meta.get("min_size", (1, 1)))
    sizes = f"at least {smallest} px" if smallest > 1 else ""
    sizes = f"{fixed} px only" if isinstance(fixed, int) else sizes
    module, removed = strip_classifier(model, architecture)
    return BackModel(module, removed, tuple(transforms.mean), tuple(transforms.std), sizes)


def torchvision_weights_file(weights) -> Path:
    """Where torchvision reads (and would download) ``weights``.

    Parameters
    ----------
    weights : torchvision.models.WeightsEnum
        E.g. ``get_model_weights("densenet121").DEFAULT``.

    Returns
    -------
    Path
        ``<torch hub dir>/checkpoints/<file name of the weights' URL>``, the hub dir being
        ``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``).
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def strip_classifier(model: nn.Module, architecture: str) -> tuple[nn.Module, tuple[str, ...]]:
    """torchvision's model without its classifier (and auxiliary classifiers).

    Parameters
    ----------
    model : nn.Module
        As ``torchvision.models.get_model`` built it, with ``IMAGENET_CLASSES`` outputs.
    architecture : str
        Its name.

    Returns
    -------
    module : nn.Module
        VGG and AlexNet: ``features`` followed by a global average pool and a flatten, in a
        container whose keys keep torchvision's names (``features.0.weight`` …). Any other:
        the model itself, its last layer with ``IMAGENET_CLASSES`` outputs replaced by
        ``nn.Identity``.
    removed : tuple of str
        The state-dict prefixes of what was removed.

    Raises
    ------
    HetcvError
        When no classification layer can be found (an architecture of unforeseen shape).
    """
    if isinstance(model, VGG | AlexNet):
        pooled = OrderedDict(
            features=model.features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten()
        )
        return nn.Sequential(pooled), ("classifier.",)
    removed = []
    for attribute in AUXILIARY.get(architecture, ()):
        model.aux_logits = False
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, None)
            removed.append(f"{attribute}.")
    classifier = None
    for module_name, module in model.named_modules():
        if (isinstance(module, nn.Linear) and module.out_features == IMAGENET_CLASSES) or (
            isinstance(module, nn.Conv2d) and module.out_channels == IMAGENET_CLASSES
        ):
            classifier = module_name
    if classifier is None:
        raise HetcvError(f"model: cannot find the classification layer of {architecture}")
    parent, _, child = classifier.rpartition(".")
    setattr(model.get_submodule(parent), child, nn.Identity())
    return model, (f"{classifier}.", *removed)


# ---------------------------------------------------------------------------------------------
# timm


def build_timm_back_model(architecture: str, pretrained: str) -> BackModel:
    """timm's ``architecture`` with ``num_classes=0``: its pooled features.

    Parameters
    ----------
    architecture : str
        A timm model name (``timm.list_models()``), optionally with a weights tag
        (``convnext_tiny.fb_in1k``).
    pretrained : str
        ``"imagenet"``: timm's ``pretrained=True``, from the Hugging Face cache only
        (:func:`timm_weights_file`); anything else: random initialisation.

    Returns
    -------
    BackModel

    Raises
    ------
    HetcvError
        Without timm installed, for an unknown model, or for weights missing from the cache.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: never download
    try:
        import timm
    except ImportError as error:
        raise HetcvError(
            f"model: timm:{architecture} needs timm; install it with pip install 'hetcv[timm]'"
        ) from error
    if not timm.is_model(architecture.split(".")[0]):
        raise HetcvError(
            f"model: {architecture!r} is not a timm model (timm.list_models() lists them)"
        )
    options = {}
    if pretrained == "imagenet":
        options = {
            "pretrained": True,
            "pretrained_cfg_overlay": {"file": timm_weights_file(architecture)},
        }
    model = timm.create_model(architecture, num_classes=0, **options)
    config = model.pretrained_cfg
    classifier = config.get("classifier") or ()
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    mean, std = config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)
    size = config.get("input_size", (3, 224, 224))[-1]
    sizes = f"{size} px only" if config.get("fixed_input_size") else ""
    removed = tuple(f"{name}." for name in names)
    return BackModel(model, removed, tuple(mean), tuple(std), sizes)


def timm_weights_file(architecture: str) -> str:
    """The cached file of timm's pretrained weights of ``architecture``.

    Parameters
    ----------
    architecture : str
        A timm model name, optionally tagged.

    Returns
    -------
    str
        Its path in the Hugging Face cache (``huggingface_hub.try_to_load_from_cache``:
        ``$HF_HOME/hub/models--<org>--<repo>/snapshots/<revision>/<file>``), or, for weights
        published only by URL, in torch's hub cache.

    Raises
    ------
    HetcvError
        When the model has no pretrained weights or they are not cached.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(architecture)
    if config is None or not (config.hf_hub_id or config.url):
        raise HetcvError(f"pretrained: imagenet: timm:{architecture} has no pretrained weights")
    if config.hf_hub_id:
        repo = config.hf_hub_id
        files = [config.hf_hub_filename] if config.hf_hub_filename else []
        files = files or ["model.safetensors", "pytorch_model.bin"]
        for filename in files:
            path = try_to_load_from_cache(repo, filename)
            if isinstance(path, str):
                return path
        folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
        raise HetcvError(
            f"pretrained: imagenet: timm's weights for {architecture} are not in the Hugging "
            f"Face cache: expected {' or '.join(files)} of {repo} under {folder} (HF_HOME="
            f"{os.environ.get('HF_HOME', '<unset>')}; e.g. huggingface-cli download {repo} "
            "on a machine with internet; hetcv never downloads)"
        )
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(config.url).path).name
    if not path.is_file():
        raise HetcvError(
            f"pretrained: imagenet: timm's weights for {architecture} are not cached: expected "
            f"{path.name} in {path.parent}; copy it there from {config.url} (hetcv never "
            "downloads)"
        )
    return str(path)


# ---------------------------------------------------------------------------------------------
# Checkpoints and input sizes


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


def load_backbone_weights(back: BackModel, state: dict, origin: str, name: str) -> None:
    """Load ``state`` into a back model; only the removed parts' keys may be extra.

    Parameters
    ----------
    back : BackModel
        Updated in place.
    state : dict of str to Tensor
        Weights named as the library names the full model's.
    origin : str
        Where ``state`` came from, for the error message.
    name : str
        The architecture (``model``), for the error message.

    Raises
    ------
    HetcvError
        If any key of the back model is missing from ``state``, any key of ``state`` belongs
        to neither the back model nor a removed part, or a shape differs.
    """
    kept = {key: value for key, value in state.items() if not key.startswith(back.removed)}
    try:
        result = back.module.load_state_dict(kept, strict=False)
    except RuntimeError as error:  # shapes that differ
        detail = str(error).strip().splitlines()[-1].strip()
        raise HetcvError(f"pretrained: {origin} does not fit {name}: {detail}") from error
    if result.missing_keys or result.unexpected_keys:
        detail = (
            f"missing {result.missing_keys[:3]}"
            if result.missing_keys
            else f"unexpected {result.unexpected_keys[:3]}"
        )
        raise HetcvError(f"pretrained: {origin} does not fit {name}: {detail}")


def feature_width(backbone: nn.Module, image_size: int, name: str, sizes: str = "") -> int:
    """The back model's output width on ``image_size`` images, checking that it takes them.

    The forward pass runs on the ``meta`` device (shapes only: no computation, no memory), with
    the module's own parameters and buffers replaced by meta tensors of their shapes.

    Parameters
    ----------
    backbone : nn.Module
        A back model; left unchanged.
    image_size : int
        The side of the square 3-channel images.
    name : str
        The architecture, for the error message.
    sizes : str
        What sizes it takes (:class:`BackModel`), for the error message.

    Returns
    -------
    int
        ``width`` of its ``(1, width)`` output.

    Raises
    ------
    HetcvError
        Naming ``image_size`` when the architecture cannot take such images (ViT-B/16 takes
        224 px only, Inception v3 at least 75 px …), or when its output is not one vector
        per image.
    """
    tensors = {**dict(backbone.named_parameters()), **dict(backbone.named_buffers())}
    meta = {key: torch.empty_like(value, device="meta") for key, value in tensors.items()}
    images = torch.empty(1, 3, image_size, image_size, device="meta")
    training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            output = torch.func.functional_call(backbone, meta, (images,))
    except (RuntimeError, AssertionError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        takes = f"it takes {sizes}" if sizes else "choose another image_size"
        raise HetcvError(
            f"image_size: {name} cannot take {image_size} x {image_size} images ({takes}; {first})"
        ) from error
    finally:
        backbone.train(training)
    if output.ndim != 2:
        raise HetcvError(
            f"model: {name}'s back model gives features of shape {tuple(output.shape)}, "
            "not one vector per image"
        )
    return int(output.shape[1])
