"""The config checked against its JSON schema, with one line naming the key, defaults filled."""

from __future__ import annotations

import copy
import os

import jsonschema
import yaml

from hetcv.errors import HetcvError


def checked_config(config: dict, schema_path: str | os.PathLike) -> dict:
    """A copy of ``config`` with the schema's defaults filled in, after checking it.

    Parameters
    ----------
    config : dict
        The workflow config as Snakemake read it.
    schema_path : path
        ``workflow/schemas/config.schema.yaml``.

    Returns
    -------
    dict
        Raises :class:`HetcvError` with the most relevant schema violation, naming the key
        (``datasets.udigits.folds``) on one line, where Snakemake's ``validate()`` would dump
        the whole config around it.
    """
    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    validator_class = jsonschema.validators.validator_for(schema)
    filled = copy.deepcopy(config)
    # Walking the config once fills every default, nested ones included (a missing
    # `clustering` becomes {} and then gets its keys); the check then sees the whole study.
    for _ in _defaults_filling(validator_class)(schema).iter_errors(filled):
        pass
    error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(filled))
    if error is not None:
        key = ".".join(str(part) for part in error.absolute_path) or "<top level>"
        raise HetcvError(f"config key {key}: {error.message}")
    return filled


def _defaults_filling(validator_class):
    """The validator class, extended to set each missing property that has a default."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties_with_defaults})
