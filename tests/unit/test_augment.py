"""Batched, per-image augmentation against torchvision's own per-image operations."""

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tf

from hetcv.augment import BatchAugment, describe

OFF = {"flip": "none", "rotation": 0, "crop": 1.0, "brightness": 0, "contrast": 0}
ON = {"flip": "both", "rotation": 10, "crop": 0.9, "brightness": 0.1, "contrast": 0.1}
CPU = torch.device("cpu")


def images(n=16, channels=1, size=24, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_everything_off_leaves_the_images_alone():
    batch = images()
    assert torch.equal(BatchAugment(OFF, CPU, 0)(batch), batch)


def test_the_same_seed_gives_the_same_augmentation_and_another_seed_another():
    batch = images(channels=3)
    first, again = BatchAugment(ON, CPU, 7), BatchAugment(ON, CPU, 7)
    assert torch.equal(first(batch), again(batch))
    assert torch.equal(first(batch), again(batch))  # and the streams continue alike
    assert not torch.equal(BatchAugment(ON, CPU, 7)(batch), BatchAugment(ON, CPU, 8)(batch))


def test_a_resumed_stream_continues_where_it_was_saved():
    batch = images()
    straight = BatchAugment(ON, CPU, 3)
    straight(batch)
    state = straight.state_dict()
    resumed = BatchAugment(ON, CPU, 99)
    resumed.load_state_dict(state)
    assert torch.equal(resumed(batch), straight(batch))


def test_flips_are_drawn_per_image():
    batch = images(n=64)
    out = BatchAugment({**OFF, "flip": "horizontal"}, CPU, 0)(batch)
    mirrored = torch.tensor(
        [torch.equal(o, tf.horizontal_flip(b)) for o, b in zip(out, batch, strict=True)]
    )
    unchanged = torch.tensor([torch.equal(o, b) for o, b in zip(out, batch, strict=True)])
    assert (mirrored ^ unchanged).all()  # each image either mirrored or left alone
    assert 16 < int(mirrored.sum()) < 48  # about half of them, not all or none


def test_vertical_flips_only_when_asked():
    batch = images(n=32)
    out = BatchAugment({**OFF, "flip": "vertical"}, CPU, 1)(batch)
    for o, b in zip(out, batch, strict=True):
        assert torch.equal(o, b) or torch.equal(o, tf.vertical_flip(b))
    assert not torch.equal(out, batch)


def test_rotation_is_torchvisions_rotate_of_each_image():
    batch = images(n=4, size=33)
    augment = BatchAugment({**OFF, "rotation": 30}, CPU, 0)
    draws = torch.tensor([[0.9, 0.5, 0.5, 0.5], [0.1, 0.5, 0.5, 0.5]] * 2)
    out = augment.rotate_and_crop(batch, draws)
    for image, angle, rotated in zip(batch, (24.0, -24.0, 24.0, -24.0), out, strict=True):
        expected = tf.rotate(image, angle, interpolation=InterpolationMode.BILINEAR)
        # Equal inside; at the border torchvision's grid and this one round differently.
        torch.testing.assert_close(rotated[:, 4:-4, 4:-4], expected[:, 4:-4, 4:-4])


def test_a_crop_is_torchvisions_resized_crop_of_that_square():
    batch = images(n=2, size=32)
    augment = BatchAugment({**OFF, "crop": 0.5}, CPU, 0)
    # Side 0.5 of the image (16 px); centred, then in the top right corner.
    out = augment.rotate_and_crop(batch, torch.tensor([[0.5, 0.0, 0.5, 0.5], [0.5, 0.0, 1, 0]]))
    for image, (top, left), cropped in zip(batch, ((8, 8), (0, 16)), out, strict=True):
        expected = tf.resized_crop(
            image, top, left, 16, 16, [32, 32], InterpolationMode.BILINEAR, antialias=False
        )
        # Inside the crop; at its edge torchvision clamps to the crop where this reads on.
        torch.testing.assert_close(cropped[:, 2:-2, 2:-2], expected[:, 2:-2, 2:-2])


def test_intensity_jitter_scales_brightness_and_contrast_within_their_ranges():
    batch = images(n=64, channels=3) * 0.5 + 0.25  # away from 0 and 1: nothing is clipped
    augment = BatchAugment({**OFF, "brightness": 0.2, "contrast": 0.3}, CPU, 0)
    draws = torch.rand(64, 2, generator=torch.Generator().manual_seed(1))
    out = augment.jitter(batch, draws)
    brightness = 1 + 0.2 * (2 * draws[:, 0] - 1)
    contrast = 1 + 0.3 * (2 * draws[:, 1] - 1)
    for image, b, c, result in zip(batch, brightness, contrast, out, strict=True):
        expected = tf.adjust_contrast(tf.adjust_brightness(image, float(b)), float(c))
        torch.testing.assert_close(result, expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_augmented_pixels_stay_in_0_to_1(channels):
    out = BatchAugment({**ON, "brightness": 0.5, "contrast": 0.5}, CPU, 0)(images(64, channels))
    assert out.shape == (64, channels, 24, 24)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_history_describes_the_settings_on_one_line():
    assert describe(None) == describe(False) == "none"
    assert describe(ON) == "brightness 0.1, contrast 0.1, crop 0.9, flip both, rotation 10"
