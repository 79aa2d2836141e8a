"""The one source of defaults: the seed study (``studies/seed.toml``), which ``normlab reproduce`` runs.

Every other study starts from its ``[config]``; ``StudyConfig``'s field defaults and the CLI's help texts read
them here. Imports nothing heavy, so ``normlab --help`` stays fast.
"""

import functools
import tomllib
from importlib import resources


@functools.cache
def _seed_study() -> dict:
    return tomllib.loads(resources.files("normlab.studies").joinpath("seed.toml").read_text(encoding="utf-8"))


def seed_config() -> dict:
    """The seed study's ``[config]`` table as written (lists, not tuples)."""
    return _seed_study()["config"]


def default(name: str):
    return seed_config()[name]


def diagnose_default(name: str):
    """`normlab diagnose`'s defaults: the seed study's ``[diagnose]`` table."""
    return _seed_study()["diagnose"][name]
