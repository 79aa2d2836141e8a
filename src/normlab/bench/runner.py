"""Run every system in its own child process, one after another, and gather their results into ``bench.json``.

Children run strictly in sequence: on a small machine two trainings at once would time each other.
Every child gets the environment as the user set it; normlab's own configure the engine as the CLI does
(``runtime.configure``), so each framework runs as its users run it. The model each child trains is a JSON file
the parent writes (``write_model``): normlab's child rebuilds it from its study, a peer from its layers (``mirror``).
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from normlab import signals
from normlab.errors import ConfigError


class Peer(NamedTuple):
    module: str
    args: tuple[str, ...]
    packages: tuple[str, ...]  # must all be importable, else the peer is skipped


PEERS = {
    "keras-tf": Peer("keras_run", ("--backend", "tensorflow"), ("keras", "tensorflow")),
    "keras-jax": Peer("keras_run", ("--backend", "jax"), ("keras", "jax")),
    "torch": Peer("torch_run", (), ("torch",)),
    "torch-compile": Peer("torch_run", ("--compile",), ("torch",)),
}
STUDY_PRESETS, STUDY_SEEDS, STUDY_EPOCHS = ("baseline", "bn-after", "bn-before"), 5, 10


@dataclass
class BenchConfig:
    preset: str = "bn-after"
    epochs: int = 3
    peers: tuple[str, ...] = tuple(PEERS)
    out: Path = field(default_factory=lambda: Path(f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}"))
    subset: int | None = None
    seeds_vmapped: int = 5
    procs: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    rounds: int = 1  # each system this many times, interleaved; the fastest round counts
    keras_jax_spe: tuple[int, ...] = (1, 32, 256)
    full_study: bool = False
    data_dir: Path | None = None
    study: str | None = None  # a study file (or built-in study) whose [models] and settings define the preset

    def __post_init__(self):
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise ConfigError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
        for name in ("epochs", "rounds", "keras_jax_spe"):
            if min(getattr(self, name) if name == "keras_jax_spe" else [getattr(self, name)], default=0) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.study_config(self.preset)  # an unknown preset, or a study file that is not one, fails here

    def study_config(self, preset: str):
        """The study ``preset`` belongs to (the seed study without ``study``), for that one preset."""
        from dataclasses import replace
        from normlab.experiments.study import builtin, load
        base = (load(self.study) if self.study else builtin("seed")).base
        return replace(base, presets=(preset,), subset=self.subset)


def write_model(config: BenchConfig, preset: str) -> Path:
    """``OUT/models/PRESET.json``: the preset's study config for normlab's child, its layers for a peer's mirror."""
    from normlab.files import write_text
    from normlab.nn.summary import describe
    study = config.study_config(preset)
    path = config.out / "models" / f"{preset}.json"
    write_text(path, json.dumps({"preset": preset, "config": study.as_dict(),
                                 "description": describe(study.model(preset))}, indent=1))
    return path


def missing_packages(peer: Peer) -> list[str]:
    return [p for p in peer.packages if importlib.util.find_spec(p) is None]


def spawn(name: str, module: str, args: list[str], config: BenchConfig, preset: str | None = None,
          epochs: int | None = None) -> dict:
    """Run ``python -m normlab.bench.<module>`` and return its JSON result with ``status`` ok/skipped/failed."""
    out, log = config.out / "results" / f"{name}.json", config.out / "logs" / f"{name}.log"
    model = write_model(config, preset or config.preset)
    argv = [sys.executable, "-m", f"normlab.bench.{module}", "--model", str(model),
            "--epochs", str(epochs or config.epochs), "--out", str(out), *args]
    argv += ["--subset", str(config.subset)] if config.subset else []
    argv += ["--data-dir", str(config.data_dir)] if config.data_dir else []
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log, "w") as log_file:
        with signals.interruptible():  # minutes of a peer's training: a Ctrl-C stops it (run() kills the child)
            rc = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT).returncode
    meta = {"process_s": time.perf_counter() - start, "load_avg_1min_before": load, "log": str(log)}
    if rc != 0 or not out.is_file():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return meta | {"status": "failed", "reason": f"exit code {rc}: {lines[-1] if lines else 'no output'}"}
    result = meta | json.loads(out.read_text())
    if "skipped" in result:
        return result | {"status": "skipped", "reason": result["skipped"]}
    return result | {"status": "ok"}


def setting(name: str, r: dict) -> str:
    """A short description of how the system ran, for the table."""
    if name == "normlab":
        return "1 seed, AOT compile"
    if name == "normlab-vmap":
        return f"{r['seeds']} seeds vmapped, per model"
    if name == "normlab-procs":
        return f"{r['procs']} seeds, 1 process per core, per model"
    if name.startswith("keras"):
        tried = f" of {','.join(r['spe_trials'])}" if r.get("spe_trials") else ""
        return f"spe={r['steps_per_execution']}{tried}, jit={r['jit_compile']}"
    return f"{'compiled' if name == 'torch-compile' else 'eager'}, {r['threads']} threads"


def best_round(results: list[dict]) -> dict:
    """The round with the fastest steady epoch (a failed round fails the system); all rounds' times kept.

    Noise on a shared machine only ever slows a run down, so each system's best round is its closest estimate,
    and the rounds interleave the systems so a slow spell hits them alike.
    """
    if bad := [r for r in results if r["status"] != "ok"]:
        return bad[0]
    best = min(results, key=lambda r: r["epoch_s"])
    return best | ({"epoch_s_rounds": [r["epoch_s"] for r in results]} if len(results) > 1 else {})


def run_bench(config: BenchConfig, note: Callable[[str], None] = print) -> dict:
    """Train every system, write ``bench.json`` and ``bench.png`` into ``config.out``; return the results."""
    from normlab.bench.report import plot_bench
    from normlab.experiments.provenance import provenance
    from normlab.files import write_text
    from normlab.nn.summary import param_counts
    expected_params = param_counts(config.study_config(config.preset).model(config.preset))["total"]
    (config.out / "results").mkdir(parents=True, exist_ok=True)
    (config.out / "logs").mkdir(exist_ok=True)

    plan = [("normlab", "normlab_run", ["--seeds", "1", "--floor"])]
    if config.seeds_vmapped > 1:
        plan.append(("normlab-vmap", "normlab_run", ["--seeds", str(config.seeds_vmapped)]))
    if config.procs > 1:
        plan.append(("normlab-procs", "normlab_run", ["--procs", str(config.procs)]))
    systems = {}
    for name in config.peers:
        peer = PEERS[name]
        if missing := missing_packages(peer):
            systems[name] = {"status": "skipped", "reason": f"not installed: {', '.join(missing)} "
                                                             "(pip install 'normlab[bench]')"}
            note(f"{name}: skipped, {systems[name]['reason']}")
            continue
        spe = ["--spe", ",".join(map(str, config.keras_jax_spe))] if name == "keras-jax" else []
        plan.append((name, peer.module, [*peer.args, *spe]))

    rounds: dict[str, list[dict]] = {}
    for round_ in range(config.rounds):
        for name, module, args in plan:
            tag = name if config.rounds == 1 else f"{name}-round{round_ + 1}"
            note(f"{tag}: training {config.preset}, {config.epochs} epoch(s) ...")
            result = spawn(tag, module, args, config)
            rounds.setdefault(name, []).append(result)
            note(f"{tag}: {result['status']}" + (f", {result['reason']}" if "reason" in result else
                                                 f", epoch {result['epoch_s']:.2f} s"))
    for name, results in rounds.items():
        systems[name] = result = best_round(results)
        if result["status"] == "ok":
            result["setting"] = setting(name, result)
            if "params" in result:
                result["params_match_normlab"] = result["params"] == expected_params
    systems = {name: systems[name] for name in ("normlab", "normlab-vmap", "normlab-procs", *config.peers)
               if name in systems}
    base = systems["normlab"].get("epoch_s")
    for result in systems.values():
        if result["status"] == "ok" and base:
            result["ratio_vs_normlab"] = result["epoch_s"] / base

    bench = {"provenance": provenance(), "config": json.loads(json.dumps(asdict(config), default=str)),
             "cpu_count": os.cpu_count(), "expected_params": expected_params, "systems": systems,
             "notes": ["epoch_s: median steady epoch (normlab: all epochs, compiled ahead of time; peers: 2..E)",
                       "normlab-vmap epoch_s and samples_per_s are per model (program time / seeds)",
                       "normlab-procs epoch_s and samples_per_s are per model (concurrent epoch time / processes)",
                       "ratio_vs_normlab = system epoch_s / normlab epoch_s (>1: slower than normlab)",
                       "with rounds > 1: systems run round after round, interleaved; each system's fastest round "
                       "is reported, every round's epoch_s in epoch_s_rounds",
                       "peak_rss_mib: ru_maxrss of the system's own child process; normlab-procs and the study: "
                       "peak PSS summed over the child and its workers (their RSS summed: peak_rss_sum_mib)"]}
    if base and "floor" in systems["normlab"]:
        floor = systems["normlab"].pop("floor")
        bench["floor"] = floor | {"normlab_epoch_s": base, "pct_of_floor": 100 * base / floor["floor_s"]}
    if config.full_study:
        bench["study"] = study(config, note)
    write_text(config.out / "bench.json", json.dumps(bench, indent=2))
    plot_bench(bench, config.out / "bench.png")
    return bench


def study(config: BenchConfig, note: Callable[[str], None]) -> dict:
    """The reproduce study (3 presets x 5 seeds x 10 epochs) end to end: normlab's ``reproduce`` and, measured
    the same way, Keras-TF's loop of a fresh model and ``fit`` per seed, with validation after every epoch."""
    note(f"study: normlab reproduce, {len(STUDY_PRESETS)} presets x {STUDY_SEEDS} seeds x {STUDY_EPOCHS} epochs ...")
    out = {"normlab": spawn("study-normlab", "normlab_run", ["--study"], config)}
    if missing := missing_packages(PEERS["keras-tf"]):
        return out | {"keras-tf": {"status": "skipped", "reason": f"not installed: {', '.join(missing)}"}}
    per_preset = {}
    for preset in STUDY_PRESETS:
        note(f"study: keras-tf {preset}, {STUDY_SEEDS} seeds x {STUDY_EPOCHS} epochs (long) ...")
        args = ["--backend", "tensorflow", "--seeds", str(STUDY_SEEDS)]
        per_preset[preset] = spawn(f"study-keras-tf-{preset}", "keras_run", args, config, preset, STUDY_EPOCHS)
    if failed := [p for p, r in per_preset.items() if r["status"] != "ok"]:
        return out | {"keras-tf": {"status": "failed", "reason": f"keras-tf failed for {', '.join(failed)}"}}
    keras_tf = {"status": "ok", "total_s": sum(r["total_s"] for r in per_preset.values()), "per_preset": per_preset,
                "method": "measured: per preset, one process trains a fresh model per seed with fit(), end to end"}
    if out["normlab"]["status"] == "ok":
        keras_tf["ratio_vs_normlab"] = keras_tf["total_s"] / out["normlab"]["total_s"]
    return out | {"keras-tf": keras_tf}
