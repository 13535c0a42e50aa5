import pytest
import torch
from torchvision import models

from hetcv import models as hetcv_models
from hetcv.errors import HetcvError
from hetcv.models import back_model, build_model, imagenet_cache_path

TORCHVISION = {"resnet18": models.resnet18, "vgg16": models.vgg16}


@pytest.mark.parametrize("arch", ["resnet18", "vgg16"])
def test_back_models_are_torchvisions_architectures(arch, tmp_path):
    """Same parameter names and shapes, same outputs on the same weights, same init scale."""
    torch.manual_seed(0)
    reference = TORCHVISION[arch](weights=None).eval()
    prefix = hetcv_models.CLASSIFIER_PREFIX[arch]
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith(prefix)}
    ours = back_model(arch)
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    path = tmp_path / "torchvision.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(arch, 2, str(path)).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model(images)[1]
        if arch == "resnet18":
            reference.fc = torch.nn.Identity()
            expected_features = reference(images)
        else:
            expected_features = reference.features(images).mean(dim=(2, 3))
    torch.testing.assert_close(features, expected_features)
    first_conv = "conv1.weight" if arch == "resnet18" else "features.0.weight"
    std = float(ours.state_dict()[first_conv].std())
    assert std == pytest.approx(float(reference.state_dict()[first_conv].std()), rel=0.05)


@pytest.mark.parametrize(("arch", "n_linear"), [("resnet18", 1), ("vgg16", 4)])
def test_back_model_gives_512_features_and_head_the_outputs(arch, n_linear):
    torch.manual_seed(0)
    model = build_model(arch, n_outputs=3, pretrained="none").eval()
    with torch.no_grad():
        outputs, features = model(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 512)
    assert outputs.shape == (2, 3)
    assert sum(isinstance(m, torch.nn.Linear) for m in model.head.modules()) == n_linear
    assert not any(isinstance(m, torch.nn.Linear) for m in model.backbone.modules())


def test_checkpoint_file_weights_are_loaded(tmp_path):
    torch.manual_seed(1)
    reference = models.resnet18(weights=None)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    model = build_model("resnet18", 2, str(path))
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    layer, reference_layer = model.backbone.layer4[1], reference.layer4[1]
    assert torch.equal(layer.bn2.running_var, reference_layer.bn2.running_var)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(models.vgg16(weights=None).state_dict(), path)
    with pytest.raises(HetcvError, match=f"checkpoint {path} does not fit resnet18"):
        build_model("resnet18", 2, str(path))


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(HetcvError, match="does not exist"):
        build_model("resnet18", 2, str(tmp_path / "absent.pth"))


def test_imagenet_weights_load_from_a_prepared_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(2)
    reference = models.resnet18(weights=None)
    cache = imagenet_cache_path("resnet18")
    assert cache == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cache.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cache)
    model = build_model("resnet18", 2, "imagenet")
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)


def test_missing_imagenet_weights_fail_with_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # No network: point the download at a closed local port so it fails at once.
    monkeypatch.setitem(
        hetcv_models.IMAGENET_URLS, "resnet18", "http://127.0.0.1:9/resnet18-f37072fd.pth"
    )
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(HetcvError, match=f"place resnet18-f37072fd.pth .* at {expected}"):
        build_model("resnet18", 2, "imagenet")
    assert not expected.exists()
