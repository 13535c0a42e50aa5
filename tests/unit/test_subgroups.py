import numpy as np
import pandas as pd
import pytest

from hetcv.subgroups import recovery, subgroup_recovery


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
