"""Every source kind end to end (prepare → split → train) on images the test writes, and every
kind of bad input stopping the run with one line that names the file, row or key."""

import copy
import time

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_STUDY, make_workdir, snakemake, write_config
from images import pattern, write_image

SMALL = {
    "task": "classification",
    "model": "resnet18",
    "pretrained": "none",
    "image_size": 32,
    "sample_sizes": ["all"],
    "folds": 2,
    "train": {"epochs": 1, "batch_size": 8, "lr": 0.001},
}


def bone_age_layout(root, n=40):
    """RSNA Pediatric Bone Age as downloaded: id,boneage,male and <id>.png (8- and 16-bit)."""
    rows = []
    for i in range(n):
        sample = 1377 + i
        write_image(
            root / "boneage" / f"{sample}.png", pattern(i % 2, i), "png16" if i % 3 == 0 else "png8"
        )
        rows.append({"id": sample, "boneage": 12.0 * (1 + i % 15), "male": i % 4 == 0})
    pd.DataFrame(rows).to_csv(root / "boneage.csv", index=False)


def dicom_table(root, n=24):
    rows = []
    for i in range(n):
        write_image(root / "dicom" / f"case{i}.dcm", pattern(i % 2, i), "dicom")
        rows.append(
            {
                "file": f"case{i}.dcm",
                "decision": ["keep", "discard"][i % 2],
                "subgroup": i % 3,
                "patient": f"P{i // 5}",  # 5 patients, 4 to 5 images each, both labels
            }
        )
    pd.DataFrame(rows).to_csv(root / "dicom.csv", index=False)


def class_folders(root, n=24):
    for i in range(n):
        label = ["damaged", "intact"][i % 2]
        write_image(
            root / "plates" / label / f"p{i}{'.jpg' if i % 2 else '.tif'}",
            pattern(i % 2, i),
            "jpeg" if i % 2 else "tiff",
        )


def medmnist_npz(root):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 16), ("val", 6), ("test", 8)):
        labels = np.arange(n) % 2
        images = np.stack(
            [np.stack([pattern(label, i, 28)] * 3, axis=-1) for i, label in enumerate(labels)]
        ).astype(np.uint8)
        images[..., 1] = rng.integers(0, 255, size=images.shape[:3])
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.reshape(-1, 1)
    np.savez(root / "pathmnist.npz", **arrays)


def study(root):
    return {
        **copy.deepcopy({k: TINY_STUDY[k] for k in ("seed", "clustering", "metric")}),
        "datasets": {
            "bones": {
                **SMALL,
                "task": "regression",
                "source": {
                    "kind": "csv",
                    "csv": str(root / "boneage.csv"),
                    "images": str(root / "boneage"),
                    "id_column": "id",
                    "extension": ".png",
                    "target_column": "boneage",
                    "query": "male == False",
                    "metadata_columns": ["male"],
                },
            },
            "dicoms": {
                **SMALL,
                "source": {
                    "kind": "csv",
                    "csv": str(root / "dicom.csv"),
                    "images": str(root / "dicom"),
                    "path_column": "file",
                    "target_column": "decision",
                    "group_column": "patient",
                    "metadata_columns": ["subgroup"],
                },
            },
            "plates": {**SMALL, "source": {"kind": "folder", "root": str(root / "plates")}},
            "pathmnist": {
                **SMALL,
                "source": {
                    "kind": "npz",
                    "path": str(root / "pathmnist.npz"),
                    "splits": ["train", "test"],
                },
            },
        },
    } | {"clustering": {**TINY_STUDY["clustering"], "k": [2, 3]}}


@pytest.fixture(scope="module")
def sources_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    bone_age_layout(root)
    dicom_table(root)
    class_folders(root)
    medmnist_npz(root)
    workdir = make_workdir(root / "study")
    config = write_config(workdir / "sources.yaml", study(root))
    targets = [
        f"results/{name}/n{n}/fold{fold}/features.parquet"
        for name, n in (("bones", 30), ("dicoms", 24), ("plates", 24), ("pathmnist", 24))
        for fold in (0, 1)
    ]
    result = snakemake(workdir, *targets, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


def manifest(workdir, name):
    return pd.read_parquet(workdir / f"results/{name}/data/manifest.parquet")


def images(workdir, name):
    return np.load(workdir / f"results/{name}/data/images.npy")


def test_csv_source_reads_the_bone_age_layout_with_a_query(sources_run):
    table = manifest(sources_run, "bones")
    assert len(table) == 30 and not table["male"].any()
    assert table["sample_id"].iloc[0] == "1378" and table["target"].dtype == np.float64
    assert images(sources_run, "bones").shape == (30, 32, 32)
    features = pd.read_parquet(sources_run / "results/bones/n30/fold0/features.parquet")
    assert "sq_error" in features and len(features) == 15


def test_csv_source_with_dicom_paths_and_text_labels(sources_run):
    table = manifest(sources_run, "dicoms")
    assert table["target"].tolist()[:2] == [1, 0]  # keep → 1, discard → 0 (sorted labels)
    assert table["label"].tolist()[:2] == ["keep", "discard"]
    assert "subgroup" in table
    pixels = images(sources_run, "dicoms")
    assert pixels[:, :16].mean() != pixels[:, 16:].mean()


def test_grouped_folds_never_put_a_patient_on_both_sides(sources_run):
    split = pd.read_parquet(sources_run / "results/dicoms/splits/n24.parquet")
    assert list(split.columns) == ["sample_id", "index", "fold", "group"]
    assert split["group"].nunique() == 5
    assert (split.groupby("group")["fold"].nunique() == 1).all()
    for fold in (0, 1):
        held_out = pd.read_parquet(sources_run / f"results/dicoms/n24/fold{fold}/features.parquet")
        trained_on = split.loc[split["fold"] != fold, "sample_id"]
        held_groups = set(split.set_index("sample_id").loc[held_out["sample_id"], "group"])
        trained_groups = set(split.set_index("sample_id").loc[trained_on, "group"])
        assert held_groups and trained_groups and not held_groups & trained_groups


def test_folder_source_uses_class_subfolders(sources_run):
    table = manifest(sources_run, "plates")
    assert set(table["class_name"]) == {"damaged", "intact"}
    assert (table["target"] == (table["class_name"] == "intact")).all()
    assert table["sample_id"].iloc[0].startswith("damaged/")


def test_npz_source_keeps_colour_and_the_chosen_splits(sources_run):
    table = manifest(sources_run, "pathmnist")
    assert set(table["split"]) == {"train", "test"} and len(table) == 24
    assert images(sources_run, "pathmnist").shape == (24, 3, 32, 32)


def broken_bones(
    root, change_table=None, change_files=None, source_change=None, dataset_change=None
):
    bone_age_layout(root)
    if change_table:
        table = pd.read_csv(root / "boneage.csv")
        change_table(table)
        table.to_csv(root / "boneage.csv", index=False)
    if change_files:
        change_files(root / "boneage")
    config = study(root)
    config["datasets"] = {"bones": config["datasets"]["bones"]}
    if source_change:
        source_change(config["datasets"]["bones"]["source"])
    if dataset_change:
        dataset_change(config["datasets"]["bones"])
    return config


def truncate(folder):
    path = folder / "1378.png"
    path.write_bytes(path.read_bytes()[:50])


BAD_INPUTS = {
    "truncated image": (dict(change_files=truncate), "1378.png: cannot read image"),
    "missing image file": (
        dict(change_files=lambda f: (f / "1379.png").unlink()),
        "row 1 (sample '1379'): image file",
    ),
    "missing target": (
        dict(change_table=lambda t: t.__setitem__("boneage", t["boneage"].where(t.index != 2))),
        "row 1 (sample '1379') has a missing target",
    ),
    "non-numeric target": (
        dict(
            change_table=lambda t: t.__setitem__(
                "boneage", t["boneage"].astype(object).where(t.index != 2, "twelve")
            )
        ),
        "has a missing or non-numeric target 'twelve'",
    ),
    "single class": (
        dict(
            change_table=lambda t: t.__setitem__("boneage", "one"),
            dataset_change=lambda d: d.update(task="classification"),
        ),
        "a classification set needs at least 2 classes",
    ),
    "duplicate ids": (
        dict(
            change_table=lambda t: t.__setitem__("id", t["id"].where(t.index != 3, t["id"].iloc[1]))
        ),
        "duplicate sample id '1378'",
    ),
    "query selects nothing": (
        dict(source_change=lambda s: s.update(query="boneage > 1000")),
        "selects no row",
    ),
    "sample size beyond the query": (
        dict(dataset_change=lambda d: d.update(sample_sizes=[35])),
        "datasets.bones.sample_sizes: 35 is larger than the dataset (30 samples)",
    ),
    "k not smaller than the fold": (
        dict(dataset_change=lambda d: d.update(sample_sizes=[6], folds=2)),
        "clustering.k: k=3 is not smaller than the smallest held-out fold of datasets.bones",
    ),
    "missing pretrained file": (
        dict(dataset_change=lambda d: d.update(pretrained="weights/none.pth")),
        "datasets.bones.pretrained: checkpoint file weights/none.pth does not exist",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=str)
def test_bad_input_stops_with_one_line_and_leaves_nothing_complete(tmp_path, case):
    changes, message = BAD_INPUTS[case]
    config = broken_bones(tmp_path, **changes)
    workdir = make_workdir(tmp_path / "study")
    path = write_config(workdir / "bad.yaml", config)
    result = snakemake(workdir, "results/bones/data/manifest.parquet", "--configfile", str(path))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-3000:]
    data = workdir / "results/bones/data"
    assert not (data / "images.npy").exists() and not (data / "manifest.parquet").exists()
    leftovers = list(data.glob(".*.tmp*")) if data.exists() else []
    assert not leftovers


@pytest.mark.parametrize("damaged", [False, True], ids=["success", "error"])
def test_snakemake_exits_without_waiting_for_its_rate_limit_timers(tmp_path, damaged):
    """With a 100 s timespan, Snakemake's timers alone would keep it alive 100 s after its
    last job; the Snakefile's onsuccess and onerror handlers cancel them."""
    config = broken_bones(tmp_path, change_files=truncate if damaged else None)
    workdir = make_workdir(tmp_path / "study")
    path = write_config(workdir / "study.yaml", config)
    started = time.monotonic()
    result = snakemake(
        workdir,
        "results/bones/data/manifest.parquet",
        "--configfile",
        str(path),
        "--max-jobs-per-timespan",
        "1000/100s",
    )
    elapsed = time.monotonic() - started
    assert (result.returncode != 0) == damaged, result.stdout[-3000:] + result.stderr[-3000:]
    assert elapsed < 60, f"one prepare job took Snakemake {elapsed:.0f} s"
