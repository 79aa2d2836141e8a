"""A run's settings from a Python caller's arguments: a study's, with options on top, each error naming its option
as the caller spelled it (``command.option_name``). Models given as ``normlab.Model`` objects are placed among
them by ``api.model.placed``."""

import dataclasses
import os

from normlab.api.command import option_name, path_text
from normlab.data.dataset import Dataset  # normlab.Dataset: arrays checked and split, for data=
from normlab.errors import ConfigError, shown


def study_config(study=None, options: dict | None = None, **fixed):
    """The settings of ``study`` (a built-in name, a .toml path, a loaded ``Study`` or a ready ``StudyConfig``;
    the seed study by default) with ``options`` on top, each error naming its option; then ``fixed``, what the
    command decides (one preset, one seed). None leaves a setting as it is."""
    from normlab.experiments.config import StudyConfig
    from normlab.experiments.study import Study, builtin, load, make_config
    if isinstance(study, StudyConfig):
        base = study
    elif isinstance(study, Study):
        base = study.base
    else:
        base = load(path_text(study, "study")).base if study is not None else builtin("seed").base
    given = {field: value for field, value in (options or {}).items() if value is not None}
    # the study's own models first and the presets last: presets name models, built for the data
    for field in sorted(given, key=lambda field: (field != "models", field == "presets")):
        if field == "models":
            base = with_models(base, given[field], option_name(field))
        else:
            value = data_name(given[field]) if field == "data" else given[field]
            base = make_config(base, {field: value}, option_name(field))
    return dataclasses.replace(base, **{k: v for k, v in fixed.items() if v is not None})


def with_models(base, models, where: str):
    """``base`` with ``models`` (``{name: {"layers": [...]}}``, checked as a study file's ``[models.NAME]``) among
    its own; a name the study gives other layers is refused, not redefined."""
    from normlab.experiments.config import check_models
    try:
        models = check_models(models)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    for name, table in models.items():
        if base.models.get(name, table) != table:
            raise ConfigError(f"{where}: the study's model {name} has other layers; give yours another name")
    return dataclasses.replace(base, models={**base.models, **models})


def data_name(value) -> str:
    """How a study's settings name ``value``: a dataset name or path as given; arrays given in Python are checked
    now and held in this process under a name of their digest (``data.registry.remember``)."""
    from normlab.data import registry
    if value is None:
        return registry.DEFAULT
    if isinstance(value, (str, os.PathLike)):
        return path_text(value, "data")
    if isinstance(value, tuple):
        value = registry.load(value)
    if isinstance(value, Dataset):
        return registry.remember(value)
    raise ConfigError(f"{option_name('data')} must be a dataset name, the path of an .npz file or image folder, "
                      f"a tuple (x_train, y_train, x_test, y_test) or a normlab.Dataset, got {shown(value)}")
