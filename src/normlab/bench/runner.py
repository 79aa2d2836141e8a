"""Run every system in its own child process, one after another, and gather their results into ``bench.json``.

Children run strictly in sequence: on a small machine two trainings at once would time each other. The one
exception is the Keras-JAX study's workers, which share the cores out, one pinned to each, as normlab's do.
Every child gets the environment as the user set it (those workers add single-threading to theirs); normlab's
own configure the engine as the CLI does (``runtime.configure``), so each framework runs as its users run it.
The model each child trains is a JSON file the parent writes (``write_model``): normlab's child rebuilds it from
its study, a peer from its layers (``mirror``).
"""

import contextlib
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
from normlab.atomic import open_fresh
from normlab.errors import ConfigError
from normlab.files import MiB, FileProblem, one_line, read_json


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
POLL_S = 0.05  # how often spawn_all looks for children that ended: the resolution of their times
RESULT_BYTES = 16 * MiB  # a child's JSON result: epoch times and a few numbers, a few kB


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
    data: str | None = None  # a dataset name or path (``--data``); None: the study's
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
        from normlab.experiments.study import make_config
        base = (load(self.study) if self.study else builtin("seed")).base
        if self.data is not None:
            base = make_config(base, {"data": self.data}, "--data")
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


class Child(NamedTuple):
    """``python -m normlab.bench.<module> ARGS`` on ``preset``'s model (default: the bench's) for ``epochs``."""
    name: str
    module: str
    args: list[str]
    preset: str | None = None
    epochs: int | None = None


def spawn(name: str, module: str, args: list[str], config: BenchConfig, preset: str | None = None,
          epochs: int | None = None) -> dict:
    """Run ``python -m normlab.bench.<module>`` and return its JSON result with ``status`` ok/skipped/failed."""
    return spawn_all([Child(name, module, args, preset, epochs)], config)[0][0]


def spawn_all(children: list[Child], config: BenchConfig) -> tuple[list[dict], float]:
    """Start the children at once and wait for them all (as ``spawn``, whose results these are); also the wall time
    from the first start to the last exit. At once only where they share the cores out, pinned one per core."""
    files = [(config.out / "results" / f"{c.name}.json", config.out / "logs" / f"{c.name}.log") for c in children]
    argvs = []
    for child, (out, _) in zip(children, files):
        model = write_model(config, child.preset or config.preset)
        argvs.append([sys.executable, "-m", f"normlab.bench.{child.module}", "--model", str(model),
                      "--epochs", str(child.epochs or config.epochs), "--out", str(out), *child.args]
                     + (["--subset", str(config.subset)] if config.subset else [])
                     + (["--data-dir", str(config.data_dir)] if config.data_dir else []))
    load = os.getloadavg()[0]
    starts, ends, processes = [], {}, []
    with contextlib.ExitStack() as stack:
        for argv, (_, log) in zip(argvs, files):
            log_file = stack.enter_context(open_fresh(log))
            starts.append(time.perf_counter())
            processes.append(stack.enter_context(subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)))
            stack.callback(processes[-1].kill)  # runs before Popen's exit waits: a Ctrl-C or error ends the child
        with signals.interruptible():  # minutes of a peer's training: a Ctrl-C stops it
            while len(ends) < len(processes):
                time.sleep(POLL_S)
                now = time.perf_counter()
                ends |= {i: now for i, p in enumerate(processes) if i not in ends and p.poll() is not None}
    results = [_result(out, log, process.returncode, {"process_s": ends[i] - starts[i], "load_avg_1min_before": load,
                                                      "log": str(log)})
               for i, (process, (out, log)) in enumerate(zip(processes, files))]
    return results, max(ends.values()) - starts[0]


def _result(out: Path, log: Path, rc: int, meta: dict) -> dict:
    if rc != 0 or not out.is_file():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        return meta | {"status": "failed", "reason": f"exit code {rc}: {lines[-1] if lines else 'no output'}"}
    try:
        result = read_json(out, RESULT_BYTES, allow_nan=True)  # common.write_result lets a NaN through
    except FileProblem as problem:
        return meta | {"status": "failed", "reason": str(problem)}
    if not isinstance(result, dict):
        return meta | {"status": "failed", "reason": f"{one_line(out)}: not a JSON object"}
    result = meta | result
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

    bench = {"provenance": provenance(), "config": json.loads(json.dumps(asdict(config), default=str))
             | {"data": config.study_config(config.preset).data,
                "n_train": config.study_config(config.preset).splits()["train"]},
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
    """The reproduce study (3 presets x 5 seeds x 10 epochs) end to end: normlab's ``reproduce`` and, measured the
    same way, Keras' loop of a fresh model and ``fit`` per seed, with validation after every epoch: on TensorFlow
    as a script runs it, on JAX at its best, spread over pinned workers as normlab's."""
    note(f"study: normlab reproduce, {len(STUDY_PRESETS)} presets x {STUDY_SEEDS} seeds x {STUDY_EPOCHS} epochs ...")
    out = {"normlab": spawn("study-normlab", "normlab_run", ["--study"], config)}
    for name, measure in (("keras-tf", keras_tf_study), ("keras-jax", keras_jax_study)):
        if missing := missing_packages(PEERS[name]):
            out[name] = {"status": "skipped", "reason": f"not installed: {', '.join(missing)}"}
            continue
        out[name] = result = measure(config, note)
        if result["status"] == "ok" and out["normlab"]["status"] == "ok":
            result["ratio_vs_normlab"] = result["total_s"] / out["normlab"]["total_s"]
    return out


def study_jobs(presets) -> list[str]:
    """``PRESET:SEED`` for every seed of ``presets``, as ``keras_run --jobs`` takes them."""
    return [f"{preset}:{seed}" for preset in presets for seed in range(STUDY_SEEDS)]


def keras_tf_study(config: BenchConfig, note: Callable[[str], None]) -> dict:
    """Per preset one process, one after another, trains a fresh model per seed with ``fit``."""
    per_preset = {}
    for preset in STUDY_PRESETS:
        note(f"study: keras-tf {preset}, {STUDY_SEEDS} seeds x {STUDY_EPOCHS} epochs (long) ...")
        args = ["--backend", "tensorflow", "--jobs", ",".join(study_jobs([preset]))]
        per_preset[preset] = spawn(f"study-keras-tf-{preset}", "keras_run", args, config, preset, STUDY_EPOCHS)
    if failed := [p for p, r in per_preset.items() if r["status"] != "ok"]:
        return {"status": "failed", "reason": f"keras-tf failed for {', '.join(failed)}"}
    return {"status": "ok", "total_s": sum(r["total_s"] for r in per_preset.values()), "per_preset": per_preset,
            "method": "measured: per preset, one process trains a fresh model per seed with fit(), end to end"}


def keras_jax_study(config: BenchConfig, note: Callable[[str], None]) -> dict:
    """Keras on JAX at its best, set up as normlab's ``reproduce``: the (preset, seed) jobs dealt round-robin to one
    worker per core (jobs this alike split as evenly as normlab's pool, which hands them out as workers free up),
    each pinned to its core and single-threaded, training its share in turn.

    ``steps_per_execution`` is the fastest of ``keras_jax_spe`` in a quick try (2 epochs each, the first preset)
    in one such pinned worker, before the timed run, rather than simply the largest: on one core the largest is
    not the fastest (bn-after on a 2-core Xeon, busy: 32 or 64 steps 4.7-5.5 s an epoch, 256 6.6-7.6 s, 1 and
    8 slower too), and the bench's own keras-jax trials ran on all cores.
    """
    cores = sorted(os.sched_getaffinity(0))
    jobs = study_jobs(STUDY_PRESETS)
    spe = config.keras_jax_spe[0]
    trials = {}
    if len(config.keras_jax_spe) > 1:
        note(f"study: keras-jax, trying steps_per_execution {', '.join(map(str, config.keras_jax_spe))} ...")
        args = ["--backend", "jax", "--spe", ",".join(map(str, config.keras_jax_spe)), "--core", str(cores[0])]
        trial = spawn("study-keras-jax-spe", "keras_run", args, config, STUDY_PRESETS[0], epochs=1)
        if trial["status"] != "ok":
            return {"status": "failed", "reason": f"steps_per_execution trial: {trial['reason']}"}
        spe, trials = trial["steps_per_execution"], {s: t["epoch_s"] for s, t in trial["spe_trials"].items()}
    for preset in STUDY_PRESETS[1:]:  # a worker reads each preset's model next to the first's
        write_model(config, preset)
    workers = min(len(cores), len(jobs))
    note(f"study: keras-jax, {len(jobs)} jobs x {STUDY_EPOCHS} epochs in {workers} pinned worker(s), "
         f"steps_per_execution {spe} ...")
    children = [Child(f"study-keras-jax-{w}", "keras_run", ["--backend", "jax", "--spe", str(spe), "--core",
                                                            str(cores[w]), "--jobs", ",".join(jobs[w::workers])],
                      STUDY_PRESETS[0], STUDY_EPOCHS) for w in range(workers)]
    results, total = spawn_all(children, config)
    if failed := [r for r in results if r["status"] != "ok"]:
        return {"status": "failed", "reason": f"{len(failed)} worker(s) failed, first: {failed[0]['reason']}"}
    runs = [run | {"core": r["core"]} for r in results for run in r["jobs"]]
    return {"status": "ok", "total_s": total, "workers": workers, "steps_per_execution": spe,
            "spe_trials_epoch_s": trials, "jobs": runs,
            "val_accuracy": {p: sum(r["val_accuracy"] for r in runs if r["preset"] == p) / STUDY_SEEDS
                             for p in STUDY_PRESETS},
            "per_worker": [{k: r[k] for k in ("core", "total_s", "process_s", "xla_flags", "log")} for r in results],
            "method": f"measured: {len(jobs)} (preset, seed) jobs over {workers} worker process(es), one per core, "
                      "pinned and single-threaded, each a fresh model and fit() in turn; total_s is wall clock from "
                      "the first worker's start to the last one's exit (imports, data loading, compilation "
                      "included; per_worker total_s: training alone)"}
