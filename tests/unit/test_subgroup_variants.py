import numpy as np
import pandas as pd
import pytest

from hetcv.subgroup_variants import recovery, recovery_by_size, subgroup_recovery, subgroup_shares


def test_recovery_against_a_hand_example():
    # 20 samples; 4 in the subgroup; the worst cluster holds 5 samples, 3 of them members.
    member = np.zeros(20, dtype=bool)
    member[[0, 1, 2, 10]] = True
    in_worst = np.zeros(20, dtype=bool)
    in_worst[[0, 1, 2, 3, 4]] = True
    membership = np.linspace(1.0, 0.05, 20)  # sample 0 most typical of the worst cluster
    row = recovery(in_worst, membership, member)
    assert row["prevalence"] == pytest.approx(0.2)
    assert row["precision"] == pytest.approx(3 / 5)
    assert row["recall"] == pytest.approx(3 / 4)
    assert row["lift"] == pytest.approx(3.0)
    assert row["precision_at_10"] == pytest.approx(3 / 10)
    assert row["precision_at_25"] == pytest.approx(4 / 20)
    # Members rank 1, 2, 3 and 11 of 20: AUROC = mean over member/non-member pairs.
    ranks_below = [16 - 0, 16 - 0, 16 - 0, 16 - 7]
    assert row["auroc"] == pytest.approx(sum(ranks_below) / (4 * 16))


def test_subgroup_recovery_uses_each_runs_worst_cluster():
    assignments = pd.DataFrame(
        {
            "sample_id": ["a", "b", "c", "d"] * 2,
            "fold": [0] * 8,
            "repeat": [0] * 4 + [1] * 4,
            "cluster": [1, 1, 0, 0, 0, 0, 1, 1],
            "worst_membership": [0.9, 0.8, 0.1, 0.2, 0.9, 0.8, 0.1, 0.2],
        }
    )
    runs = pd.DataFrame({"fold": [0, 0], "repeat": [0, 1], "worst_cluster": [1, 0]})
    subgroup = pd.Series(["x", "x", "y", "y"], index=["a", "b", "c", "d"])
    table = subgroup_recovery(assignments, runs, subgroup)
    x = table[table["subgroup"] == "x"]
    assert list(x["precision"]) == [1.0, 1.0] and list(x["lift"]) == [2.0, 2.0]
    assert list(x["auroc"]) == [1.0, 1.0]


def test_recovery_by_size_averages_runs_within_each_sample_size():
    # n = 4: the worst cluster holds exactly subgroup x in repeat 0 and half of it in repeat 1.
    assignments = pd.DataFrame(
        {
            "sample_id": ["a", "b", "c", "d"] * 2,
            "n": [4] * 8,
            "fold": [0] * 8,
            "repeat": [0] * 4 + [1] * 4,
            "cluster": [1, 1, 0, 0, 1, 0, 0, 0],
            "worst_membership": [0.9, 0.8, 0.1, 0.2, 0.9, 0.3, 0.2, 0.1],
        }
    )
    runs = pd.DataFrame({"n": [4, 4], "fold": [0, 0], "repeat": [0, 1], "worst_cluster": [1, 1]})
    subgroup = pd.Series(["x", "x", "y", "y"], index=["a", "b", "c", "d"])
    table = recovery_by_size(assignments, runs, subgroup)
    assert list(table["subgroup"]) == ["x", "y"] and list(table["n"]) == [4, 4]
    x = table.iloc[0]
    assert x["precision"] == pytest.approx((1.0 + 1.0) / 2)
    assert x["recall"] == pytest.approx((1.0 + 0.5) / 2)
    assert "fold" not in table and "repeat" not in table


def test_subgroup_shares_sum_to_100_per_cluster():
    clusters = pd.DataFrame(
        {"sample_id": ["a", "b", "c", "d", "e"], "n": [5] * 5, "cluster": [0, 0, 0, 1, 1]}
    )
    subgroup = pd.Series(["x", "x", "y", "y", "y"], index=["a", "b", "c", "d", "e"])
    shares = subgroup_shares(clusters, subgroup).set_index(["cluster", "subgroup"])["share"]
    assert shares[(0, "x")] == pytest.approx(200 / 3)
    assert shares[(0, "y")] == pytest.approx(100 / 3)
    assert shares[(1, "y")] == pytest.approx(100.0)
    assert (1, "x") not in shares.index
