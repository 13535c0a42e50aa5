import numpy as np
import pytest

from hetcv.errors import HetcvError
from hetcv.split import (
    inner_validation_split,
    make_split,
    nested_order,
    resolve_sample_sizes,
    strata,
)


def imbalanced_labels(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice([0, 1, 2], size=n, p=[0.6, 0.3, 0.1])


def test_every_prefix_of_the_nested_order_is_stratified():
    labels = imbalanced_labels()
    order = nested_order(labels, seed=3)
    assert sorted(order) == list(range(len(labels)))
    for n in (10, 50, 100, 333, 1000):
        counts = np.bincount(labels[order[:n]], minlength=3)
        expected = n * np.bincount(labels, minlength=3) / len(labels)
        assert np.all(np.abs(counts - expected) < 2), (n, counts, expected)


def test_smaller_samples_lie_inside_larger_ones():
    labels = imbalanced_labels()
    samples = {
        n: set(make_split(labels, "classification", n, 4, order_seed=7, fold_seed=n)["index"])
        for n in (100, 300, 500, 1000)
    }
    assert samples[100] < samples[300] < samples[500] < samples[1000]


def test_folds_are_stratified_and_partition_the_sample():
    labels = imbalanced_labels()
    split = make_split(labels, "classification", 400, 4, order_seed=1, fold_seed=2)
    assert len(split) == 400 and split["index"].is_unique
    assert sorted(split["fold"].unique()) == [0, 1, 2, 3]
    sample_labels = labels[split["index"]]
    for fold in range(4):
        in_fold = sample_labels[split["fold"].to_numpy() == fold]
        assert len(in_fold) == 100
        counts = np.bincount(in_fold, minlength=3)
        expected = np.bincount(sample_labels, minlength=3) / 4
        assert np.all(np.abs(counts - expected) <= 1)


def test_regression_strata_are_quantile_bins():
    target = np.arange(100, dtype=float)
    bins = strata(target, "regression", bins=4)
    assert np.array_equal(np.bincount(bins), [25, 25, 25, 25])
    assert bins[0] == 0 and bins[-1] == 3


def test_regression_split_keeps_the_target_distribution():
    target = np.random.default_rng(0).gamma(2.0, 30.0, size=2000)
    split = make_split(target, "regression", 200, 4, order_seed=0, fold_seed=0)
    sample = target[split["index"]]
    assert abs(np.median(sample) - np.median(target)) < 0.1 * np.median(target)


def test_split_is_deterministic_and_depends_on_the_seed():
    labels = imbalanced_labels()
    first = make_split(labels, "classification", 300, 4, order_seed=5, fold_seed=6)
    again = make_split(labels, "classification", 300, 4, order_seed=5, fold_seed=6)
    other = make_split(labels, "classification", 300, 4, order_seed=8, fold_seed=6)
    assert first.equals(again)
    assert not first.equals(other)


def test_named_sample_sizes_resolve_against_the_dataset():
    assert resolve_sample_sizes([100, "half", "all"], 1667, 4, "k") == [100, 833, 1667]


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([5000], "datasets.x.sample_sizes: 5000 is larger than the dataset (1667 samples)"),
        ([6], "datasets.x.sample_sizes: 6 is too small for 4 folds"),
        ([1667, "all"], "resolve to repeated sizes"),
    ],
)
def test_bad_sample_sizes_name_the_key(sizes, message):
    with pytest.raises(HetcvError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_sample_sizes(sizes, 1667, 4, "datasets.x.sample_sizes")


def patients(n_patients=60, seed=0):
    """Images per patient from 1 to 12; a patient's images share the label 70 % of the time."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 13, size=n_patients)
    groups = np.repeat([f"P{i:03d}" for i in range(n_patients)], sizes)
    base = rng.integers(0, 2, size=n_patients)
    labels = np.where(
        rng.random(len(groups)) < 0.7, np.repeat(base, sizes), 1 - np.repeat(base, sizes)
    )
    return labels, groups


@pytest.mark.parametrize("seed", range(5))
def test_no_patient_spans_training_and_held_out_samples(seed):
    labels, groups = patients(seed=seed)
    for n in (60, 150, len(labels)):
        split = make_split(labels, "classification", n, 4, seed, seed + n, groups=groups)
        assert list(split.columns) == ["index", "fold", "group"]
        assert (split["group"].to_numpy() == groups[split["index"]]).all()
        folds_per_group = split.groupby("group")["fold"].nunique()
        assert (folds_per_group == 1).all(), folds_per_group[folds_per_group > 1]
        assert sorted(split["fold"].unique()) == [0, 1, 2, 3]
        # Stratified as far as groups allow: every fold holds both classes.
        assert (split.assign(y=labels[split["index"]]).groupby("fold")["y"].nunique() == 2).all()


def test_grouped_samples_stay_nested():
    labels, groups = patients(seed=1)
    small, large = (
        set(make_split(labels, "classification", n, 4, 7, n, groups=groups)["index"])
        for n in (100, 250)
    )
    assert small < large


@pytest.mark.parametrize("n_patients", [1, 3])
def test_fewer_groups_than_folds_is_one_line(n_patients):
    labels = np.tile([0, 1], 20)
    groups = np.array([f"P{i % n_patients}" for i in range(40)])
    with pytest.raises(
        HetcvError,
        match=rf"source.group_column: the sample of 40 holds "
        rf"{n_patients} group\(s\), fewer than folds = 4",
    ):
        make_split(labels, "classification", 40, 4, 0, 0, groups=groups)


def test_the_inner_validation_split_is_a_stratified_share_of_the_training_samples():
    labels = imbalanced_labels(n=400)
    fit, validation = inner_validation_split(labels, "classification", 0.2, seed=5)
    assert len(validation) == 80 and sorted([*fit, *validation]) == list(range(400))
    counts = np.bincount(labels[validation], minlength=3)
    assert np.all(np.abs(counts - 0.2 * np.bincount(labels, minlength=3)) < 2)
    again = inner_validation_split(labels, "classification", 0.2, seed=5)[1]
    assert np.array_equal(validation, again)
    assert not np.array_equal(
        validation, inner_validation_split(labels, "classification", 0.2, 6)[1]
    )
    values = np.random.default_rng(0).normal(size=400)
    _, validation = inner_validation_split(values, "regression", 0.1, seed=0)
    assert len(validation) == 40 and np.median(values[validation]) == pytest.approx(0, abs=0.3)


def test_the_inner_validation_split_keeps_each_patient_on_one_side():
    rng = np.random.default_rng(1)
    patients = rng.integers(0, 60, size=300)
    labels = rng.integers(0, 2, size=300)
    fit, validation = inner_validation_split(labels, "classification", 0.2, 0, groups=patients)
    assert set(patients[fit]).isdisjoint(patients[validation])
    assert 0.1 < len(validation) / 300 < 0.3


@pytest.mark.parametrize(
    ("n", "fraction", "groups", "message"),
    [
        (5, 0.05, None, "0.05 of 5 training samples leaves no validation sample"),
        (2, 0.5, None, "0.5 of 2 training samples leaves no validation sample or too few"),
        (20, 0.2, np.repeat([0, 1, 2], [7, 7, 6]), "0.2 needs 5 groups among the training"),
    ],
)
def test_an_impossible_inner_validation_split_is_one_line_naming_the_key(
    n, fraction, groups, message
):
    with pytest.raises(HetcvError, match="^train.early_stopping.validation_fraction: " + message):
        inner_validation_split(np.arange(n) % 2, "classification", fraction, 0, groups=groups)
