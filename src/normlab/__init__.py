"""normlab: batch normalization, reproduced, measured and explained.

The public API (``docs/api.md``)::

    import normlab
    normlab.model("bn-after").summary()
    results = normlab.reproduce(seeds=5)      # the study; results.plot(), results.history, results.to_pandas()

Importing normlab changes nothing in the process and imports nothing heavy: each name loads on first use, and
every command sets the engine's XLA flags (``normlab.runtime``) before JAX starts its backend.
"""

import sys
import types

__version__ = "0.1.0"
# public name -> the module of normlab.api that defines it, in the order docs/api.md lists them
_API = {"model": "model", "config": "running", "data": "running", "train": "running", "reproduce": "running",
        "run": "running", "diagnose": "running", "load": "results", "report": "running", "export": "files",
        "evaluate": "files", "Model": "model", "Dataset": "running", "Results": "results", "Sweep": "results",
        "Diagnosis": "results"}
__all__ = list(_API)


class _Package(types.ModuleType):
    """``normlab.train`` is the function, though the subpackage ``normlab/train/`` shares its name (and so do
    ``data`` and ``report``): Python's import sets every submodule it loads as an attribute of its package,
    which would hide the function. The subpackages stay importable as ever (``from normlab.train.loop import fit``)."""

    def __setattr__(self, name: str, value) -> None:
        if not (name in _API and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _API:
        import importlib
        return getattr(importlib.import_module(f"normlab.api.{_API[name]}"), name)
    raise AttributeError(f"module 'normlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
