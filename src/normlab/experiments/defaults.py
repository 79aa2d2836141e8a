"""The one source of defaults: the seed study (``studies/seed.toml``), which ``normlab reproduce`` runs.

Every other study starts from its ``[config]``; ``StudyConfig``'s field defaults and the CLI's help texts read
them here. Imports nothing heavy, so ``normlab --help`` stays fast.
"""

import functools
import tomllib
from importlib import resources


@functools.cache
def seed_config() -> dict:
    """The seed study's ``[config]`` table as written (lists, not tuples)."""
    return tomllib.loads(resources.files("normlab.studies").joinpath("seed.toml").read_text(encoding="utf-8"))["config"]


def default(name: str):
    return seed_config()[name]
