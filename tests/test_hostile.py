"""Hostile use of the real CLI, one class of problem per test: exit code, one line, no traceback, nothing lost.

The signal moments have their own file (test_signals.py); the fuzzing of study files, results.json and
checkpoint records lives beside the modules that parse them.
"""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import TINY, finished_run, normlab, one_line_error, session_cache, start_paused, tree  # noqa: F401
from conftest import NAMES


def study_file(folder: Path, text: str, name: str = "study.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# 1. Every run diverged: a result like any other.

@pytest.mark.full_data
def test_all_runs_diverged_is_a_reported_result(tmp_path):
    out = tmp_path / "run"
    code, stdout, err = normlab("train", "baseline", "--lr", "10", *TINY, "--out", out)
    assert code == 0, err
    assert err.splitlines() == ["warning: baseline seed 0 diverged at epoch 1 (non-finite loss); recorded in "
                                "results.json"], err
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [run["status"] for run in results["runs"]] == ["diverged"]
    assert "diverged" in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.full_data
def test_a_sweep_trial_whose_runs_all_diverge_is_done_and_reported(tmp_path):
    study = study_file(tmp_path, 'name = "hot"\n[config]\npresets = ["baseline"]\nseeds = 1\nepochs = 1\n'
                                 'subset = 500\n[sweep]\nlearning_rate = [10.0, 0.001]\n')
    out = tmp_path / "sweep"
    code, stdout, err = normlab("run", study, "--out", out, "--workers", "1")  # the pool is test_workers.py's
    assert code == 0, err
    manifests = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("trials/*/manifest.json"))]
    assert [m["status"] for m in manifests] == ["done", "done"]
    assert "diverged" in (out / "report.md").read_text(encoding="utf-8")
    code, stdout, err = normlab("run", study, "--out", out)
    assert code == 0 and "2 already done, 0 to run" in stdout, err


# 2. Signals: test_signals.py at seven moments; here the sweep's trial record.

@pytest.mark.full_data
def test_an_interrupted_sweep_trial_says_interrupted(tmp_path):
    study = study_file(tmp_path, '[config]\npresets = ["bn-after"]\nseeds = 1\nepochs = 2\nsubset = 500\n')
    out = tmp_path / "sweep"
    proc = start_paused(["run", study, "--out", out], tmp_path, "train")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Resume with the same command" in err and len(err.splitlines()) == 1, err
    [manifest] = out.glob("trials/*/manifest.json")
    assert json.loads(manifest.read_text(encoding="utf-8"))["status"] == "interrupted"


# 3. Two processes, one run folder.

@pytest.fixture(scope="module")
def first_writer(tmp_path_factory):
    """A `train` held while training, its run folder claimed: each second writer below meets the same one. Once
    they have, SIGTERM still stops it as usual."""
    folder = tmp_path_factory.mktemp("first")
    first = start_paused(["train", "bn-after", "--seed", "0", *TINY, "--out", folder / "run"], folder, "train")
    try:
        yield first, folder / "run"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=300)
    assert first.returncode == 143


@pytest.mark.full_data
@pytest.mark.parametrize("second", [["train", "bn-after", "--seed", "1", *TINY],
                                    ["reproduce", "--seeds", "1", *TINY],
                                    ["train", "bn-after", "--seed", "0", *TINY, "--resume"]])
def test_a_run_folder_has_one_writer(first_writer, second):
    first, out = first_writer
    before = tree(out)
    one_line_error(*[normlab(*second, "--out", out)[i] for i in (0, 2)], f"in use by normlab process {first.pid}")
    assert tree(out) == before and first.poll() is None


@pytest.mark.full_data
def test_a_finished_run_is_not_silently_replaced(tmp_path, finished_run):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = tree(out)
    code, _, err = normlab("train", "bn-after", "--seed", "1", *TINY, "--out", out)
    one_line_error(code, err, "already holds a run", "--resume")
    assert tree(out) == before


@pytest.mark.parametrize("holds,command", [("study.toml", ["train", "bn-after", *TINY]),
                                           ("study.toml", ["reproduce", *TINY, "--resume"]),
                                           ("results.json", ["run", "seed"])])
def test_a_sweep_and_a_run_never_share_a_folder(tmp_path, holds, command):
    """A sweep's report gathers every results.json below it: a train run inside it would join the sweep."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".normlab-lock").write_text("", encoding="utf-8")
    (out / holds).write_text("{}", encoding="utf-8")
    before = tree(out)
    code, _, err = normlab(*command, "--out", out)
    one_line_error(code, err, "choose another --out")
    assert tree(out) == before


# 4. The user's own files.

@pytest.mark.parametrize("command", [["train", "bn-after", *TINY], ["reproduce", *TINY], ["run", "seed"]])
def test_a_folder_of_the_users_is_never_written_into(tmp_path, command):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("results.json", "report.md", "history.csv"):
        (out / name).write_text(f"my own {name}\n", encoding="utf-8")
    before = tree(out)
    code, _, err = normlab(*command, "--out", out)
    one_line_error(code, err, "not a normlab run folder")
    assert tree(out) == before


# 5. Values that cannot work: refused where they enter, before any work or memory is spent.

IMPOSSIBLE_OPTIONS = [
    (["train", "bn-after", "--lr", "inf"], "--lr: learning_rate must be a number in (0, "),
    (["train", "bn-after", "--lr", "1e39"], "learning_rate"),
    (["train", "bn-after", "--bn-eps", "inf"], "--bn-eps: bn_epsilon must be a number in (0, "),
    (["train", "bn-after", "--bn-eps", "1e39"], "bn_epsilon"),
    (["train", "bn-after", "--bn-momentum", "nan"], "bn_momentum"),
    (["train", "bn-after", "--seed", "5000000000"], "first_seed"),
    (["train", "bn-after", "--seed", "-1"], "first_seed"),
    (["reproduce", "--seeds", "2000000000"], "seeds"),
    (["reproduce", "--batch-size", "2000000000"], "batch_size"),
    (["reproduce", "--subset", "1000000000000"], "subset"),
    (["reproduce", "--workers", "1000000"], "workers"),
    (["run", "seed", "--workers", "0"], "--workers: workers must be unset or an int in 1..1024"),
]
IMPOSSIBLE_STUDIES = [
    ("[config]\nfirst_seed = 5000000000\n", "first_seed"),
    ("[config]\nseeds = 2000000000\n", "seeds"),
    ("[config]\nbatch_size = 2000000000\n", "batch_size"),
    ("[config]\nlearning_rate = inf\n", "learning_rate"),
    ("[config]\nbn_epsilon = inf\n", "bn_epsilon"),
    ("config = 5\n", "config"),
    ("[sweep.random]\nsamples = \"x\"\nlearning_rate = { uniform = [0.1, 1.0] }\n", "samples"),
    ("[sweep.random]\nsamples = 2\nlearning_rate = { choice = [] }\n", "choice"),
    ("[sweep.random]\nsamples = 2\nlearning_rate = { uniform = [1] }\n", "uniform"),
    ("[sweep.random]\nsamples = 2\nlearning_rate = { log_uniform = [-1, 1] }\n", "log_uniform"),
    ("[sweep.random]\nsamples = 2\nlearning_rate = 5\n", "learning_rate"),
    ("name = \"../../escape\"\n", "name"),
    ("a = " + "[" * 100_000 + "]" * 100_000 + "\n", "nested"),
]
# One process under RLIMIT_AS runs every refused command in turn (``cli.main``), instead of one process each:
# refusing costs milliseconds, starting a process with JAX seconds. Prints [exit code, stderr] per command.
REFUSALS = ("import contextlib, io, json, resource, sys; limit = int(sys.argv[1]); "
            "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); from normlab.cli import main\n"
            "for argv in json.loads(sys.argv[2]):\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n"
            "            code = main(argv)\n"
            "        except SystemExit as stop:\n"
            "            code = stop.code\n"
            "    print(json.dumps([code, err.getvalue().strip()]), file=sys.__stdout__, flush=True)\n")


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Every impossible option and study file of the two tests below, refused in one bounded process:
    argv tuple -> (exit code, stderr); each command's ``--out`` is its own folder, which must not appear."""
    folder = tmp_path_factory.mktemp("refusals")
    commands = [[*args, "--out", str(folder / f"options-{i}")] for i, (args, _) in enumerate(IMPOSSIBLE_OPTIONS)]
    for i, (text, _) in enumerate(IMPOSSIBLE_STUDIES):
        commands.append(["run", str(study_file(folder, text, f"study-{i}.toml")), "--out", str(folder / f"study-{i}")])
    run = subprocess.run([sys.executable, "-c", REFUSALS, str(4096 << 20), json.dumps(commands)],
                         capture_output=True, text=True, timeout=600)
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 0 and len(answers) == len(commands), run.stderr
    return folder, answers


@pytest.mark.parametrize("case", range(len(IMPOSSIBLE_OPTIONS)),
                         ids=[fragment for _, fragment in IMPOSSIBLE_OPTIONS])
def test_impossible_options_are_refused_in_bounded_memory(refusals, case):
    folder, answers = refusals
    one_line_error(*answers[case], IMPOSSIBLE_OPTIONS[case][1])
    assert not (folder / f"options-{case}").exists()


@pytest.mark.parametrize("case", range(len(IMPOSSIBLE_STUDIES)),
                         ids=[fragment for _, fragment in IMPOSSIBLE_STUDIES])
def test_impossible_study_files_are_refused_in_bounded_memory(refusals, case):
    folder, answers = refusals
    one_line_error(*answers[len(IMPOSSIBLE_OPTIONS) + case], IMPOSSIBLE_STUDIES[case][1])
    assert not (folder / f"study-{case}").exists()


# 6. Unbounded resources: memory capped by the sizes the data set has; never a read that blocks.

def test_a_decompression_bomb_is_refused_in_bounded_memory(data_dir):
    """A few MB of .gz with a valid header that expands to 2 GB: refused after reading the expected 47 MB."""
    target = data_dir / NAMES[0]
    header = target.read_bytes()[:16]
    target.unlink()
    zeros = gzip.compress(bytes(16 << 20), compresslevel=1)
    (data_dir / f"{NAMES[0]}.gz").write_bytes(gzip.compress(header) + zeros * 128)  # members concatenate
    code, _, err = normlab("data", "--no-verify", "--data-dir", data_dir, limit_mb=400, timeout=120)
    one_line_error(code, err, NAMES[0], "expands to more than")


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_data_file_that_is_not_a_regular_file_is_refused_at_once(data_dir, kind):
    target = data_dir / NAMES[1]
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)  # opening it would wait forever for a writer
    else:
        target.symlink_to("/dev/zero")  # reading it would never end
    code, _, err = normlab("data", "--no-verify", "--data-dir", data_dir, limit_mb=400, timeout=120)
    one_line_error(code, err, NAMES[1], "not a regular file")


@pytest.mark.full_data
@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_checkpoint_that_is_not_a_regular_file_is_skipped(tmp_path, finished_run, kind):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    bogus = out / "checkpoints" / "bn-after" / "epoch-0002.safetensors"
    os.mkfifo(bogus) if kind == "fifo" else bogus.symlink_to("/dev/zero")
    code, stdout, err = normlab("train", "bn-after", "--subset", "500", "--epochs", "2", "--out", out, "--resume",
                                timeout=300)
    assert code == 0, err
    assert "skipping damaged checkpoint" in stdout and "not a regular file" in stdout
    assert "Epoch 2/2" in stdout and "Epoch 1/2" not in stdout


# 7. Built-in names are not shadowed by files; a path is a path.

@pytest.mark.full_data
def test_a_file_named_like_a_built_in_study_does_not_replace_it(tmp_path):
    study_file(tmp_path, '[config]\npresets = ["bn-after"]\nlearning_rate = 0.5\nepochs = 1\nseeds = 1\nsubset = 500\n',
               name="seed")
    code, _, err = normlab("train", "bn-after", *TINY, "--out", tmp_path / "run", cwd=tmp_path)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))["config"][
        "learning_rate"] == 0.001
    code, stdout, err = normlab("run", "./seed", "--out", tmp_path / "sweep", cwd=tmp_path)
    assert code == 0, err
    trial = json.loads(next((tmp_path / "sweep").glob("trials/*/manifest.json")).read_text(encoding="utf-8"))
    assert trial["config"]["learning_rate"] == 0.5


# 8. Locale and paths.

@pytest.mark.full_data
def test_an_ascii_locale_and_a_non_utf8_folder_name(tmp_path):
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONIOENCODING": "ascii"}
    out = tmp_path / os.fsdecode(b"run-\xff")
    code, stdout, err = normlab("reproduce", "--presets", "bn-after", "--seeds", "1", *TINY, "--out", out, env=env)
    assert code == 0, err
    code, stdout, err = normlab("report", out, env=env)
    assert code == 0, err
    page = (out / "summary.html").read_bytes()
    assert page.decode("utf-8").startswith("<!DOCTYPE html>")  # valid UTF-8 whatever the folder's name
    assert all(p.stat().st_size > 0 for p in out.iterdir() if p.is_file() and p.name != ".normlab-lock")


# 9. Small ones.

@pytest.mark.full_data
def test_a_malformed_test_variable_does_not_stop_a_run(tmp_path):
    code, _, err = normlab("train", "bn-after", *TINY, "--out", tmp_path / "run",
                           env={"NORMLAB_FAULT_WRITE_DELAY_S": "abc", "NORMLAB_TEST_STAGES": ""})
    assert code == 0, err


@pytest.mark.parametrize("args,suggestion", [
    (["summary", "bn-after", "--subset", "9"], None),  # --subset belongs to the training commands
    (["summary", "bn-after", "--seeds", "3"], None),
    (["train", "bn-after", "--seeds", "3"], "did you mean --seed?"),
    (["reproduce", "--seed", "3"], "did you mean --seeds?"),
])
def test_suggestions_name_only_options_of_the_command(args, suggestion):
    code, _, err = normlab(*args)
    one_line_error(code, err, "unrecognized arguments", f"`normlab {args[0]}`")
    assert (suggestion in err) if suggestion else ("did you mean" not in err)


def test_control_characters_in_a_path_stay_on_one_line(tmp_path):
    code, _, err = normlab("report", tmp_path / "no\nsuch\x1b[2Jrun")
    one_line_error(code, err, "\\n", "\\x1b")


def test_overlapping_report_folders_count_each_run_once(tmp_path):
    run = {"preset": "bn-after", "seed": 0, "status": "ok", "diverged_epoch": None, "test": {"loss": 0.5, "accuracy": 0.8},
           "history": {"loss": [0.6], "accuracy": [0.7], "val_loss": [0.5], "val_accuracy": [0.8]}}
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "results.json").write_text(json.dumps({"runs": [run]}), encoding="utf-8")
    code, _, err = normlab("report", tmp_path / "runs" / "a", tmp_path / "runs", tmp_path / "runs" / "a" / ".." / "a",
                           "--out", tmp_path / "page.html")
    assert code == 0, err
    assert "from 1 results file(s)" in (tmp_path / "page.md").read_text(encoding="utf-8")
