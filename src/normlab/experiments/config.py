"""The typed configuration of a study, checked before any work starts."""

import dataclasses
from dataclasses import dataclass

from normlab.errors import ConfigError
from normlab.nn.models import check_preset
from normlab.train.loop import OPTIMIZERS, TrainConfig, default_seeds_per_program

DEFAULT_PRESETS = ("baseline", "bn-after", "bn-before")


@dataclass(frozen=True)
class StudyConfig:
    presets: tuple[str, ...] = DEFAULT_PRESETS
    seeds: int = 5               # seeds first_seed, first_seed + 1, ...
    first_seed: int = 0
    epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 32
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    subset: int | None = None    # train on the first N of the 55,000 training images (quick looks, tests)
    optimizer: str = "sgd"       # sgd | momentum | adam
    optimizer_momentum: float = 0.9
    seeds_per_program: int | None = None  # vmap width; None: measured default (1 on CPU, all on accelerators)
    workers: int | None = None   # training processes; None: measured default (one per core on CPU, else 1)

    def __post_init__(self):
        for name in self.presets:
            check_preset(name)
        if not self.presets:
            raise ConfigError("no presets to run")
        rules = [
            ("seeds", self.seeds >= 1, "at least 1"),
            ("first_seed", self.first_seed >= 0, ">= 0"),
            ("epochs", self.epochs >= 1, "at least 1"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("bn_momentum", 0 <= self.bn_momentum < 1, "in [0, 1)"),
            ("bn_epsilon", self.bn_epsilon > 0, "> 0"),
            ("subset", self.subset is None or self.subset >= 1, "at least 1"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            ("optimizer_momentum", 0 <= self.optimizer_momentum < 1, "in [0, 1)"),
            ("seeds_per_program", self.seeds_per_program is None or self.seeds_per_program >= 1, "at least 1"),
            ("workers", self.workers is None or self.workers >= 1, "at least 1"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def program_width(self) -> int:
        """Seeds per compiled program, resolved (see ``train.loop.default_seeds_per_program``)."""
        width = self.seeds_per_program if self.seeds_per_program is not None else default_seeds_per_program()
        return self.seeds if width <= 0 else min(width, self.seeds)

    @property
    def worker_count(self) -> int:
        """Training processes, resolved (see ``experiments.workers.default_workers``)."""
        from normlab.experiments.workers import default_workers
        return self.workers if self.workers is not None else default_workers()

    def train_config(self) -> TrainConfig:
        return TrainConfig(self.learning_rate, self.batch_size, self.epochs, self.optimizer, self.optimizer_momentum)

    def identity(self, preset: str) -> dict:
        """What a checkpoint of ``preset`` must match to be resumed: everything but the epoch count and workers."""
        fields = dataclasses.asdict(self)
        del fields["presets"], fields["epochs"], fields["workers"]
        return {"preset": preset, **fields}

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "presets": list(self.presets), "validation": "first 5,000 training images"}

    @classmethod
    def from_dict(cls, fields: dict) -> "StudyConfig":
        """The inverse of ``as_dict`` (how a worker process receives its study)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if k == "presets" else v for k, v in fields.items() if k in names})
