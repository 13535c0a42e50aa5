import numpy as np
import pandas as pd
import pytest

from hetcv.digits import digits_source
from hetcv.errors import HetcvError
from hetcv.image_files import dataset_window, resized, to_uint8
from hetcv.prepare import run_prepare_job, validate_manifest


def test_udigits_keeps_a_quarter_of_the_eights_as_a_rare_subgroup():
    data = digits_source({"variant": "udigits"}, seed=0)
    manifest = data.manifest
    subgroup = manifest["subgroup"].to_numpy()
    assert len(manifest) == 1797 - 174 + 44
    assert (subgroup == 8).sum() == 44  # ceil(174 / 4)
    assert 0.02 < (subgroup == 8).mean() < 0.03
    assert np.array_equal(manifest["target"], (subgroup >= 5).astype(int))
    assert manifest["sample_id"].is_unique
    assert data.read_image(0).shape == (8, 8)


def test_udigits_subgroup_draw_is_seeded():
    first = digits_source({"variant": "udigits"}, seed=0).manifest
    again = digits_source({"variant": "udigits"}, seed=0).manifest
    other = digits_source({"variant": "udigits"}, seed=1).manifest
    assert first.equals(again)
    assert not first["sample_id"].equals(other["sample_id"])


def test_digitvalue_is_the_whole_set_with_the_digit_as_target():
    data = digits_source({"variant": "digitvalue"}, seed=0)
    assert len(data.manifest) == 1797
    assert data.manifest["target"].dtype == np.float64
    assert set(data.manifest["target"]) == set(range(10))
    assert max(data.read_image(i).max() for i in range(20)) == 255


@pytest.mark.parametrize("prevalence", [0.02, 0.05, 0.10, 0.19])
def test_rare_setting_plants_the_digit_at_its_share_of_the_class(prevalence):
    manifest = digits_source({"variant": "rare", "prevalence": prevalence}, seed=0).manifest
    positives = manifest[manifest["target"] == 1]
    eights = int(positives["planted"].sum())
    # 722 other images of digits 5, 6, 7, 9 share the class with the 8s.
    assert eights == round(prevalence * 722 / (1 - prevalence))
    assert positives["planted"].mean() == pytest.approx(prevalence, abs=0.002)
    assert manifest["planted"].equals(manifest["subgroup"] == 8)
    assert len(manifest) == 1797 - 174 + eights


def test_rare_setting_names_the_possible_prevalences():
    with pytest.raises(HetcvError, match=r"source.prevalence: 0.25 needs 241 images of digit 8"):
        digits_source({"variant": "rare", "prevalence": 0.25}, seed=0)


def test_noisy_setting_flips_the_labels_of_a_share_of_one_digit():
    manifest = digits_source({"variant": "noisy", "flip_rate": 0.3}, seed=0).manifest
    clean = (manifest["subgroup"] >= 5).astype(int)
    flipped = manifest["target"] != clean
    assert len(manifest) == 1797
    assert flipped.sum() == round(0.3 * 174)
    assert (manifest.loc[flipped, "subgroup"] == 8).all()
    assert manifest["planted"].sum() == 174


def test_balanced_setting_plants_nothing():
    manifest = digits_source({"variant": "balanced"}, seed=0).manifest
    assert len(manifest) == 1797
    assert not manifest["planted"].any()
    assert manifest["target"].mean() == pytest.approx(896 / 1797)


def test_prepare_streams_resized_uint8_grey_images(tmp_path):
    run_prepare_job(
        {},
        {"images": str(tmp_path / "images.npy"), "manifest": str(tmp_path / "m.parquet")},
        {
            "source": {"kind": "digits", "variant": "digitvalue"},
            "task": "regression",
            "image_size": 32,
            "intensity": {"window": "dataset", "percentiles": [0.5, 99.5]},
            "resize": "stretch",
            "seed": 0,
        },
    )
    images = np.load(tmp_path / "images.npy")
    assert images.shape == (1797, 32, 32) and images.dtype == np.uint8
    manifest = pd.read_parquet(tmp_path / "m.parquet")
    assert list(manifest.columns) == ["sample_id", "target"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npy", "m.parquet"]


def test_resize_keeps_a_constant_image_constant_and_converts_colour():
    grey = np.full((8, 8), 77, dtype=np.uint8)
    assert np.all(resized(grey, 32, colour=False) == 77)
    colour = resized(grey, 16, colour=True)
    assert colour.shape == (3, 16, 16) and np.all(colour == 77)
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert resized(red, 4, colour=False)[0, 0] == 76  # ITU-R 601 luma of pure red


def test_sixteen_bit_images_are_scaled_by_their_own_range():
    pixels = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    assert to_uint8(pixels).tolist() == [[0, 64], [128, 255]]
    assert to_uint8(np.full((2, 2), 7.0)).tolist() == [[0, 0], [0, 0]]


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
            "row 1 \\(sample 'b'\\) has a missing target",
        ),
        (
            pd.DataFrame({"sample_id": ["a", "b"], "target": ["1", "x"]}),
            "regression",
            "row 1 \\(sample 'b'\\) has a missing or non-numeric target 'x'",
        ),
        (
            pd.DataFrame({"sample_id": ["a", "b"], "target": [1, 1]}),
            "classification",
            "a classification set needs at least 2 classes, found 1",
        ),
    ],
)
def test_bad_manifests_are_rejected_with_the_row(manifest, task, message):
    with pytest.raises(HetcvError, match=f"labels.csv: {message}"):
        validate_manifest(manifest, task, where="labels.csv")


def test_text_class_labels_are_coded_in_sorted_order():
    manifest = pd.DataFrame({"sample_id": ["a", "b", "c"], "target": ["keep", "discard", "keep"]})
    coded = validate_manifest(manifest, "classification", where="t.csv")
    assert coded["target"].tolist() == [1, 0, 1]
    assert coded["label"].tolist() == ["keep", "discard", "keep"]


def test_a_sample_without_a_group_is_one_line():
    manifest = pd.DataFrame(
        {"sample_id": ["a", "b", "c"], "target": [0, 1, 0], "group": ["P1", None, "P2"]}
    )
    with pytest.raises(HetcvError, match=r"^t.csv: row 1 \(sample 'b'\) has no group$"):
        validate_manifest(manifest, "classification", where="t.csv")
    numbered = manifest.assign(group=pd.Series([1, 7, 2], dtype=object))
    checked = validate_manifest(numbered, "classification", where="t.csv")
    assert checked["group"].tolist() == ["1", "7", "2"]


def test_a_dataset_window_gives_the_same_tissue_the_same_grey_level():
    # Two 16-bit images share tissue at 1000 and 2000; the second also holds a bright marker.
    first = np.array([[1000, 2000], [1000, 2000]], dtype=np.uint16)
    second = np.array([[1000, 2000], [2000, 9000]], dtype=np.uint16)
    images = [first, second]
    window = dataset_window(lambda row: images[row], 2, [0, 100], seed=0)
    assert window == (1000.0, 9000.0)
    assert to_uint8(first, window)[0, 1] == to_uint8(second, window)[0, 1] == 32  # 1000/8000
    # Per image, the same 2000 would be white in one image and dark grey in the other.
    assert to_uint8(first)[0, 1] == 255 and to_uint8(second)[0, 1] == 32
    assert dataset_window(lambda row: np.zeros((2, 2), np.uint8), 3, [0, 100], seed=0) is None


def test_robust_percentiles_clip_outliers():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 1000, size=(50, 50)).astype(np.uint16) for _ in range(4)]
    images[0][0, 0] = 60000  # one hot pixel
    low, high = dataset_window(lambda row: images[row], 4, [0.5, 99.5], seed=1)
    assert 0 <= low < 20 and 980 < high <= 1000
    assert to_uint8(images[0], (low, high))[0, 0] == 255


def test_padding_keeps_the_aspect_ratio():
    wide = np.full((10, 40), 200, dtype=np.uint8)
    padded = resized(wide, 32, colour=False, resize="pad")
    rows = np.flatnonzero(padded.max(axis=1) > 0)
    # 40 × 10 scaled to 32 × 8, centred: rows 12 to 19 hold the image, the rest is black.
    assert rows.tolist() == list(range(12, 20)) and padded[15].min() == 200
    assert resized(wide, 32, colour=False).min() == 200  # stretched fills the square
