"""Process-wide engine settings: the GEMM and the XLA CPU flags (measured per machine by ``engine.tune``), and
the persistent compile cache.

Nothing happens on import: an entry point calls ``configure()`` before JAX starts its backend (flags set later
are ignored). A flag the user set in ``XLA_FLAGS`` wins over ours; ``NORMLAB_ENGINE=gemm=G,flags=F`` wins over
the tuned choice.
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from normlab.engine.settings import FLAG_SETS, GEMMS, OVERRIDE, cores
from normlab.errors import ConfigError

USER_FLAGS = "NORMLAB_USER_XLA_FLAGS"  # XLA_FLAGS as the user set them, kept for the processes we start


@dataclass(frozen=True)
class Engine:
    gemm: str = "xla"                    # GEMMS
    flags: str = "no-library-fusion"     # FLAG_SETS
    source: str = "default"              # "tuned", NORMLAB_ENGINE, or "default" (not tuned here)

    def __post_init__(self):
        if self.gemm not in GEMMS:
            raise ConfigError(f"{OVERRIDE}: unknown gemm {self.gemm!r}; choose from {', '.join(GEMMS)}")
        if self.flags not in FLAG_SETS:
            raise ConfigError(f"{OVERRIDE}: unknown flags {self.flags!r}; choose from {', '.join(FLAG_SETS)}")

    def describe(self) -> dict:
        return {"gemm": self.gemm, "flags": self.flags, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "source": self.source}


def parse(text: str) -> Engine:
    """``gemm=mkl,flags=library-dots`` (either may be left out) as an ``Engine``."""
    fields = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, value = item.partition("=")
        if not equals or name.strip() not in ("gemm", "flags"):
            raise ConfigError(f"{OVERRIDE}: expected gemm=NAME,flags=NAME, got {text!r}")
        fields[name.strip()] = value.strip()
    return Engine(**fields, source=OVERRIDE)


def configure(compile_cache: bool = False, tune_if_missing: bool = False, say=print, load_gemm: bool = True) -> Engine:
    """The engine's settings for this process (the processes it starts choose their own the same way).

    ``tune_if_missing``: measure this machine first (``engine.tune``, about a minute, once) when it has no tuned
    choice yet; otherwise an untuned machine runs the defaults. A GEMM that cannot load here falls back to XLA's.
    Without ``load_gemm`` (commands that run no model: ``data``, ``report``) JAX and the BLAS stay unloaded.
    """
    from normlab.engine import applied
    engine = chosen(tune_if_missing, say)
    set_xla_flags(FLAG_SETS[engine.flags])
    if load_gemm and (engine.gemm != "xla" or "normlab.engine.gemm" in sys.modules):
        from normlab.engine import gemm
        from normlab.engine.build import BuildError
        try:
            gemm.use(engine.gemm)
        except (OSError, BuildError) as error:
            say(f"normlab: the {engine.gemm} GEMM is unavailable here ({error}); using XLA's")
            engine = Engine("xla", engine.flags, f"{engine.source}; {engine.gemm} unavailable")
    applied.engine = engine.describe()
    if compile_cache:
        enable_compile_cache()
    return engine


def chosen(tune_if_missing: bool = False, say=print) -> Engine:
    if text := os.environ.get(OVERRIDE, "").strip():
        return parse(text)
    from normlab.engine import tune
    entry = tune.cached()
    if entry is None and tune_if_missing:
        try:
            entry = tune.tune(say)[cores()]
        except (tune.TuneError, OSError) as error:  # a child failed, a read-only cache: the job goes on
            say(f"normlab: tuning failed ({error}); running the default engine")
    return Engine(entry["gemm"], entry["flags"], "tuned") if entry else Engine()


def set_xla_flags(flags: dict[str, str], environ=os.environ) -> None:
    user = environ.setdefault(USER_FLAGS, environ.get("XLA_FLAGS", ""))
    ours = [f"--{name}={value}" for name, value in flags.items() if f"--{name}=" not in user]
    environ["XLA_FLAGS"] = " ".join(filter(None, [user, *ours]))


def compile_cache_dir() -> Path:
    """Per number of usable cores: XLA splits loops by the threads it has, so a program compiled in a one-core
    worker would run slower (and round differently) in a two-core process, and vice versa."""
    from normlab.files import cache_root
    return cache_root() / "xla" / f"cores-{cores()}"


def enable_compile_cache(path: Path | None = None) -> Path:
    """Keep compiled programs on disk, so a second ``normlab reproduce`` skips compilation."""
    import jax
    path = path or compile_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
