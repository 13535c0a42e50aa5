"""hetcv.label_names and hetcv.labels: the views of a multi-label table, by hand."""

import numpy as np
import pandas as pd
import pytest

from hetcv.errors import HetcvError
from hetcv.label_manifest import view_manifest
from hetcv.label_names import MACRO, label_key, label_keys, validate_labels
from hetcv.label_view import label_view, macro_view
from hetcv.labels import labels_summary
from hetcv.stats import holm


def multilabel_rows(seed=0, m=40):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 2, size=(m, 2))
    probability = np.clip(target * 0.6 + rng.uniform(0, 0.4, size=(m, 2)), 0, 1)
    table = pd.DataFrame({"sample_id": [f"s{i}" for i in range(m)], "n": m, "fold": 0})
    for index, key in enumerate(("a", "b")):
        table[f"target_{key}"] = target[:, index]
        table[f"probability_{key}"] = probability[:, index]
        table[f"correct_{key}"] = (probability[:, index] >= 0.5) == (target[:, index] == 1)
    table["f000"] = rng.normal(size=m).astype(np.float32)
    return table


def test_label_keys_are_path_safe_and_distinct():
    assert label_key("Pleural Effusion") == "Pleural_Effusion"
    assert label_keys(["a b", "c"], "x") == ["a_b", "c"]
    with pytest.raises(HetcvError, match="twice"):
        label_keys(["a b", "a_b"], "datasets.chest.source.target_columns")
    with pytest.raises(HetcvError, match="macro"):
        label_keys(["macro", "b"], "x")


def test_labels_are_checked_to_be_zero_or_one():
    manifest = pd.DataFrame(
        {"sample_id": ["x", "y", "z"], "L1": [1, 0, 1], "L2": [True, False, True]}
    )
    checked = validate_labels(manifest, ["L1", "L2"], "table.csv")
    assert list(checked["target_L1"]) == [1, 0, 1] and list(checked["target_L2"]) == [1, 0, 1]
    assert list(checked["target"]) == ["1,1", "0,0", "1,1"]
    bad = manifest.assign(L2=[1, 0, 2])
    with pytest.raises(
        HetcvError, match=r"row 2 \(sample 'z'\): label column 'L2' is 2, not 0 or 1"
    ):
        validate_labels(bad, ["L1", "L2"], "table.csv")
    with pytest.raises(HetcvError, match="label 'L1' has one class only"):
        validate_labels(manifest.assign(L1=1), ["L1", "L2"], "table.csv")


def test_a_label_view_is_that_label_as_a_binary_task():
    rows = multilabel_rows()
    view = label_view(rows, "b", "here")
    assert (view["target"] == rows["target_b"]).all()
    assert view["probability_1"].to_numpy() == pytest.approx(rows["probability_b"].to_numpy())
    assert (view["probability_0"] + view["probability_1"]).to_numpy() == pytest.approx(1.0)
    assert (view["correct"] == rows["correct_b"]).all()
    expected = -np.log(
        np.where(rows["target_b"] == 1, rows["probability_b"], 1 - rows["probability_b"])
    )
    assert view["loss"].to_numpy() == pytest.approx(np.asarray(expected))
    assert "f000" in view and "target_a" not in view
    one_class = rows.assign(target_b=1)
    with pytest.raises(HetcvError, match="here: label 'b' has one class only"):
        label_view(one_class, "b", "here")


def test_the_macro_view_scores_the_share_of_labels_right():
    rows = multilabel_rows(seed=1)
    view = macro_view(rows)
    share = (rows["correct_a"].astype(float) + rows["correct_b"].astype(float)) / 2
    assert view["score"].to_numpy() == pytest.approx(share.to_numpy())
    assert view["loss"].to_numpy() == pytest.approx(1 - share.to_numpy())
    # Its per-cluster mean is the macro mean of the labels' accuracies.
    cluster = np.arange(len(rows)) % 3
    for c in range(3):
        members = cluster == c
        by_label = np.mean([rows.loc[members, f"correct_{k}"].mean() for k in ("a", "b")])
        assert view.loc[members, "score"].mean() == pytest.approx(by_label)


def test_a_view_manifest_keeps_the_metadata_and_its_label():
    manifest = pd.DataFrame(
        {
            "sample_id": ["x", "y"],
            "target": ["1,0", "0,1"],
            "target_a": [1, 0],
            "target_b": [0, 1],
            "site": ["A", "B"],
        }
    )
    assert view_manifest(manifest, "b").columns.tolist() == ["sample_id", "site", "target"]
    assert list(view_manifest(manifest, "b")["target"]) == [0, 1]
    assert list(view_manifest(manifest, MACRO)["target"]) == [1.0, 1.0]


def test_labels_are_holm_adjusted_over_every_label_and_size():
    def cv(p_values):
        return pd.DataFrame(
            {
                "role": "selected",
                "n": [100, 200],
                "test_metric": 0.9,
                "cv": 5.0,
                "debiased_cv": 3.0,
                "debiased_cv_ci_low": 0.0,
                "debiased_cv_ci_high": 6.0,
                "p_value": p_values,
                "p_calibrated": np.nan,
            }
        )

    summary = labels_summary(
        {"a": cv([0.01, 0.2]), "b": cv([0.004, 0.03]), MACRO: cv([0.001, 0.5])}
    )
    labels = summary[summary["label"] != MACRO]
    assert labels["p_holm_labels"].to_numpy() == pytest.approx(
        holm(np.array([0.01, 0.2, 0.004, 0.03]))
    )
    assert summary.loc[summary["label"] == MACRO, "p_holm_labels"].isna().all()
    assert set(summary.loc[summary["beyond_noise"], "label"]) == {"a", "b"}
