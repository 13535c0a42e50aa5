import numpy as np
import pandas as pd
import pytest

from hetcv.errors import HetcvError
from hetcv.import_features import held_out_features, layout


def binary_table(rows=6, width=7):
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(rows)],
            "target": ["tumour", "normal"] * (rows // 2),
            "prediction": np.linspace(0.1, 0.9, rows),
            "site": ["A", "B", "C"] * (rows // 3),
        }
    )
    for j in range(width):
        table[f"emb_{j}"] = rng.normal(size=rows)
    return table


def converted(table, task="classification", embedding="emb_", pca_components=5):
    return held_out_features(
        table,
        task=task,
        embedding=embedding,
        metadata_columns=["site"] if "site" in table else [],
        pca_components=pca_components,
        where="t.parquet",
    )


def test_a_binary_table_becomes_one_fold_with_scores_by_hand():
    table = binary_table()
    manifest, held_out = converted(table)
    # Text labels are coded in sorted order: normal → 0, tumour → 1.
    assert manifest["target"].tolist() == [1, 0, 1, 0, 1, 0]
    assert manifest["label"].tolist()[:2] == ["tumour", "normal"]
    assert manifest["site"].tolist() == ["A", "B", "C", "A", "B", "C"]
    assert (held_out["n"] == 6).all() and (held_out["fold"] == 0).all()
    p = np.linspace(0.1, 0.9, 6)  # P(tumour)
    assert held_out["predicted_label"].tolist() == [0, 0, 0, 1, 1, 1]
    assert held_out["correct"].tolist() == [False, True, False, False, True, False]
    truth = np.array([1, 0, 1, 0, 1, 0])
    expected_loss = -np.log(np.where(truth == 1, p, 1 - p))
    np.testing.assert_allclose(held_out["loss"], expected_loss)
    np.testing.assert_allclose(held_out["probability_1"], p)
    assert list(held_out.columns[-7:]) == [f"f{j:03d}" for j in range(7)]
    np.testing.assert_allclose(held_out["f006"], table["emb_6"], rtol=1e-6)


def three_classes(**columns):
    """Three samples of classes 2, 5, 9 with their class probabilities, and ``columns``."""
    probabilities = {"probability_0": [0.7, 0.1, 0.2], "probability_1": [0.2, 0.8, 0.2]}
    return pd.DataFrame(
        {"sample_id": ["a", "b", "c"], "target": [2, 5, 9], **probabilities, **columns}
    )


def test_multiclass_probabilities_a_list_embedding_and_a_given_loss():
    table = three_classes(
        n=[3, 3, 3],
        fold=[0, 1, 2],
        probability_2=[0.1, 0.1, 0.6],
        loss=[0.5, 0.25, 1.0],
        vector=[np.arange(4.0), np.ones(4), np.zeros(4)],
    )
    manifest, held_out = converted(table, embedding="vector", pca_components=2)
    assert held_out["predicted_label"].tolist() == [2, 5, 9]  # classes 2, 5, 9 in order
    assert held_out["correct"].all()
    np.testing.assert_allclose(held_out["prediction"], [0.7, 0.8, 0.6])
    assert held_out["loss"].tolist() == [0.5, 0.25, 1.0]
    assert held_out["f003"].tolist() == [3.0, 1.0, 0.0]


def test_regression_scores_are_squared_errors():
    table = pd.DataFrame(
        {"sample_id": [1, 2], "target": [10.0, 4.0], "prediction": [7.0, 4.5], "e0": [1, 2]}
    )
    _, held_out = converted(table, task="regression", embedding="e", pca_components=1)
    assert held_out["sq_error"].tolist() == [9.0, 0.25] == held_out["loss"].tolist()
    assert held_out["sample_id"].tolist() == ["1", "2"]


def test_layout_counts_rows_per_model():
    table = pd.DataFrame({"n": [4, 4, 4, 4, 8] + [8] * 7, "fold": [0, 0, 1, 1] + [0] * 4 + [1] * 4})
    assert layout(table, "t") == {4: {0: 2, 1: 2}, 8: {0: 4, 1: 4}}
    assert layout(table.drop(columns=["n", "fold"]), "t") == {12: {0: 12}}


def with_change(change):
    return change(binary_table())


BAD_TABLES = {
    "missing column": (
        lambda t: t.drop(columns="target"),
        r"^t.parquet: column 'target' not found \(columns: sample_id, prediction, site, emb_0",
    ),
    "non-numeric embedding": (
        lambda t: t.assign(emb_3=["x", 1, 2, 3, 4, 5]),
        r"^t.parquet: row 0 \(sample 's0'\): embedding value 3 is 'x', not a finite number$",
    ),
    "NaN embedding": (
        lambda t: t.assign(emb_0=[0, 1, 2, np.nan, 4, 5]),
        r"^t.parquet: row 3 \(sample 's3'\): embedding value 0 is 'nan', not a finite number$",
    ),
    "no embedding": (
        lambda t: t.rename(columns=lambda c: c.replace("emb_", "x_")),
        r"^t.parquet: no embedding column starts with 'emb_'$",
    ),
    "duplicate id": (
        lambda t: t.assign(sample_id=["a", "b", "c", "a", "e", "f"]),
        r"^t.parquet: row 3: sample 'a' appears twice at n = 6$",
    ),
    "too narrow": (
        lambda t: t.drop(columns=["emb_5", "emb_6", "emb_4"]),
        r"^t.parquet: the embedding has 4 dimensions, fewer than clustering.pca_components = 5$",
    ),
    "n without fold": (
        lambda t: t.assign(n=6),
        r"^t.parquet: has column 'n' but not its partner \(n and fold\)$",
    ),
    "probability out of range": (
        lambda t: t.assign(prediction=[0.1, 1.2, 0.5, 0.5, 0.5, 0.5]),
        r"^t.parquet: row 1: a class probability is not in \[0, 1\]$",
    ),
    "missing target": (
        lambda t: t.assign(target=["a", None, "a", "b", "a", "b"]),
        r"^t.parquet: row 1 \(sample 's1'\) has a missing target$",
    ),
}


@pytest.mark.parametrize("case", BAD_TABLES, ids=list(BAD_TABLES))
def test_each_bad_table_is_one_line(case):
    change, message = BAD_TABLES[case]
    with pytest.raises(HetcvError, match=message):
        converted(with_change(change))


def test_multiclass_rows_must_sum_to_one():
    table = three_classes(probability_2=[0.1, 0.1, 0.2], e0=[1.0, 2.0, 3.0])
    with pytest.raises(HetcvError, match=r"^t.parquet: row 2: the class probabilities do not sum"):
        converted(table, embedding="e", pca_components=1)
