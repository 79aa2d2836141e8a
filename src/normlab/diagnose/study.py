"""A whole diagnosis: every preset of a ``DiagnoseConfig`` trained with the probes, then ``diagnostics.json``,
its figures and its HTML page in the run folder.

Each preset's entry is saved (atomically) as soon as it is done, under ``presets/``; ``resume`` keeps them, so an
interrupted diagnosis loses at most the preset it was training, and refuses other settings than theirs.
"""

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

from normlab import signals
from normlab.diagnose.config import DiagnoseConfig
from normlab.diagnose.measure import Probes
from normlab.diagnose.run import WATCHED_IMAGES, GRADIENT_IMAGES, Options, diagnose
from normlab.errors import ConfigError
from normlab.experiments.config import StudyConfig
from normlab.experiments.provenance import provenance
from normlab.experiments.reproduce import data_record, recorded_preprocessing, subset
from normlab.files import MiB, FileProblem, read_json, write_bytes, write_text
from normlab.report.diagnostics_json import MAX_BYTES as MAX_DIAGNOSTICS_BYTES, preset_problem
from normlab.report.literal import path_component
from normlab.train.checkpoint import differing, other_configuration

MAX_ENTRY_BYTES = 256 * MiB


@dataclasses.dataclass(frozen=True)
class Where:
    """The ``job`` of a diagnosis' ``EpochEvent``s: what `report.tensorboard.LiveTensorBoard` files them under."""
    preset: str
    folder: Path


def config_record(study: StudyConfig, diagnosis: DiagnoseConfig) -> dict:
    """``diagnostics.json``'s ``config``: the training settings, what was measured and on which images."""
    # normalize and augment: always off in a diagnosis (``api.diagnose``), and absent from those written before them
    left_out = ("presets", "seeds", "workers", "seeds_per_program", "normalize", "augment")
    train = {k: v for k, v in study.as_dict().items() if k not in left_out}
    return {**train, **diagnosis.as_dict(),
            "probe": f"validation images 0..{WATCHED_IMAGES - 1}, BN in training mode (statistics of those "
                     f"{WATCHED_IMAGES:,})",
            "gradient_histograms": f"training images 0..{GRADIENT_IMAGES - 1}",
            "precise_images": f"training images 0..{diagnosis.precise_batches * study.batch_size - 1} (at most the "
                              f"full batches of the training set)"}


def _identity(study: StudyConfig, diagnosis: DiagnoseConfig, preset: str) -> dict:
    """What a saved preset entry must match to be kept on resume."""
    return {**study.identity(preset), "epochs": study.epochs, "diagnose": {**diagnosis.as_dict(), "presets": None}}


def _saved(path: Path, max_bytes: int, warn: Callable[[str], None], then: str) -> dict | None:
    """The JSON object ``path`` holds; None if there is none, or if it is damaged (said through ``warn``, with
    what happens ``then``)."""
    if not os.path.lexists(path):
        return None
    try:
        record = read_json(path, max_bytes)
    except FileProblem as problem:
        warn(f"warning: ignoring {path.name} ({problem}); {then}")
        return None
    if not isinstance(record, dict):
        warn(f"warning: ignoring {path.name} (not a JSON object); {then}")
        return None
    return record


def _kept(out: Path, study: StudyConfig, diagnosis: DiagnoseConfig, warn: Callable[[str], None]) -> dict:
    """The presets a resumed diagnosis keeps, by name: those saved under ``presets/`` with these very settings.

    Finished work measured with other settings is refused before anything is replaced, as ``checkpoint.latest``
    refuses another configuration's checkpoint: kept beside new entries, or replaced by them, it would mix two
    configurations in diagnostics.json, its figures and TensorBoard. A damaged entry is only done again.
    """
    finished = out / "diagnostics.json"
    record = _saved(finished, MAX_DIAGNOSTICS_BYTES, warn, "it is written again")
    if record is not None and isinstance(record.get("config"), dict):
        if names := differing(config_record(study, diagnosis), record["config"]):
            raise ConfigError(other_configuration(finished, names))
    files = {f"{path_component(preset)}.json": preset for preset in diagnosis.presets}
    if (out / "presets").is_dir():
        for path in sorted((out / "presets").glob("*.json")):
            if path.name not in files:
                raise ConfigError(other_configuration(path, ["presets"]))
    kept = {}
    for name, preset in files.items():
        path = out / "presets" / name
        record = _saved(path, MAX_ENTRY_BYTES, warn, "its preset is diagnosed again")
        if record is None:
            continue
        if not (isinstance(record.get("identity"), dict) and isinstance(record.get("result"), dict)):
            warn(f"warning: ignoring {path.name} (no identity and result); its preset is diagnosed again")
            continue
        if names := differing(_identity(study, diagnosis, preset), record["identity"]):
            raise ConfigError(other_configuration(path, names))
        if problem := preset_problem(record["result"]):
            warn(f"warning: ignoring {path.name} (its result {problem}); its preset is diagnosed again")
            continue
        kept[preset] = record["result"]
    return kept


def run_diagnosis(study: StudyConfig, diagnosis: DiagnoseConfig, data, out: Path, resume: bool,
                  on_epoch=None, on_histograms=None, say: Callable[[str], None] = print) -> dict:
    """Diagnose every preset on ``data`` (a ``Dataset``), write ``out/diagnostics.json`` (with the data as
    results.json records them), ``out/figures/*.png`` and ``out/report.html``."""
    from normlab.report.diagnostics import figures, write_page
    from normlab.report.diagnostics_json import SCHEMA
    options = Options(Probes(diagnosis.every, diagnosis.etas, diagnosis.unit), diagnosis.precise_batches)
    arrays = subset(vars(data), study.subset)
    seeds = list(range(study.first_seed, study.first_seed + diagnosis.seeds))
    kept = _kept(out, study, diagnosis, say) if resume else {}
    entries = {}
    for preset in diagnosis.presets:
        model = study.model(preset)
        path = out / "presets" / f"{path_component(preset)}.json"
        identity = _identity(study, diagnosis, preset)
        if preset in kept:
            say(f"{preset}: kept from {path.parent.name}/{path.name}")
            entries[preset] = kept[preset]
            continue
        where = Where(preset, out)
        entries[preset] = diagnose(
            model, arrays, seeds, study.train_config(), options,
            None if on_epoch is None else lambda event: on_epoch(dataclasses.replace(event, job=where)),
            None if on_histograms is None else lambda seed, epoch, hists: on_histograms(where, seed, epoch, hists))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"identity": identity, "result": entries[preset]}, allow_nan=False))
    signals.safe_point("report")
    with signals.held():
        diagnostics = {"schema": SCHEMA, "provenance": provenance(), "config": config_record(study, diagnosis),
                       "data": data_record(data, study.subset), "preprocessing": recorded_preprocessing(data, study),
                       "presets": entries}
        write_text(out / "diagnostics.json", json.dumps(diagnostics, indent=1, allow_nan=False))
        (out / "figures").mkdir(exist_ok=True)
        pngs = figures(diagnostics)
        for name, png in pngs.items():
            write_bytes(out / "figures" / name, png)
        write_page(diagnostics, out / "report.html", pngs)
    return diagnostics
