import json
import os
import sys
from pathlib import Path

from snakemake.utils import validate

# The hetcv library lives in src/; jobs (local, conda or SLURM) find it through PYTHONPATH.
HETCV_SRC = str(Path(workflow.main_snakefile).parent / "src")
sys.path.insert(0, HETCV_SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [HETCV_SRC, os.environ.get("PYTHONPATH")])
)

from hetcv.config import check_config_schema
from hetcv.data import count_samples
from hetcv.errors import HetcvError
from hetcv.seeding import derive_seed
from hetcv.splits import resolve_sample_sizes

try:
    check_config_schema(config, workflow.source_path("../schemas/config.schema.yaml"))
except HetcvError as error:
    raise ValueError(str(error)) from None
validate(config, schema="../schemas/config.schema.yaml")

DATASETS = sorted(config["datasets"])


def canonical(value):
    """Params as canonical JSON: Snakemake compares params textually to decide re-runs."""
    return json.dumps(value, sort_keys=True)


def dataset_config(name):
    return config["datasets"][name]


def check_pretrained(name):
    pretrained = dataset_config(name)["pretrained"]
    if pretrained not in ("none", "imagenet") and not Path(pretrained).is_file():
        raise ValueError(
            f"datasets.{name}.pretrained: checkpoint file {pretrained} does not exist"
        )


def resolved_sample_sizes(name):
    settings = dataset_config(name)
    try:
        total = count_samples(settings["source"], config["seed"])
        return resolve_sample_sizes(
            settings["sample_sizes"],
            total,
            settings["folds"],
            key=f"datasets.{name}.sample_sizes",
        )
    except HetcvError as error:
        raise ValueError(str(error)) from None


for _name in DATASETS:
    check_pretrained(_name)
SAMPLE_SIZES = {name: resolved_sample_sizes(name) for name in DATASETS}


wildcard_constraints:
    dataset="|".join(DATASETS),
    n=r"\d+",
    fold=r"\d+",


def fold_outputs(name, pattern):
    return expand(
        pattern,
        dataset=name,
        n=SAMPLE_SIZES[name],
        fold=range(dataset_config(name)["folds"]),
    )


def final_outputs():
    outputs = []
    for name in DATASETS:
        outputs += fold_outputs(
            name, "results/{dataset}/n{n}/fold{fold}/features.parquet"
        )
    return outputs


def prepare_params(wildcards):
    settings = dataset_config(wildcards.dataset)
    return canonical(
        {
            "source": settings["source"],
            "task": settings["task"],
            "image_size": settings["image_size"],
            "seed": config["seed"],
        }
    )


def split_params(wildcards):
    settings = dataset_config(wildcards.dataset)
    return canonical(
        {"task": settings["task"], "folds": settings["folds"], "seed": config["seed"]}
    )


def train_inputs(wildcards):
    inputs = {
        "images": f"results/{wildcards.dataset}/data/images.npy",
        "manifest": f"results/{wildcards.dataset}/data/manifest.parquet",
        "split": f"results/{wildcards.dataset}/splits/n{wildcards.n}.parquet",
    }
    pretrained = dataset_config(wildcards.dataset)["pretrained"]
    if pretrained not in ("none", "imagenet"):
        inputs["weights"] = pretrained
    return inputs


def train_params(wildcards):
    settings = dataset_config(wildcards.dataset)
    return canonical(
        {
            "task": settings["task"],
            "model": settings["model"],
            "pretrained": settings["pretrained"],
            **settings["train"],
            "seed": derive_seed(
                config["seed"], wildcards.dataset, wildcards.n, wildcards.fold
            ),
        }
    )
