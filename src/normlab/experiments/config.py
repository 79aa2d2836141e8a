"""The typed configuration of a study, checked before any work starts."""

import dataclasses
import math
import numbers
import typing
from dataclasses import dataclass

import numpy as np

from normlab.data import registry as datasets
from normlab.errors import ConfigError, NormlabError, shown
from normlab.experiments.defaults import default
from normlab.experiments.workers import default_workers
from normlab.nn import spec as layer_specs
from normlab.nn.models import NAME, Model, build, check_batch, check_name, presets, unknown, with_classes
from normlab.nn.registry import KINDS
from normlab.train.loop import OPTIMIZERS, TrainConfig
from normlab.train.preprocess import AUGMENTATIONS, NORMALIZATIONS

FLOAT32_MAX = float(np.finfo(np.float32).max)  # training runs in float32: a larger value would become inf
# More images than any training split normlab holds in memory; the data's own size is checked when it is loaded
# (``check_fits``): a batch or subset larger than the training split is a typo, not a study.
MAX_IMAGES = 1 << 26
MAX_PATH = 4096  # Linux's PATH_MAX
MAX_SEEDS = 1000  # an accelerator trains all seeds in one program: 1,000 MLPs are ~1 GB of float32 weights alone
SEED_LIMIT = 2**32  # seeds become uint32 PRNG seeds

INTS = {  # inclusive ranges; the upper bounds keep memory and time bounded whatever a file or option says
    "seeds": (1, MAX_SEEDS, ""),
    "first_seed": (0, SEED_LIMIT - 1, " (seeds are uint32)"),
    "epochs": (1, 100_000, ""),
    "batch_size": (1, MAX_IMAGES, ""),
    "subset": (1, MAX_IMAGES, ""),
    "val_split": (1, MAX_IMAGES, ""),
    "seeds_per_program": (1, MAX_SEEDS, ""),  # more than ``seeds`` means all of them (``reproduce.jobs``)
    "workers": (1, 1024, ""),
    "lr_batch": (1, MAX_IMAGES, ""),
    "devices": (1, 64, " (each holds a copy of the training set)"),
}
_POSITIVE = (f"(0, {FLOAT32_MAX!r}]", lambda x: x > 0)
_FRACTION = ("[0, 1)", lambda x: 0 <= x < 1)
FLOATS = {"learning_rate": _POSITIVE, "bn_momentum": _FRACTION, "bn_epsilon": _POSITIVE,
          "optimizer_momentum": _FRACTION}


def _real(value) -> float | None:
    """``value`` as a float if it is a real number (a bool is not), else None; too large for a float is inf."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def check(name: str, value):
    """``value`` as field ``name`` of a StudyConfig holds it (ints become floats where floats belong, a list of
    presets a tuple), or a one-line ConfigError with the allowed range.

    The one place a value is validated, whether it comes from a study file, a command-line option or Python.
    """
    if name == "presets":  # whether each names a model is checked with the study's models (``StudyConfig``)
        names = tuple(value) if isinstance(value, (tuple, list)) else ()
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
            raise ConfigError(f"presets must be a non-empty list of distinct preset names (such as "
                              f"{', '.join(list(presets())[:3])}, or a [models.NAME] of the study), got {shown(value)}")
        return names
    if name == "models":
        return check_models(value)
    if name == "data":
        try:
            return datasets.check(value)
        except NormlabError as error:
            raise ConfigError(str(error)) from None
    if name in ("shuffle", "bn_sync"):
        if type(value) is not bool:
            raise ConfigError(f"{name} must be true or false, got {shown(value)}")
        return value
    if name == "init_from":
        if value is not None and not (isinstance(value, str) and 0 < len(value) <= MAX_PATH and "\0" not in value):
            raise ConfigError(f"init_from must be unset or the path of a .keras or .safetensors model file, "
                              f"got {shown(value)}")
        return value
    if name == "normalize":
        if not isinstance(value, str) or value not in NORMALIZATIONS:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {shown(value)}")
        return value
    if name == "augment":  # kept in the order they are applied: the same augmentation is one configuration
        names = tuple(value) if isinstance(value, (tuple, list)) else None
        if (names is None or not all(isinstance(n, str) and n in AUGMENTATIONS for n in names)
                or len(set(names)) < len(names)):
            raise ConfigError(f"augment must be a list of distinct names of {', '.join(AUGMENTATIONS)} (or []), "
                              f"got {shown(value)}")
        return tuple(n for n in AUGMENTATIONS if n in names)
    if name == "optimizer":
        if not isinstance(value, str) or value not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {shown(value)}")
        return value
    if name in FLOATS:
        interval, test = FLOATS[name]
        x = _real(value)
        if x is None or not math.isfinite(x) or abs(x) > FLOAT32_MAX or not test(float(np.float32(x))):
            raise ConfigError(f"{name} must be a number in {interval} as float32, got {shown(value)}")
        return x
    low, high, note = INTS[name]
    if value is None and name in OPTIONAL:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        unset = "unset or " if name in OPTIONAL else ""
        raise ConfigError(f"{name} must be {unset}an int in {low}..{high}{note}, got {shown(value)}")
    return int(value)


MAX_MODELS = 100


def check_models(table, source: str = "") -> dict[str, dict]:
    """A study's own models, ``{name: {"layers": [layer table, ...]}}``; each is checked now, built with its
    study's settings later. ``source`` (a file name) begins every error."""
    if not isinstance(table, dict) or len(table) > MAX_MODELS:
        raise ConfigError(f"{source}[models] must be a table of at most {MAX_MODELS} models, [models.NAME], "
                          f"got {shown(table)}")
    checked = {}
    for name, model in table.items():
        where = f"{source}[models.{name if isinstance(name, str) and NAME.fullmatch(name) else shown(name)}]"
        check_name(name, where)
        if name in presets():
            raise ConfigError(f"{where}: {name} is a built-in preset; give your model another name")
        if not isinstance(model, dict) or set(model) != {"layers"}:
            raise ConfigError(f"{where} must hold exactly one key, layers = [...], got {shown(model)}")
        layer_specs.check(with_classes(model["layers"], 2), where)  # any count: the data's is known when it is built
        checked[name] = {"layers": list(model["layers"])}
    return checked


@dataclass(frozen=True)
class StudyConfig:
    """A study's settings; the defaults are the seed study's (``defaults``), the one place they are written."""
    presets: tuple[str, ...] = tuple(default("presets"))
    seeds: int = default("seeds")  # seeds first_seed, first_seed + 1, ...
    first_seed: int = default("first_seed")
    epochs: int = default("epochs")
    learning_rate: float = default("learning_rate")
    batch_size: int = default("batch_size")
    bn_momentum: float = default("bn_momentum")
    bn_epsilon: float = default("bn_epsilon")
    # The dataset: a name (``data.registry``: fashion-mnist, mnist, cifar10, ...) or the path of an .npz file or an
    # image folder; its validation split is its own, else the first ``val_split`` training images (default: the
    # dataset's, 5,000 for the study).
    data: str = default("data")
    val_split: int | None = None
    subset: int | None = None    # train on the first N of the training images (quick looks, tests)
    optimizer: str = default("optimizer")  # sgd | momentum | adam
    optimizer_momentum: float = default("optimizer_momentum")
    seeds_per_program: int | None = None  # vmap width; None: measured default (1 on CPU, all on accelerators)
    workers: int | None = None   # training processes; None: measured default (one per core on CPU, else 1)
    models: dict = dataclasses.field(default_factory=dict)  # the study's own, [models.NAME]: {"layers": [...]}
    # Goyal et al. 2017's linear scaling rule: learning_rate is meant for batches of lr_batch and each run uses
    # learning_rate * batch_size / lr_batch, so a batch-size sweep compares equal progress per epoch. None: as is.
    lr_batch: int | None = None
    shuffle: bool = True  # False: batches in the data's order every epoch, as Keras' fit(shuffle=False)
    # A .keras or .safetensors model (``normlab export``) whose weights every seed starts from instead of drawn ones.
    init_from: str | None = None
    devices: int = 1      # > 1: data parallel, each batch split over that many devices (``train.parallel``)
    bn_sync: bool = True  # ... batch norm's statistics over the whole batch (SyncBatchNorm), else per device
    # The model's input (``train.preprocess``): "per_channel" normalizes each channel by the training images'
    # mean and std; augment, on training batches only: "crop4" (random crop of the image padded by 4), "flip".
    normalize: str = "none"
    augment: tuple[str, ...] = ()

    def __post_init__(self):
        for f in dataclasses.fields(self):  # normalized in place, so equal configs compare and serialize equal
            object.__setattr__(self, f.name, check(f.name, getattr(self, f.name)))
        parallel = self.train_config().parallel
        for preset in self.presets:  # an unknown name, a model whose shapes do not fit or an undefined batch
            model = self.model(preset)
            check_batch(model, self.batch_size)
            if parallel is not None:
                parallel.check(model, self.batch_size)
        if not self.step_size <= FLOAT32_MAX:
            raise ConfigError(f"learning_rate * batch_size / lr_batch is {self.step_size:g}, beyond float32")
        last = self.first_seed + self.seeds - 1
        if last >= SEED_LIMIT:
            raise ConfigError(f"first_seed + seeds - 1 must be below 2**32 (seeds are uint32), got {last}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def worker_count(self) -> int:
        """Training processes, resolved (see ``experiments.workers.default_workers``); data parallel training runs
        one job at a time, here, on all the devices."""
        if self.devices > 1:
            return 1
        return self.workers if self.workers is not None else default_workers()

    @property
    def step_size(self) -> float:
        """The learning rate each run uses: ``learning_rate``, scaled by the batch size when ``lr_batch`` is set."""
        return self.learning_rate if self.lr_batch is None else self.learning_rate * self.batch_size / self.lr_batch

    def train_config(self) -> TrainConfig:
        return TrainConfig(self.step_size, self.batch_size, self.epochs, self.optimizer, self.optimizer_momentum,
                           self.shuffle, self.devices, self.bn_sync, self.normalize, self.augment)

    def known_models(self) -> dict[str, list]:
        """name -> layer tables of every model the study knows: its own, then the presets."""
        return {name: table["layers"] for name, table in self.models.items()} | presets()

    def model(self, preset: str) -> Model:
        """The preset or study model of that name; a layer of a kind that takes the study-wide ``bn_momentum`` and
        ``bn_epsilon`` (``Kind.study_bn``: batch norm) gets them where it does not set its own."""
        known = self.known_models()
        if preset not in known:
            raise unknown(preset, known)
        study_wide = {kind: {"momentum": self.bn_momentum, "epsilon": self.bn_epsilon}
                      for kind, record in KINDS.items() if record.study_bn}
        try:
            return build(preset, known[preset], study_wide, data=self.shape)
        except ConfigError as error:
            if preset in self.models:
                raise
            image = "x".join(map(str, self.shape.image))
            raise ConfigError(f"{error} (the preset {preset} does not fit {self.data}'s {image} images: choose "
                              f"another dataset, or write a model of your own)") from None

    @property
    def shape(self):
        """The data's image shape and class count (``data.Shape``), which every model of the study is built for."""
        try:
            return datasets.shape(self.data)
        except NormlabError as error:
            raise ConfigError(str(error)) from None

    def splits(self) -> dict[str, int]:
        """Images per split as this study trains and evaluates: ``subset`` of the training images, validation
        and test as the data has them (``val_split`` moves images from training to validation)."""
        sizes = dict(datasets.splits(self.data))
        if self.val_split is not None:
            sizes = {"train": sizes["train"] + sizes["validation"] - self.val_split, "validation": self.val_split,
                     "test": sizes["test"]}
        if self.subset is not None:
            sizes["train"] = min(sizes["train"], self.subset)
        return sizes

    def identity(self, preset: str, start: str | None = None, data_digest: str | None = None) -> dict:
        """What a checkpoint of ``preset`` must match to be resumed: its model with every option, and every
        setting but the epoch count and workers. ``init_from`` is ``start``, the digest of the weights the run
        starts from (None: each seed's drawn ones), not the file's path (``experiments.reproduce.start``); other
        data than the study's is ``data_digest`` too (``Dataset.digest``), so a file changed under its name since
        is not trained on as if it were the same."""
        fields = {**dataclasses.asdict(self), "init_from": start, "data_sha256": data_digest}
        del fields["presets"], fields["epochs"], fields["workers"], fields["models"]
        if self.devices == 1:  # as checkpoints written before data parallel training say it
            del fields["devices"], fields["bn_sync"]
        if self.data == datasets.DEFAULT and self.val_split is None:  # as checkpoints before other data say it
            del fields["data"], fields["val_split"], fields["data_sha256"]
        if self.normalize == "none":  # as checkpoints written before normalization and augmentation say it
            del fields["normalize"]
        if not self.augment:
            del fields["augment"]
        return {"preset": preset, "model": list(self.model(preset).spec), **fields}

    def as_dict(self) -> dict:
        """The settings as JSON, with what a worker process needs to know of the data without reading it."""
        sizes = self.splits()
        return {**dataclasses.asdict(self), "presets": list(self.presets), "augment": list(self.augment),
                "validation": f"first {sizes['validation']:,} training images",
                "data_shape": [list(self.shape.image), self.shape.classes], "data_splits": sizes}

    @classmethod
    def from_dict(cls, fields: dict) -> "StudyConfig":
        """The inverse of ``as_dict`` (how a worker process receives its study)."""
        if not isinstance(fields, dict):
            raise ConfigError(f"a study configuration must be a dict of fields, got {shown(fields)}")
        if isinstance(fields.get("data"), str) and "data_shape" in fields and "data_splits" in fields:
            try:
                datasets.note(fields["data"], fields["data_shape"], fields["data_splits"])
            except NormlabError as error:
                raise ConfigError(str(error)) from None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in fields.items() if k in names})


def check_fits(config: StudyConfig, dataset) -> None:
    """The study's sizes against the data it loaded (a ``data.Dataset``): one line before any training."""
    n = len(dataset.y_train)
    for name in ("subset", "batch_size"):
        value = getattr(config, name)
        if value is not None and value > n:
            raise ConfigError(f"{name} {value:,} is more than the {n:,} training images of {dataset.name}")
    if dataset.shape != config.shape:
        raise ConfigError(f"{dataset.name} changed since the study was checked: its images are now "
                          f"{dataset.shape.image} in {dataset.shape.classes} classes; start again")


OPTIONAL = {f.name for f in dataclasses.fields(StudyConfig) if type(None) in typing.get_args(f.type)}
