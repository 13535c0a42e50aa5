"""The study a config describes: checked once, its sample sizes resolved.

:func:`resolve_study` is what the workflow calls while Snakemake parses it, so it reads no
image data: sample counts come from the source's table, folder listing or ``.npz`` headers
(:func:`hetcv.sources.count_samples`). Each rule's config slice: :mod:`hetcv.params`.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hetcv.config import checked_config
from hetcv.digits import PLANTED_VARIANTS
from hetcv.errors import HetcvError
from hetcv.import_features import layout, read_features_table, table_columns
from hetcv.label_names import MACRO, label_keys, view_name
from hetcv.sources import count_samples
from hetcv.split import resolve_sample_sizes

BUILT_IN_WEIGHTS = ("none", "imagenet")


@dataclass(frozen=True)
class Study:
    """A checked config with its resolved sample sizes (ascending, per dataset).

    Attributes
    ----------
    config : dict
        The config with the schema's defaults filled in.
    sample_sizes : dict of str to list of int
        Dataset name → its resolved sample sizes, ascending.
    fold_numbers : dict of str to list of int
        Dataset name → its folds (``0..folds-1``, or a features table's ``fold`` values).
    smallest_fold : dict of str to (int, int)
        Dataset name → the fewest held-out samples of any (n, fold), and that n.
    views : dict of str to (str, str)
        A multi-label dataset's views (:mod:`hetcv.label_names`): view name → (the dataset, its
        label key or ``macro``). Views are datasets of ``config["datasets"]`` too.
    """

    config: dict
    sample_sizes: dict[str, list[int]]
    fold_numbers: dict[str, list[int]]
    smallest_fold: dict[str, tuple[int, int]]
    views: dict[str, tuple[str, str]]

    @property
    def datasets(self) -> list[str]:
        """The dataset names, sorted, views of multi-label datasets included.

        Returns
        -------
        list of str
        """
        return sorted(self.config["datasets"])

    @property
    def analysed(self) -> list[str]:
        """The datasets that are clustered and reported: all but the multi-label ones, whose
        views are.

        Returns
        -------
        list of str
        """
        return [name for name in self.datasets if self.dataset(name)["task"] != "multilabel"]

    @property
    def multilabel_datasets(self) -> list[str]:
        """The multi-label datasets (trained or imported, analysed through their views).

        Returns
        -------
        list of str
        """
        return [name for name in self.datasets if self.dataset(name)["task"] == "multilabel"]

    def views_of(self, name: str) -> list[str]:
        """A multi-label dataset's views, one per label, then the macro view.

        Parameters
        ----------
        name : str
            The multi-label dataset.

        Returns
        -------
        list of str
        """
        return [view for view, (parent, _) in self.views.items() if parent == name]

    @property
    def algorithms(self) -> list[str]:
        """``clustering.algorithms``: the clustering algorithms each fold runs.

        Returns
        -------
        list of str
            Among ``kmeans``, ``fcm`` and ``gmm``.
        """
        return self.config["clustering"]["algorithms"]

    @property
    def selected(self) -> dict:
        """``clustering.selected``: the algorithm and k the summaries and reports use.

        Returns
        -------
        dict
            Keys ``algorithm`` and ``k``.
        """
        return self.config["clustering"]["selected"]

    def dataset(self, name: str) -> dict:
        """One dataset's settings.

        Parameters
        ----------
        name : str
            A key of ``datasets``.

        Returns
        -------
        dict
            ``datasets.<name>`` (``source``, ``task``, ``folds``, ``model``, ``train`` …).
        """
        return self.config["datasets"][name]

    def folds(self, name: str) -> range:
        """A dataset's fold numbers.

        Parameters
        ----------
        name : str
            The dataset.

        Returns
        -------
        list of int
            ``0..folds-1`` for an image source, a features table's ``fold`` values.
        """
        return self.fold_numbers[name]

    @property
    def feature_datasets(self) -> list[str]:
        """The datasets whose source is a features table: not prepared, split or trained.

        Returns
        -------
        list of str
        """
        return [name for name in self.datasets if _kind(self.dataset(name)) == "features"]

    @property
    def image_datasets(self) -> list[str]:
        """The datasets hetcv trains a CNN on.

        Returns
        -------
        list of str
        """
        return [
            name for name in self.datasets if _kind(self.dataset(name)) not in ("features", "view")
        ]

    def weights_file(self, name: str) -> str | None:
        """The checkpoint file a dataset's training starts from, if it names one.

        Parameters
        ----------
        name : str
            The dataset whose ``pretrained`` setting is read.

        Returns
        -------
        str or None
            ``pretrained``, or None when it is ``none`` or ``imagenet``.
        """
        pretrained = self.dataset(name)["pretrained"]
        return None if pretrained in BUILT_IN_WEIGHTS else pretrained

    def planted_datasets(self) -> list[str]:
        """The datasets of the planted-subgroup benchmark (digits with a known group).

        Returns
        -------
        list of str
            Sorted names of the datasets whose ``source.variant`` is ``rare``, ``noisy`` or
            ``balanced``.

        Raises
        ------
        HetcvError
            When there is none.
        """
        names = [
            name
            for name in self.datasets
            if self.dataset(name)["source"].get("variant") in PLANTED_VARIANTS
            or self.dataset(name)["source"]["kind"] == "mnist"
        ]
        if not names:
            raise HetcvError(
                "validate: no dataset has source.variant rare, noisy or balanced "
                "(run it with --configfile config/validation.yaml)"
            )
        return names


def resolve_study(config: dict, schema_path: str | os.PathLike) -> Study:
    """Check a config once and resolve its sample sizes.

    Parameters
    ----------
    config : dict
        The workflow config (``config/config.yaml`` or a ``--configfile``).
    schema_path : path
        ``workflow/schemas/config.schema.yaml``.

    Returns
    -------
    Study
        Holding a copy of the config with the schema's defaults filled in. Raises
        :class:`HetcvError` with one line naming the key on any problem.
    """
    config = checked_config(_switched_on(config), schema_path)
    sizes, folds, smallest = {}, {}, {}
    for name, settings in sorted(config["datasets"].items()):
        try:
            if _is_features(settings):
                per_model = _features_layout(name, settings)
                sizes[name] = sorted(per_model)
                folds[name] = sorted(per_model[sizes[name][0]])
                smallest[name] = min((min(rows.values()), n) for n, rows in per_model.items())
            else:
                _check_image_dataset(name, settings)
                extra = config["planning"]["extra_sizes"]
                sizes[name] = _sample_sizes(name, settings, config["seed"], extra)
                folds[name] = list(range(settings["folds"]))
                smallest[name] = (sizes[name][0] // settings["folds"], sizes[name][0])
        except HetcvError as error:
            message = str(error)
            # Source errors name their key from `source`; say which dataset it belongs to.
            raise HetcvError(
                f"datasets.{name}.{message}" if message.startswith("source.") else message
            ) from None
    views = _add_views(config, sizes, folds, smallest)
    study = Study(config, sizes, folds, smallest, views)
    _check_clustering(study)
    imageless = [*study.feature_datasets, *study.views]
    if config["slices"]["embedding"] == "pixels" and imageless:
        raise HetcvError(
            "slices.embedding: 'pixels' needs images, and datasets."
            f"{imageless[0]} has none (a features source or a multi-label view; use 'model')"
        )
    return study


def _switched_on(config: dict) -> dict:
    """A copy of ``config`` with ``train.augment: true`` and ``train.early_stopping: true``
    written as ``{}`` (which the schema then fills with its defaults), and
    ``early_stopping: false`` as null, so that each setting has one form in the params."""
    config = copy.deepcopy(config)
    for settings in (config.get("datasets") or {}).values():
        train = settings.get("train") if isinstance(settings, dict) else None
        if not isinstance(train, dict):
            continue
        for key in ("augment", "early_stopping"):
            if train.get(key) is True:
                train[key] = {}
        if train.get("early_stopping") is False:
            train["early_stopping"] = None
    return config


def _is_features(settings: dict) -> bool:
    return settings["source"]["kind"] == "features"


def _kind(settings: dict) -> str:
    return settings["source"]["kind"]


def _add_views(config: dict, sizes: dict, folds: dict, smallest: dict) -> dict:
    """Add each multi-label dataset's views to ``config["datasets"]`` (and its sizes, folds)."""
    views = {}
    for name, settings in sorted(config["datasets"].items()):
        if settings["task"] != "multilabel":
            continue
        labels = settings["source"].get("target_columns")
        if not labels:
            raise HetcvError(
                f"datasets.{name}.source.target_columns: a multilabel task names its label "
                "columns here (one 0/1 column each)"
            )
        keys = label_keys(labels, f"datasets.{name}.source.target_columns")
        for key in (*keys, MACRO):
            view = view_name(name, key)
            if view in config["datasets"]:
                raise HetcvError(f"datasets.{view}: the name of a view of datasets.{name}")
            config["datasets"][view] = {
                **{k: v for k, v in settings.items() if k not in ("source", "task")},
                "source": {
                    "kind": "view",
                    "parent": name,
                    "label": key,
                    "metadata_columns": settings["source"].get("metadata_columns", []),
                },
                "task": "score" if key == MACRO else "classification",
            }
            views[view] = (name, key)
            sizes[view], folds[view], smallest[view] = sizes[name], folds[name], smallest[name]
    return views


def _features_layout(name: str, settings: dict) -> dict[int, dict[int, int]]:
    """Rows per (n, fold) of a features table, reading only its n and fold columns."""

    if "sample_sizes" in settings:
        raise HetcvError(
            f"datasets.{name}.sample_sizes: a features source takes its sample sizes from "
            "the table's n column; remove this key"
        )
    path = settings["source"]["table"]
    columns = [column for column in ("sample_id", "n", "fold") if column in table_columns(path)]
    return layout(read_features_table(path, columns), path)


def _check_image_dataset(name: str, settings: dict) -> None:
    if "sample_sizes" not in settings:
        raise HetcvError(
            f"datasets.{name}.sample_sizes: required for a {settings['source']['kind']} source"
        )
    low, high = settings["intensity"]["percentiles"]
    if not low < high:
        raise HetcvError(f"datasets.{name}.intensity.percentiles: {low} is not below {high}")
    pretrained = settings["pretrained"]
    if pretrained not in BUILT_IN_WEIGHTS and not Path(pretrained).is_file():
        raise HetcvError(f"datasets.{name}.pretrained: checkpoint file {pretrained} does not exist")
    if settings["train"]["class_weights"] != "none" and settings["task"] != "classification":
        raise HetcvError(
            f"datasets.{name}.train.class_weights: {settings['train']['class_weights']} weights "
            f"the classes of a classification task; this dataset's task is {settings['task']}"
        )


def _sample_sizes(name: str, settings: dict, seed: int, extra: list[int]) -> list[int]:
    """The configured sizes, plus ``planning.extra_sizes`` that fit the dataset."""
    total = count_samples(settings["source"], seed)
    sizes = resolve_sample_sizes(
        settings["sample_sizes"], total, settings["folds"], key=f"datasets.{name}.sample_sizes"
    )
    added = resolve_sample_sizes(extra, total, settings["folds"], key="planning.extra_sizes")
    return sorted(set(sizes) | set(added))


def _check_clustering(study: Study) -> None:
    clustering = study.config["clustering"]
    selected = study.selected
    if selected["algorithm"] not in clustering["algorithms"]:
        raise HetcvError(
            f"clustering.selected.algorithm: {selected['algorithm']} is not in "
            f"clustering.algorithms {clustering['algorithms']}"
        )
    if selected["k"] not in clustering["k"]:
        raise HetcvError(
            f"clustering.selected.k: {selected['k']} is not in clustering.k {clustering['k']}"
        )
    if clustering["within"] == "class" and study.config["metric"]["classification"] == "auroc":
        raise HetcvError(
            "metric.classification: auroc is undefined in the one-class clusters of "
            "clustering.within: class; choose accuracy or balanced_accuracy, or within: all"
        )
    for name in study.analysed:
        task = study.dataset(name)["task"]
        if clustering["within"] == "class" and task != "classification":
            raise HetcvError(
                f"clustering.within: 'class' needs a classification task; "
                f"datasets.{name}.task is {task}"
            )
        smallest_fold, at_n = study.smallest_fold[name]
        if max(clustering["k"]) >= smallest_fold:
            raise HetcvError(
                f"clustering.k: k={max(clustering['k'])} is not smaller than the smallest "
                f"held-out fold of datasets.{name} ({smallest_fold} samples at n={at_n})"
            )


# ---------------------------------------------------------------------------------------------
# Each rule's params: the config slice that affects its result, and nothing else.


def one_of(names) -> str:
    """A wildcard constraint matching exactly one of ``names``.

    Parameters
    ----------
    names : iterable of str
        The allowed values (dataset names may hold ``.`` or ``@``, which are escaped).

    Returns
    -------
    str
        A regular expression; longest names first, so that ``a@b`` is not read as ``a``; one
        that matches nothing when there are no names.
    """
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True)) or "(?!)"
