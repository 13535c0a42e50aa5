"""Config validation that reports one line naming the key, before Snakemake's ``validate()``."""

from __future__ import annotations

import os

import jsonschema
import yaml

from hetcv.errors import HetcvError


def check_config_schema(config: dict, schema_path: str | os.PathLike) -> None:
    """Raise :class:`HetcvError` with the most relevant schema violation, on one line.

    Snakemake's ``validate()`` reports the same problem with the whole config dumped around
    it; this names the key (``datasets.udigits.folds``) and the problem only.
    """
    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    validator_class = jsonschema.validators.validator_for(schema)
    error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(config))
    if error is not None:
        key = ".".join(str(part) for part in error.absolute_path) or "<top level>"
        raise HetcvError(f"config key {key}: {error.message}")
