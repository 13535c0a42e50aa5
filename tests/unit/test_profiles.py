import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hetcv.profiles import metadata_profiles, over_represented


def export_like():
    # n = 10: cluster 0 holds sites A, A, A, B; cluster 1 holds B, B, B, B, A, A.
    return pd.DataFrame(
        {
            "n": [10] * 10,
            "cluster": [0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
            "site": ["A", "A", "A", "B", "B", "B", "B", "B", "A", "A"],
            "age": [30.0, 40, 50, 60, 20, 22, 24, 26, 28, np.nan],
        }
    )


def test_a_categorical_profile_by_hand():
    profile = metadata_profiles(export_like(), ["site", "age"])
    site = profile[profile["column"] == "site"].set_index(["cluster", "level"])
    assert site.loc[(0, "A"), "count"] == 3
    assert site.loc[(0, "A"), "share"] == pytest.approx(75.0)
    assert site.loc[(0, "A"), "overall_share"] == pytest.approx(50.0)
    assert site.loc[(0, "A"), "lift"] == pytest.approx(1.5)
    assert site.loc[(1, "B"), "share"] == pytest.approx(100 * 4 / 6)
    # Pearson's chi-square of [[3, 1], [2, 4]] without continuity correction.
    observed = np.array([[3, 1], [2, 4]])
    expected = observed.sum(1, keepdims=True) * observed.sum(0) / observed.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert site["statistic"].iloc[0] == pytest.approx(chi2)
    assert site["p_value"].iloc[0] == pytest.approx(stats.chi2.sf(chi2, 1))
    assert site["effect"].iloc[0] == pytest.approx(np.sqrt(chi2 / 10))
    assert site["kind"].iloc[0] == "categorical"


def test_a_numeric_profile_against_scipy_and_holm_across_columns():
    profile = metadata_profiles(export_like(), ["site", "age"])
    age = profile[profile["column"] == "age"].set_index("cluster")
    assert age["kind"].iloc[0] == "numeric"
    assert age.loc[0, "median"] == pytest.approx(45.0)
    assert age.loc[1, "median"] == pytest.approx(24.0)  # the missing age left out
    assert age.loc[1, "count"] == 5
    assert age.loc[0, "q1"] == pytest.approx(37.5) and age.loc[0, "q3"] == pytest.approx(52.5)
    h, p = stats.kruskal([30, 40, 50, 60], [20, 22, 24, 26, 28])
    assert age["statistic"].iloc[0] == pytest.approx(h)
    assert age["p_value"].iloc[0] == pytest.approx(p)
    assert age["effect"].iloc[0] == pytest.approx(h / 8)
    p_site = profile.loc[profile["column"] == "site", "p_value"].iloc[0]
    low, high = sorted([p, p_site])
    holm_low, holm_high = min(1, 2 * low), min(1, max(2 * low, high))
    assert sorted(profile.groupby("column")["p_holm"].first()) == pytest.approx(
        [holm_low, holm_high]
    )


def test_the_most_over_represented_level_of_a_cluster():
    profile = metadata_profiles(export_like(), ["site", "age"])
    row = over_represented(profile, 10, 0)
    assert (row["column"], row["level"]) == ("site", "A")
    assert row["share"] == pytest.approx(75.0) and row["overall_share"] == pytest.approx(50.0)
    assert over_represented(profile, 99, 0) is None


@pytest.mark.parametrize("seed", range(3))
def test_independent_metadata_is_rarely_significant(seed):
    # Under independence the chi-square and Kruskal-Wallis p-values are uniform: of 200
    # draws, about 5 % fall below 0.05 (binomial sd 1.5 %).
    rng = np.random.default_rng(seed)
    rejections = 0
    for _ in range(200):
        frame = pd.DataFrame(
            {
                "n": 300,
                "cluster": rng.integers(0, 4, 300),
                "site": rng.choice(list("ABC"), 300),
                "age": rng.normal(50, 10, 300),
            }
        )
        profile = metadata_profiles(frame, ["site", "age"])
        rejections += (profile.groupby("column")["p_value"].first() < 0.05).sum()
    assert 0.02 < rejections / 400 < 0.085
