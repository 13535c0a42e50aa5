import json
import logging
from types import SimpleNamespace

import pytest

from hetcv.errors import HetcvError
from hetcv.jobs import named_files, run_from_snakemake


class Named(dict):
    """The part of Snakemake's Namedlist that the adapter reads."""


def fake_snakemake(tmp_path, settings, threads=3):
    return SimpleNamespace(
        input=Named(one="a.parquet", many=["b.parquet", "c.parquet"]),
        output=Named(table=str(tmp_path / "out.parquet")),
        params=SimpleNamespace(settings=json.dumps(settings)),
        threads=threads,
        log=[str(tmp_path / "job.log")],
    )


def test_named_files_keep_single_paths_and_lists():
    assert named_files(Named(one="a", many=("b", "c"))) == {"one": "a", "many": ["b", "c"]}


def test_the_job_gets_files_settings_and_threads(tmp_path):
    seen = {}

    def job(inputs, outputs, params):
        seen.update(inputs=inputs, outputs=outputs, params=params)

    run_from_snakemake(fake_snakemake(tmp_path, {"k": [2, 3], "task": "regression"}), job)
    assert seen["inputs"] == {"one": "a.parquet", "many": ["b.parquet", "c.parquet"]}
    assert seen["outputs"] == {"table": str(tmp_path / "out.parquet")}
    assert seen["params"] == {"k": [2, 3], "task": "regression", "threads": 3}


def test_a_user_error_exits_with_one_line_in_the_log(tmp_path):
    def job(inputs, outputs, params):
        raise HetcvError("clustering.k: k=9 is not smaller than the fold (8 samples)")

    with pytest.raises(SystemExit) as stopped:
        run_from_snakemake(fake_snakemake(tmp_path, {}), job)
    assert (
        str(stopped.value)
        == "hetcv error: clustering.k: k=9 is not smaller than the fold (8 samples)"
    )
    logging.shutdown()
    logged = (tmp_path / "job.log").read_text().strip().splitlines()
    assert logged == ["ERROR:hetcv:clustering.k: k=9 is not smaller than the fold (8 samples)"]


def test_a_bug_keeps_its_traceback(tmp_path):
    def job(inputs, outputs, params):
        raise KeyError("missing")

    with pytest.raises(KeyError):
        run_from_snakemake(fake_snakemake(tmp_path, {}), job)
