"""``normlab export`` and ``normlab evaluate``: a trained model out of a run folder, and any model's test score.

Imports nothing heavy at module level: the CLI builds its parser from here on every start.
"""

import argparse
from pathlib import Path

from normlab.files import one_line

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


def cmd_export(args: argparse.Namespace) -> None:
    import normlab
    from normlab.interop.trained import one_run
    out = normlab.export(args.run_dir, preset=args.preset, seed=args.seed, format=args.format,
                         fold_bn=args.fold_bn, out=args.out)
    _, run = one_run(args.run_dir, args.preset, args.seed)
    recorded = "" if run.test is None else f"; results.json records test accuracy {run.test['accuracy']:.4f}"
    print(f"wrote {one_line(out)}: {run.preset} seed {run.seed} after {len(run.history['loss'])} epochs"
          f"{', batch norms folded' if args.fold_bn else ''}{recorded}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    import normlab
    from normlab.errors import ConfigError
    if args.val_split is not None:
        raise ConfigError("--val-split: evaluate scores the test images, which no validation split changes")
    for score in normlab.evaluate(args.target, preset=args.preset, seed=args.seed, data=args.data,
                                  data_dir=args.data_dir, verify=not args.no_verify):
        recorded = "" if score["recorded"] is None else f" (results.json: {score['recorded']:.4f})"
        print(f"{score['model']}: test loss {score['loss']:.4f}, accuracy {score['accuracy']:.4f}{recorded}",
              flush=True)
