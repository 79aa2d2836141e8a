"""Where a built-in dataset's files are looked for: the folder the user named, else the cache, else a system copy.

An explicit folder (argument, else ``$NORMLAB_DATA_DIR``) is the only candidate: the user asked for it, so a
missing file there is their error to hear about, not a reason to quietly read data from elsewhere. One folder can
serve several datasets: a subfolder named after the dataset (``DIR/mnist``) is used when there is one, since
MNIST, KMNIST and Fashion-MNIST ship files of the same names.
"""

import os
from pathlib import Path
from typing import Callable

from normlab.errors import DataError
from normlab.files import cache_root

ARG, ENV = "the data folder given", "$NORMLAB_DATA_DIR"  # no option names: the CLI is not the only caller


def cache_dir(name: str) -> Path:
    """Where downloads of dataset ``name`` go: ``files.cache_root() / name``."""
    return cache_root() / name


def _own(folder: Path, name: str) -> Path:
    return folder / name if (folder / name).is_dir() else folder


def candidate_dirs(name: str, data_dir: str | Path | None = None,
                   system: tuple[Path, str] | None = None) -> list[tuple[Path, str]]:
    """The folders to search, in order, each with where it came from; ``system`` is a package's (folder, name)."""
    if data_dir is not None:
        return [(_own(Path(data_dir).expanduser(), name), ARG)]
    if env := os.environ.get("NORMLAB_DATA_DIR"):
        return [(_own(Path(env).expanduser(), name), ENV)]
    dirs = [(cache_dir(name), "user cache")]
    if system:
        dirs.append((system[0], f"Debian package {system[1]}"))
    return dirs


def elsewhere(holding: str, package: str | None = None) -> str:
    """How to get the data without a download, for the end of a message."""
    apt = f", or `apt-get install {package}`" if package else ""
    return f"give a data folder holding {holding} (or set {ENV} to one){apt}"


def search(dirs: list[tuple[Path, str]], lacks: Callable[[Path], str | None], what: str) -> Path | None:
    """The first folder of ``dirs`` for which ``lacks`` (what is missing there) is None; else None. An explicit
    folder that is not one, or lacks something, is an error."""
    for folder, origin in dirs:
        explicit = origin in (ARG, ENV)
        if explicit and not folder.is_dir():
            raise DataError(f"{folder} (from {origin}) is {'not a folder' if folder.exists() else 'missing'}; "
                            f"point {origin} at the folder holding {what}")
        missing = lacks(folder)
        if missing is None:
            return folder
        if explicit:
            raise DataError(f"{folder} (from {origin}) lacks {missing}; "
                            f"put the files there, or give no folder to search the default ones")
    return None


def command(name: str) -> str:
    """The command that downloads dataset ``name``: `normlab data` alone fetches the default one."""
    return "normlab data" if name == "fashion-mnist" else f"normlab data {name}"


def not_found(name: str, title: str, dirs: list[tuple[Path, str]], elsewhere_: str) -> DataError:
    """The error for data found nowhere while downloads are off."""
    looked = ", ".join(str(d) for d, _ in dirs)
    return DataError(f"{title} not found in {looked}; run `{command(name)}` to download it, or {elsewhere_}")
