import numpy as np
import pandas as pd
import pytest

from hetcv.data import load_digits_source, prepare_dataset, resize_grey, validate_manifest
from hetcv.errors import HetcvError


def test_udigits_keeps_a_quarter_of_the_eights_as_a_rare_subgroup():
    images, manifest = load_digits_source("udigits", seed=0)
    subgroup = manifest["subgroup"].to_numpy()
    assert len(manifest) == 1797 - 174 + 44 == len(images)
    assert (subgroup == 8).sum() == 44  # ceil(174 / 4)
    assert 0.02 < (subgroup == 8).mean() < 0.03
    assert np.array_equal(manifest["target"], (subgroup >= 5).astype(int))
    assert manifest["sample_id"].is_unique


def test_udigits_subgroup_draw_is_seeded():
    _, first = load_digits_source("udigits", seed=0)
    _, again = load_digits_source("udigits", seed=0)
    _, other = load_digits_source("udigits", seed=1)
    assert first.equals(again)
    assert not first["sample_id"].equals(other["sample_id"])


def test_digitvalue_is_the_whole_set_with_the_digit_as_target():
    images, manifest = load_digits_source("digitvalue", seed=0)
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.max() == 255
    assert manifest["target"].dtype == np.float64
    assert set(manifest["target"]) == set(range(10))


def test_prepare_resizes_once_to_uint8_grey():
    images, manifest = prepare_dataset(
        {"kind": "digits", "variant": "digitvalue"}, "regression", 32, seed=0
    )
    assert images.shape == (1797, 32, 32) and images.dtype == np.uint8
    assert list(manifest.columns) == ["sample_id", "target"]


def test_resize_keeps_a_constant_image_constant():
    image = np.full((1, 8, 8), 77, dtype=np.uint8)
    assert np.all(resize_grey(image, 32) == 77)


@pytest.mark.parametrize(
    ("manifest", "task", "message"),
    [
        (
            pd.DataFrame({"sample_id": ["a", "a"], "target": [0, 1]}),
            "classification",
            "duplicate sample id 'a'",
        ),
        (
            pd.DataFrame({"sample_id": ["a", "b"], "target": [0.0, np.nan]}),
            "regression",
            "row 1 \\(sample 'b'\\) has a missing or non-numeric target",
        ),
        (
            pd.DataFrame({"sample_id": ["a", "b"], "target": ["1", "x"]}),
            "regression",
            "row 1 \\(sample 'b'\\) has a missing or non-numeric target 'x'",
        ),
        (
            pd.DataFrame({"sample_id": ["a", "b"], "target": [1, 1]}),
            "classification",
            "a classification set needs at least 2 classes",
        ),
    ],
)
def test_bad_manifests_are_rejected_with_the_row(manifest, task, message):
    with pytest.raises(HetcvError, match=f"labels.csv: {message}"):
        validate_manifest(manifest, task, where="labels.csv")
