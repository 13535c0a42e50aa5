import numpy as np
import pandas as pd
import pytest
from conftest import TINY_STUDY, snakemake
from PIL import Image

from hetcv.export_clusters import consensus_clusters
from hetcv.verdict import spread_text

DATASETS = sorted(TINY_STUDY["datasets"])
SELECTED = TINY_STUDY["clustering"]["selected"]


def summary(workdir, dataset, name):
    table = pd.read_parquet(workdir / f"results/{dataset}/summary/{name}.parquet")
    if "algorithm" in table:
        table = table[(table["algorithm"] == SELECTED["algorithm"]) & (table["k"] == SELECTED["k"])]
    return table


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_table_value_is_recomputed_from_the_summaries(tiny_study, dataset):
    tables = tiny_study / "results/tables"
    pairs = summary(tiny_study, dataset, "cluster_pairs")
    table1 = pd.read_csv(tables / f"{dataset}_table1.csv")
    for _, row in pairs.iterrows():
        pair = f"{row['cluster_a']}-{row['cluster_b']}"
        for column, label in (
            ("centroid_distance", "Centroid distance"),
            ("closest_distance", "Closest-point distance"),
        ):
            cell = table1[(table1["distance"] == label) & (table1["n"] == row["n"])][pair]
            assert cell.item() == pytest.approx(row[column], nan_ok=True)
    clusters = summary(tiny_study, dataset, "cluster_stats")
    table2 = pd.read_csv(tables / f"{dataset}_table2.csv")
    merged = table2.merge(clusters, on=["cluster", "n"], validate="one_to_one")
    assert len(merged) == len(clusters)
    for ours, theirs in (
        ("min", "dist_min"),
        ("max", "dist_max"),
        ("mean", "dist_mean"),
        ("sd", "dist_sd"),
    ):
        assert np.allclose(merged[ours], merged[theirs], equal_nan=True)
    cv = summary(tiny_study, dataset, "cv").sort_values("n")
    cv_table = pd.read_csv(tables / f"{dataset}_cv.csv")
    for column in ("cv", "cv_ci_low", "debiased_cv", "debiased_cv_ci_high", "p_holm", "excess_cv"):
        assert np.allclose(cv_table[column], cv[column]), column
    if TINY_STUDY["datasets"][dataset]["task"] == "classification":
        assert np.allclose(cv_table["p_holm_calibrated"], cv["p_holm_calibrated"])
    else:
        assert cv_table["p_calibrated"].isna().all()
    for extension in ("md", "tex"):
        text = (tables / f"{dataset}_cv.{extension}").read_text()
        assert f"{cv['cv'].iloc[0]:.3f}" in text


@pytest.mark.parametrize("dataset", DATASETS)
def test_figures_exist_open_and_have_the_configured_size(tiny_study, dataset):
    names = ["fig2", "fig3", "fig4", "fig5", "validity", "scatter", "gallery"]
    if dataset == "udigits":
        names.append("subgroups")
    for name in names:
        png = tiny_study / f"results/figures/{dataset}_{name}.png"
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            width, height = image.size
        assert width > 300 and height > 200
        assert (tiny_study / f"results/figures/{dataset}_{name}.pdf").read_bytes()[:4] == b"%PDF"
    with Image.open(tiny_study / f"results/figures/{dataset}_fig4.png") as image:
        width, height = image.size
    # One panel of 6.4 × 4.2 inches at 150 dpi, give or take the tight bounding box.
    assert 0.8 * 960 < width < 1.1 * 960 and 0.8 * 630 < height < 1.1 * 630
    assert not (tiny_study / "results/figures/digitvalue_subgroups.png").exists()


@pytest.mark.parametrize("dataset", DATASETS)
def test_export_rows_match_the_assignments(tiny_study, dataset):
    export = pd.read_csv(tiny_study / f"results/{dataset}/clusters_per_sample.csv")
    score = "correct" if TINY_STUDY["datasets"][dataset]["task"] == "classification" else "sq_error"
    metadata = ["subgroup"] if dataset == "udigits" else []
    assert list(export.columns) == [
        "sample_id",
        "n",
        "fold",
        "cluster",
        "membership",
        "target",
        "prediction",
        score,
        "loss",
        *metadata,
    ]
    assignments = pd.concat(
        pd.read_parquet(path)
        for path in (tiny_study / "results" / dataset).glob(
            f"n*/assignments_{SELECTED['algorithm']}.parquet"
        )
    )
    expected = consensus_clusters(assignments[assignments["k"] == SELECTED["k"]])
    merged = export.merge(expected, on=["sample_id", "n", "fold"], suffixes=("", "_expected"))
    assert len(merged) == len(export) == len(expected)
    assert (merged["cluster"] == merged["cluster_expected"]).all()
    features = pd.concat(
        pd.read_parquet(path, columns=["sample_id", "n", "fold", "target", "prediction", "loss"])
        for path in (tiny_study / "results" / dataset).glob("n*/fold*/features.parquet")
    )
    joined = export.merge(features, on=["sample_id", "n", "fold"], suffixes=("", "_features"))
    assert len(joined) == len(export)
    for column in ("target", "prediction", "loss"):
        assert np.allclose(joined[column], joined[f"{column}_features"]), column
    if metadata:
        manifest = pd.read_parquet(tiny_study / f"results/{dataset}/data/manifest.parquet")
        known = export.merge(manifest, on="sample_id", suffixes=("", "_manifest"))
        assert (known["subgroup"] == known["subgroup_manifest"]).all()


def test_summary_md_gives_a_verdict_per_dataset(tiny_study):
    text = (tiny_study / "results/summary.md").read_text()
    for dataset in DATASETS:
        assert f"## {dataset}" in text
    last = summary(tiny_study, "udigits", "cv").sort_values("n").iloc[-1]
    cells = [
        spread_text(
            *(last[f"{column}{suffix}"] for suffix in ("", "_ci_low", "_ci_high", "_upper"))
        )
        for column in ("debiased_cv", "error_cv")
    ]
    assert (
        f"| {last['n']} | {last['test_metric']:.3f} | {cells[0]} | {cells[1]} | "
        f"{last['i_squared']:.2f} | {last['cv']:.1f} ({last['cv_ci_low']:.1f}–" in text
    )
    # Where the data cannot tell the debiased CV from 0, the cell is its upper bound.
    assert cells[0].startswith("≤") == (not last["debiased_cv_ci_low"] > 0)
    assert f"accuracy {last['weakest_metric']:.3f}" in text
    assert f"{last['weakest_error_ratio']:.1f}× the errors of the other clusters" in text
    assert "What the worst cluster holds" in text


def test_html_report_builds(tiny_study):
    result = snakemake(tiny_study, "--configfile", "tiny.yaml", "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (tiny_study / "report.html").read_text(errors="replace")
    assert len(html) > 100_000
    for dataset in DATASETS:
        assert dataset in html
    assert "noise floor" in html


def test_a_figure_setting_reruns_only_the_pictures(tiny_study, tmp_path):
    import yaml

    study = {**TINY_STUDY, "report": {"dpi": 100, "width": 5.0, "height": 4.0, "palette": "deep"}}
    config = tmp_path / "restyled.yaml"
    config.write_text(yaml.safe_dump(study))
    result = snakemake(tiny_study, "--configfile", str(config), "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    from conftest import job_counts

    counts = job_counts(result.stdout)
    assert set(counts) == {
        "figures",
        "cluster_pictures",
        "subgroup_heatmap",
        "slices_figure",
        "all",
    }
