"""``normlab export`` and ``normlab evaluate``: a trained model out of a run folder, and any model's test score.

Imports nothing heavy at module level: the CLI builds its parser from here on every start.
"""

import argparse
from pathlib import Path

from normlab import signals
from normlab.errors import ConfigError
from normlab.files import display

SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "safetensors": ".safetensors"}


def add_parsers(sub, with_data) -> None:
    p = sub.add_parser("export", help="a run's trained model as a .keras, .onnx or .safetensors file")
    p.add_argument("run_dir", type=Path, help="folder of a finished train or reproduce run")
    p.add_argument("--preset", help="which of the run's models (needed when it trained several)")
    p.add_argument("--seed", type=int, help="which seed (default: the run's first)")
    p.add_argument("--format", choices=tuple(SUFFIXES), help="default: from --out's suffix, else keras")
    p.add_argument("--fold-bn", action="store_true",
                   help="fold batch norms into the neighbouring Dense/Conv2D (same predictions, fewer layers)")
    p.add_argument("--out", type=Path, help="file to write (default RUN_DIR/export/PRESET-seedS[-folded].SUFFIX)")
    p.set_defaults(func=cmd_export)
    p = with_data(sub.add_parser("evaluate", help="test loss and accuracy of a model file or of a run's models"))
    p.add_argument("target", type=Path, help="a .keras or .safetensors model file, or a run folder")
    p.add_argument("--preset", help="in a run folder: only this model")
    p.add_argument("--seed", type=int, help="in a run folder: only this seed")
    p.set_defaults(func=cmd_evaluate)


def _format(args) -> str:
    by_suffix = {suffix: fmt for fmt, suffix in SUFFIXES.items()}
    if args.format is None:
        return by_suffix.get(args.out.suffix, "keras") if args.out else "keras"
    if args.out is not None and args.out.suffix != SUFFIXES[args.format]:
        raise ConfigError(f"--out {display(args.out)}: a {args.format} file must end in {SUFFIXES[args.format]}")
    return args.format


def cmd_export(args: argparse.Namespace) -> None:
    from normlab.interop.model_files import write
    from normlab.interop.trained import final_weights, one_run
    from normlab.interop.weights import Weights
    from normlab.nn.fold import fold
    fmt = _format(args)
    results, run = one_run(args.run_dir, args.preset, args.seed)
    weights = final_weights(args.run_dir, results, run)
    if args.fold_bn:
        weights = Weights(*fold(*weights))
    name = f"{run.preset}-seed{run.seed}{'-folded' if args.fold_bn else ''}{SUFFIXES[fmt]}"
    out = args.out or Path(args.run_dir) / "export" / name
    if out.is_dir():
        raise ConfigError(f"--out {display(out)} is a folder; give the file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    signals.safe_point("export")
    write(weights, fmt, out)
    args.stop_note = f"the export was complete: {display(out)}"
    recorded = "" if run.test is None else f"; results.json records test accuracy {run.test['accuracy']:.4f}"
    print(f"wrote {display(out)}: {run.preset} seed {run.seed} after {len(run.history['loss'])} epochs"
          f"{', batch norms folded' if args.fold_bn else ''}{recorded}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from normlab.data import load
    if args.target.is_dir():
        from normlab.interop.trained import final_weights, finished_runs
        results, chosen = finished_runs(args.target, args.preset, args.seed)
        models = [(f"{run.preset} seed {run.seed}", final_weights(args.target, results, run), run) for run in chosen]
    else:
        if args.preset is not None or args.seed is not None:
            raise ConfigError("--preset and --seed pick models in a run folder; a model file holds one")
        from normlab.interop.model_files import read
        weights = read(args.target)
        models = [(f"{display(args.target)} ({weights.model.name})", weights, None)]
    signals.safe_point("data")
    data = load(args.data_dir, verify=not args.no_verify)
    for label, weights, run in models:
        signals.safe_point("evaluate")
        loss, accuracy = test_scores(weights, data.x_test, data.y_test)
        recorded = "" if run is None or run.test is None else f" (results.json: {run.test['accuracy']:.4f})"
        print(f"{label}: test loss {loss:.4f}, accuracy {accuracy:.4f}{recorded}", flush=True)


def test_scores(weights, images_u8, labels) -> tuple[float, float]:
    """Mean loss and accuracy as training's evaluation computes them (``train.step.make_evaluate``)."""
    import jax
    import numpy as np
    from normlab.train.step import make_evaluate
    loss, accuracy = jax.jit(make_evaluate(weights.model))(weights.params, weights.state, images_u8,
                                                          np.asarray(labels, np.int32))
    return float(loss), float(accuracy)
