"""Back models by name: torchvision's and timm's own architectures, weights from their caches."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from torchvision import models

from hetcv.errors import HetcvError
from hetcv.models import build_model, torchvision_weights_file

# Each tested architecture: the image size it is tested at, its feature width, and the module
# of torchvision's own model whose input is the penultimate output (its classifier), named
# here by hand so that the test does not reuse hetcv's way of finding it.
ARCHITECTURES = {
    "resnet18": (32, 512, "fc"),
    "resnet50": (32, 2048, "fc"),
    "densenet121": (32, 1024, "classifier"),
    "efficientnet_b0": (32, 1280, "classifier.1"),
    "convnext_tiny": (32, 768, "classifier.2"),
    "vit_b_16": (224, 768, "heads.head"),
}


def penultimate(reference: torch.nn.Module, classifier: str, images: torch.Tensor):
    """What torchvision's model feeds its classifier, captured by a forward hook."""
    captured = {}
    module = reference.get_submodule(classifier)
    hook = module.register_forward_hook(lambda m, args, out: captured.update(x=args[0]))
    with torch.no_grad():
        reference(images)
    hook.remove()
    return captured["x"]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_back_model_features_are_torchvisions_penultimate_output(arch, tmp_path):
    size, width, classifier = ARCHITECTURES[arch]
    torch.manual_seed(0)
    reference = models.get_model(arch, weights=None).eval()
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(arch, 3, str(path), image_size=size).eval()
    images = torch.randn(2 if size < 224 else 1, 3, size, size)
    with torch.no_grad():
        outputs, features = model(images)
    assert model.width == width and features.shape == (len(images), width)
    assert outputs.shape == (len(images), 3)
    torch.testing.assert_close(features, penultimate(reference, classifier, images))


def test_vgg16_back_model_is_the_papers_pooled_convolutional_features(tmp_path):
    torch.manual_seed(0)
    reference = models.vgg16(weights=None).eval()
    path = tmp_path / "vgg16.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("vgg16", 2, str(path), image_size=64).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model(images)[1]
    torch.testing.assert_close(features, reference.features(images).mean(dim=(2, 3)))
    assert sum(isinstance(m, torch.nn.Linear) for m in model.backbone.modules()) == 0


@pytest.mark.parametrize(("arch", "n_linear"), [("resnet18", 1), ("vgg16", 4), ("densenet121", 1)])
def test_paper_heads_for_its_two_models_and_one_linear_layer_for_the_others(arch, n_linear):
    torch.manual_seed(0)
    model = build_model(arch, n_outputs=3, pretrained="none", image_size=32).eval()
    with torch.no_grad():
        outputs, features = model(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, model.width) and outputs.shape == (2, 3)
    assert sum(isinstance(m, torch.nn.Linear) for m in model.head.modules()) == n_linear


@pytest.mark.parametrize(
    "arch",
    [
        "alexnet",
        "googlenet",
        "inception_v3",
        "mnasnet0_5",
        "mobilenet_v3_small",
        "regnet_y_400mf",
        "shufflenet_v2_x0_5",
        "squeezenet1_1",
        "swin_t",
        "efficientnet_v2_s",
    ],
)
def test_every_family_gives_one_pooled_vector_without_any_imagenet_output(arch):
    """The other torchvision families: no layer with 1,000 outputs is left, no auxiliary head."""
    size = {"alexnet": 64, "inception_v3": 80}.get(arch, 32)
    model = build_model(arch, 2, "none", image_size=size).eval()
    for module in model.backbone.modules():
        assert getattr(module, "out_features", None) != 1000
        assert getattr(module, "out_channels", None) != 1000
    with torch.no_grad():
        outputs, features = model(torch.randn(2, 3, size, size))
    assert features.shape == (2, model.width) and outputs.shape == (2, 2)


def test_architecture_normalisation_comes_from_its_weights():
    # EfficientNetV2-L's weights were trained on images scaled to −1..1, not ImageNet's.
    assert build_model("resnet18", 2, "none", 32).mean == (0.485, 0.456, 0.406)
    model = build_model("efficientnet_v2_l", 2, "none", 32)
    assert model.mean == model.std == (0.5, 0.5, 0.5)


def test_checkpoint_file_weights_are_loaded(tmp_path):
    torch.manual_seed(1)
    reference = models.resnet18(weights=None)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    model = build_model("resnet18", 2, str(path), 32)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    layer, reference_layer = model.backbone.layer4[1], reference.layer4[1]
    assert torch.equal(layer.bn2.running_var, reference_layer.bn2.running_var)


def test_a_checkpoint_with_another_classifier_still_loads(tmp_path):
    # CheXNet-style: DenseNet121 fine-tuned to 14 findings; only its classifier differs.
    reference = models.densenet121(weights=None, num_classes=14)
    path = tmp_path / "chexnet.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("densenet121", 2, str(path), 32)
    assert torch.equal(model.backbone.features.conv0.weight, reference.features.conv0.weight)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(models.vgg16(weights=None).state_dict(), path)
    with pytest.raises(HetcvError, match=f"checkpoint {path} does not fit resnet18: missing"):
        build_model("resnet18", 2, str(path), 32)


def test_checkpoint_of_other_shapes_is_refused(tmp_path):
    path = tmp_path / "resnet34.pth"
    state = models.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a one-channel first layer
    torch.save(state, path)
    with pytest.raises(HetcvError, match="does not fit resnet18: .*conv1.weight"):
        build_model("resnet18", 2, str(path), 32)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(HetcvError, match="does not exist"):
        build_model("resnet18", 2, str(tmp_path / "absent.pth"), 32)


def test_an_unknown_architecture_is_one_line_naming_model():
    with pytest.raises(HetcvError, match=r"^model: 'resnet500' is not a torchvision") as caught:
        build_model("resnet500", 2, "none", 32)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("arch", "size", "expected"),
    [
        ("vit_b_16", 32, "image_size: vit_b_16 cannot take 32 x 32 images (it takes 224 px only"),
        ("vit_b_16", 256, "image_size: vit_b_16 cannot take 256 x 256 images (it takes 224 px"),
        ("inception_v3", 64, "image_size: inception_v3 cannot take 64 x 64 images (it takes at "),
        ("alexnet", 32, "image_size: alexnet cannot take 32 x 32 images (it takes at least 63 px"),
    ],
)
def test_an_image_size_the_model_cannot_take_is_one_line_naming_image_size(arch, size, expected):
    with pytest.raises(HetcvError) as caught:
        build_model(arch, 2, "none", size)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def prepare_torch_home(tmp_path, monkeypatch, arch):
    """A TORCH_HOME holding ``arch``'s DEFAULT weights file, of a freshly built model."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(2)
    reference = models.get_model(arch, weights=None)
    cache = torchvision_weights_file(models.get_model_weights(arch).DEFAULT)
    cache.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cache)
    return reference, cache


@pytest.mark.parametrize(
    ("arch", "file", "first"),
    [
        ("resnet18", "resnet18-f37072fd.pth", "conv1"),
        ("densenet121", "densenet121-a639ec97.pth", "features.conv0"),
    ],
)
def test_imagenet_weights_load_from_a_prepared_torch_home(tmp_path, monkeypatch, arch, file, first):
    reference, cache = prepare_torch_home(tmp_path, monkeypatch, arch)
    assert cache == tmp_path / "hub" / "checkpoints" / file
    model = build_model(arch, 2, "imagenet", 32)
    expected = reference.get_submodule(first).weight
    assert torch.equal(model.backbone.get_submodule(first).weight, expected)


def test_missing_imagenet_weights_are_one_line_naming_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    with pytest.raises(HetcvError) as caught:
        build_model("densenet121", 2, "imagenet", 32)
    message = str(caught.value)
    assert message.startswith("pretrained: imagenet: torchvision's DenseNet121_Weights")
    assert f"expected densenet121-a639ec97.pth in {folder}" in message
    assert "\n" not in message
    assert not folder.exists()  # nothing was downloaded, not even a partial file


def test_imagenet_weights_of_other_shapes_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = torchvision_weights_file(models.get_model_weights("resnet18").DEFAULT)
    cache.parent.mkdir(parents=True)
    torch.save(models.resnet34(weights=None).state_dict(), cache)
    with pytest.raises(HetcvError, match=f"pretrained: imagenet: {cache} does not load"):
        build_model("resnet18", 2, "imagenet", 32)


def test_building_a_model_never_opens_a_network_connection(tmp_path):
    """With no cache and the network cut off (a socket that refuses), still one clean line."""
    code = (
        "import socket\n"
        "def refuse(*args, **kwargs): raise AssertionError('network used')\n"
        "socket.socket.connect = refuse\n"
        "from hetcv.errors import HetcvError\n"
        "from hetcv.models import build_model\n"
        "try:\n"
        "    build_model('resnet18', 2, 'imagenet', 32)\n"
        "except HetcvError as error:\n"
        "    print(error)\n"
    )
    env = {**os.environ, "TORCH_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pretrained: imagenet: torchvision's ResNet18_Weights")


# ---------------------------------------------------------------------------------------------
# timm (the optional extra)

needs_timm = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason="the optional timm extra is not installed"
)


@needs_timm
def test_timm_model_gives_its_pooled_features(tmp_path):
    import timm

    torch.manual_seed(3)
    reference = timm.create_model("resnet18", num_classes=0).eval()
    path = tmp_path / "timm_resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict() | reference.state_dict(), path)
    model = build_model("timm:resnet18", 2, str(path), 32).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model(images)[1]
        expected = reference(images)
    assert model.width == 512
    torch.testing.assert_close(features, expected)


@needs_timm
def test_timm_normalisation_is_the_models_own():
    # timm's ViTs from Google's AugReg weights expect pixels scaled to −1..1.
    model = build_model("timm:vit_tiny_patch16_224", 2, "none", 224)
    assert model.mean == (0.5, 0.5, 0.5) and model.std == (0.5, 0.5, 0.5) and model.width == 192


def prepare_hf_cache(tmp_path, monkeypatch, repo, state):
    """A Hugging Face cache holding ``state`` as ``repo``'s model.safetensors."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    revision = "0" * 40
    folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    save_file(state, folder / "snapshots" / revision / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return folder


@needs_timm
def test_timm_imagenet_weights_load_from_a_prepared_hugging_face_cache(tmp_path, monkeypatch):
    import timm

    torch.manual_seed(4)
    reference = timm.create_model("resnet18")
    state = {key: value.contiguous() for key, value in reference.state_dict().items()}
    prepare_hf_cache(tmp_path, monkeypatch, "timm/resnet18.a1_in1k", state)
    model = build_model("timm:resnet18", 2, "imagenet", 32)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)


@needs_timm
def test_missing_timm_weights_are_one_line_naming_the_file_and_folder(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(HetcvError) as caught:
        build_model("timm:resnet18", 2, "imagenet", 32)
    message = str(caught.value)
    folder = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    assert message.startswith("pretrained: imagenet: timm's weights for resnet18 are not in")
    assert f"model.safetensors or pytorch_model.bin of timm/resnet18.a1_in1k under {folder}" in (
        message
    )
    assert "\n" not in message and not (tmp_path / "hub").exists()


@needs_timm
def test_an_unknown_timm_model_is_one_line_naming_model():
    with pytest.raises(HetcvError, match=r"^model: 'no_such_net' is not a timm model"):
        build_model("timm:no_such_net", 2, "none", 32)
