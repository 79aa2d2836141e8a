"""Run a study's trials, each in its own run directory with a manifest; finished trials are never rerun.

``OUT/trials/<id>/manifest.json`` says what the trial is (setting, full config, provenance) and how far it got
(``running`` -> ``done``, ``failed`` or ``interrupted``). Rerunning the same command skips ``done`` trials and resumes the
others from their checkpoints. With ``workers > 1`` trials run as separate ``normlab run --trial`` processes,
so a crash in one cannot take the others down.
"""

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from normlab import signals
from normlab.errors import ConfigError
from normlab.files import FileProblem, display, read_text, write_text
from normlab.experiments.provenance import provenance
from normlab.experiments.reproduce import reproduce
from normlab.experiments.study import Study, expand, make_config, trial_id


def trials(study: Study) -> list[tuple[str, dict]]:
    return [(trial_id(i, overrides), overrides) for i, overrides in enumerate(expand(study.sweep))]


MANIFEST_BYTES = 16 << 20


def _write_json(path: Path, value: dict) -> None:
    write_text(path, json.dumps(value, indent=1, allow_nan=False))


def status(trial_dir: Path) -> str:
    """The manifest's status; ``new`` for a trial without a readable manifest (it is then run again)."""
    try:
        found = json.loads(read_text(trial_dir / "manifest.json", MANIFEST_BYTES)).get("status")
    except (FileProblem, ValueError, AttributeError, RecursionError):
        return "new"
    return found if found in ("running", "done", "failed", "interrupted") else "new"


def prepare(study: Study, out: Path) -> None:
    """Record the study itself; a different study in the same folder is refused, not mixed in."""
    saved = out / "study.toml"
    if saved.exists():
        try:
            same = read_text(saved, len(study.source.encode()) + 1) == study.source
        except FileProblem:
            same = False
        if not same:
            raise ConfigError(f"{display(out)} holds a different study ({display(saved)}); use another --out")
    else:
        write_text(saved, study.source)


def run_trial(study: Study, tid: str, overrides: dict, out: Path, data, on_epoch=None, warn=print,
              write_reports: Callable[[dict, Path], None] | None = None, in_process: bool = False) -> dict:
    """Train one trial (all presets x seeds of its configuration) and mark it done.

    ``in_process``: no worker processes of its own — for a trial that is itself one of several parallel ones.
    """
    trial_dir = out / "trials" / tid
    config = make_config(study.base, overrides, f"{study.name} trial {tid}")
    config = dataclasses.replace(config, workers=1) if in_process else config
    manifest = {"study": study.name, "trial": tid, "setting": overrides, "config": config.as_dict(),
                "provenance": provenance(), "status": "running"}
    _write_json(trial_dir / "manifest.json", manifest)
    try:
        results = reproduce(data, config, trial_dir, resume=True, on_epoch=on_epoch, warn=warn)
        for run in results["runs"]:
            run["setting"] = {"preset": run["preset"], **overrides}
        results["study"] = {"name": study.name, "trial": tid}
        with signals.held():  # results, report and manifest: all of them or, after a crash, a trial to rerun
            _write_json(trial_dir / "results.json", results)
            if write_reports is not None:
                write_reports(results, trial_dir)
            _write_json(trial_dir / "manifest.json", {**manifest, "status": "done", "finished": time.time()})
    except signals.Interrupted:
        _write_json(trial_dir / "manifest.json", {**manifest, "status": "interrupted"})
        raise
    except BaseException as error:
        _write_json(trial_dir / "manifest.json", {**manifest, "status": "failed",
                                                  "error": f"{type(error).__name__}: {error}"})
        raise
    return results


def run_in_processes(study_file: Path, out: Path, pending: list[str], workers: int, argv_tail: list[str],
                     say=print) -> list[str]:
    """Run ``pending`` trials as ``normlab run --trial ID`` processes, ``workers`` at a time; return the failed."""
    queue, running, failed = list(pending), {}, []
    (out / "trials").mkdir(parents=True, exist_ok=True)
    try:
        while queue or running:
            while queue and len(running) < workers:
                tid = queue.pop(0)
                command = [sys.executable, "-m", "normlab.cli", "run", str(study_file), "--out", str(out),
                           "--trial", tid, *argv_tail]
                with open(out / "trials" / f"{tid}.log", "w", encoding="utf-8") as log:
                    running[tid] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
                say(f"started trial {tid}")
            signals.check()
            for tid, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[tid]
                    say(f"trial {tid} {'done' if proc.returncode == 0 else f'failed (exit {proc.returncode})'}")
                    if proc.returncode != 0:
                        failed.append(tid)
            with signals.interruptible():
                time.sleep(0.2)
    except BaseException as stop:
        # The trials checkpoint and record themselves as interrupted; none may outlive this process.
        for proc in running.values():
            proc.send_signal(stop.signum if isinstance(stop, signals.Interrupted) else signal.SIGTERM)
        for proc in running.values():
            proc.wait()
        raise
    return failed
