"""A stand-in for JAX in the PyTorch peer's process, so its measured memory is PyTorch's alone.

The PyTorch mirror reads each layer kind's record (``layer.Kind``), and the kinds' modules import JAX for their
builders: 118 MiB of jaxlib resident in a process that never runs JAX (2-core EPYC, jaxlib 0.10.2). Installed
before normlab's kinds are imported, ``install`` makes ``jax``, ``jaxlib`` and ``optax`` modules whose every
attribute is another stand-in: importing a kind's module works (its module-level code only names JAX functions, and
``engine.gemm`` registers its custom call with stand-ins), and the translations it declares never touch them.
"""

import importlib.abc
import importlib.machinery
import sys
import types

ABSENT = ("jax", "jaxlib", "optax")


class _Absent(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _Absent(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value

    def __call__(self, *args, **kwargs):
        return _Absent(f"{self.__name__}()")

    def __getitem__(self, key):
        return self

    def __or__(self, other):  # ``jax.Array | None`` in an annotation
        return self

    __ror__ = __or__


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Absent(spec.name)

    def exec_module(self, module) -> None:
        module.__path__ = []


def install() -> None:
    """From now on this process imports stand-ins for JAX; one that already did keeps the real thing."""
    if not any(name in sys.modules for name in ABSENT):
        sys.meta_path.insert(0, _Finder())
