"""The data a results.json says its runs used, as every report's header shows it, and whether the runs are the
published study: the only runs its Keras numbers may stand beside.

A file from before runs recorded their data (no ``data`` key) stands for Fashion-MNIST as the study splits it, the
only data normlab could read then, with its config's ``subset`` and ``val_split`` (``legacy``); whether its files
were verified was not recorded. Texts here are plain: each medium shows them literally (``literal.markdown``,
``html.escape``, ``files.one_line``), since names and paths come from the user's files.
"""

from collections import Counter

from normlab.data.fashion_mnist import SPEC as STUDY
from normlab.data.registry import BUILTIN
from normlab.report.results_json import runs
from normlab.report.summary import REFERENCE_VAL_ACCURACY

STUDY_DATA = STUDY.name
STUDY_SPLITS = STUDY.splits  # 55,000 / 5,000 / 10,000
PIXELS = 1 / 255  # the study's preprocessing, Keras' x / 255.0 of uint8 images
# The published Keras run's settings, by the key results.json's config gives them: what every results.json has
# recorded since the first.
STUDY_SETTINGS = {"learning_rate": 1e-3, "batch_size": 32, "optimizer": "sgd", "bn_momentum": 0.99,
                  "bn_epsilon": 1e-3}
# Settings that came later, each with the study's value; a file without the key is from when that was the only one.
LATER_SETTINGS = {"data": STUDY_DATA, "subset": None, "shuffle": True, "init_from": None, "lr_batch": None}
SUBSET = "a subset of the training images"


def legacy(config: dict) -> dict:
    """What a results.json without ``data`` trained on: the study's Fashion-MNIST, split and cut as its config says
    (``load_results`` has checked that ``subset`` and ``val_split`` are counts or null, ``data`` a name)."""
    validation = config.get("val_split") or STUDY_SPLITS["validation"]
    train = max(0, STUDY_SPLITS["train"] + STUDY_SPLITS["validation"] - validation)
    subset = config.get("subset")
    return {"name": config.get("data") or STUDY_DATA, "source": None, "sha256": None, "verified": None,
            "image_shape": list(STUDY.shape.image), "classes": STUDY.shape.classes,
            "class_names": list(STUDY.class_names), "dtype": "uint8",
            "splits": {"train": train if subset is None else min(train, subset), "validation": validation,
                       "test": STUDY_SPLITS["test"]}, "subset": subset}


def recorded(results: dict) -> tuple[dict, dict]:
    """The ``data`` and ``preprocessing`` of a checked results dict; those of ``legacy`` for an older file."""
    if results.get("data") is not None:
        return results["data"], results["preprocessing"]
    config = results.get("config")
    return legacy(config if isinstance(config, dict) else {}), {"scale": PIXELS}


def _is_pixels(scale: float) -> bool:
    return abs(scale * 255 - 1) < 1e-12


def _numbers(values: list) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def describe(results: dict) -> dict[str, str]:
    """The header every report shows: what the data were ("data"), the images of each split the runs used
    ("images": a subset's count, not the dataset's) and what became of a pixel ("preprocessing")."""
    data, preprocessing = recorded(results)
    if data["verified"] is None:
        what = f"{data['name']} (a results.json from before runs recorded their data)"
    else:
        source = (f" from {data['source']}" if data["name"] not in BUILTIN and data["source"]
                  and data["source"] != data["name"] else "")  # a file's name is its path already
        check = ", verified" if data["verified"] else ", not verified" if data["name"] in BUILTIN else ""
        what = f"{data['name']}{source}{check} (content SHA-256 {data['sha256'][:12]}…)"
    splits = data["splits"]
    train = f"{splits['train']:,} training" + (" (a subset)" if data["subset"] is not None else "")
    scale = preprocessing["scale"]
    pixels = ("pixels / 255" if _is_pixels(scale) else "as given" if scale == 1 else f"pixels × {scale:g}")
    if preprocessing.get("mean") is not None:
        pixels = (f"({pixels} − mean) / std per channel, mean {_numbers(preprocessing['mean'])}, "
                  f"std {_numbers(preprocessing['std'])}")
    return {"data": what,
            "images": f"{train}, {splits['validation']:,} validation, {splits['test']:,} test",
            "preprocessing": f"{pixels} ({data['dtype']} images)"}


def one_line(results: dict) -> str:
    """``describe`` as one line: the terminal's, and each results file's in a report over several."""
    return "; ".join(f"{key}: {text}" for key, text in describe(results).items())


def data_lines(results_list: list[dict]) -> list[str]:
    """``one_line`` once per distinct data among ``results_list``; with how many results files each holds when they
    differ, so that runs on other data or a subset are never taken for the study's."""
    counts = Counter(map(one_line, results_list))
    return [text if len(counts) == 1 else f"{text} ({n} results file{'s' * (n > 1)})" for text, n in counts.items()]


def _same(value, study) -> bool:
    """Equal and of the same type: a config's ``1`` is not the study's ``True``, nor ``1.0`` its batch of 1."""
    return type(value) is type(study) and value == study


def differences(results: dict) -> list[str]:
    """How the runs of ``results`` differ from the published study; none when they are that study.

    The Keras numbers (``summary.REFERENCE_VAL_ACCURACY``) describe one run: the study's presets trained on all
    55,000 training images of verified Fashion-MNIST (the first 5,000 of the 60,000 held out for validation),
    pixels / 255, by SGD at learning rate 1e-3, batch 32, shuffled, from drawn weights, with Keras' BN momentum
    0.99 and epsilon 1e-3. Beside any other run a difference from them measures the setup, not normlab (bn-after
    after one epoch on ``--subset 500``: 9.6% validation accuracy, "-72.7 pp" against Keras' 82.3%). So a report
    compares only the study; the epoch count may differ (the comparison leaves the epochs not reached blank).
    """
    data, preprocessing = recorded(results)
    config = results.get("config") if isinstance(results.get("config"), dict) else {}
    found = []
    if data["name"] != STUDY_DATA or data["verified"] is False:
        found.append(f"data other than {STUDY_DATA}" if data["name"] != STUDY_DATA else "data not verified")
    if data["subset"] is not None or data["splits"] != STUDY_SPLITS:
        found.append(SUBSET if data["subset"] is not None else "splits other than the study's "
                     + " / ".join(f"{n:,}" for n in STUDY_SPLITS.values()))
    if set(preprocessing) != {"scale"} or not _is_pixels(preprocessing["scale"]):
        found.append("other preprocessing")
    if others := sorted({run.preset for run in runs(results)} - set(REFERENCE_VAL_ACCURACY)):
        found.append(f"presets without a Keras run ({', '.join(others)})")
    if not config:
        found.append("no settings recorded")
    for key, study in STUDY_SETTINGS.items() if config else ():
        if not _same(config.get(key), study):
            found.append(f"{key} other than {study}" if key in config else f"no {key} recorded")
    for key, study in LATER_SETTINGS.items():
        if key in config and not _same(config[key], study):
            found.append(SUBSET if key == "subset" else f"{key} set" if study is None else
                         f"{key} other than {str(study).lower() if isinstance(study, bool) else study}")
    if not (config.get("val_split") is None or _same(config["val_split"], STUDY_SPLITS["validation"])):
        found.append("val_split other than 5000")
    if config.get("bn_sync") is False and config.get("devices", 1) != 1:
        found.append("BN statistics per device")
    return list(dict.fromkeys(found))


def is_the_study(results: dict) -> bool:
    """Whether the Keras comparison belongs in the report of ``results``: only for the study (``differences``)."""
    return not differences(results)
