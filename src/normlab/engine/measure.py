"""The tuner's measuring child (``engine.tune`` starts one per XLA flag set and core count): seconds per
training step of a preset for each GEMM, in a process whose flags and cores are set before JAX starts."""

import argparse
import json
import os
import time

from normlab.engine.settings import GEMMS
from normlab.files import write_text


def epoch_program(model, steps: int):
    """``(epoch, (state, images, labels, learning_rate))``: ``model``'s training epoch with the study's settings,
    the program ``fit`` compiles (``train.loop.seeds_epoch``, one seed), on the GEMM in use, and its arguments but
    the epoch index: ``steps`` batches of synthetic images of the real shape."""
    import dataclasses
    import jax
    import jax.numpy as jnp
    import numpy as np
    from normlab.experiments.config import StudyConfig
    from normlab.train.loop import make_optimizer, seeds_epoch
    from normlab.train.state import create
    train = dataclasses.replace(StudyConfig(), epochs=1).train_config()
    examples = steps * train.batch_size
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (examples, *model.data.image), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, model.data.classes, examples, dtype=np.uint8))
    state = jax.vmap(lambda seed: create(model, make_optimizer(train), seed))(jnp.zeros(1, jnp.uint32))
    return seeds_epoch(model, train, examples), (state, images, labels, jnp.float32(train.learning_rate))


def measure(gemms, steps: int, rounds: int, preset: str) -> dict[str, float]:
    """Seconds per training step of ``preset`` for each of ``gemms`` that loads in this process (its flags set)."""
    import jax
    from normlab.engine import gemm
    from normlab.experiments.config import StudyConfig
    model, programs = StudyConfig().model(preset), {}
    for name in gemm.usable(gemms):  # one that is unavailable here is not a candidate
        epoch, (state, images, labels, learning_rate) = programs[name] = epoch_program(model, steps)
        jax.block_until_ready(epoch(state, images, labels, 0, learning_rate))
    best = {name: float("inf") for name in programs}
    for round_ in range(rounds):
        for name, (epoch, (state, images, labels, learning_rate)) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(epoch(state, images, labels, round_ + 1, learning_rate))
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def main(argv=None) -> None:
    """A measuring child: pinned to its first ``--cores`` cores, XLA flags ``--flags``; its JSON goes to the file
    ``--result``, never to stdout, which native code shares (``tune._measure_in_child``)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--cores", type=int, required=True)
    parser.add_argument("--flags", required=True)
    parser.add_argument("--gemms", default=",".join(GEMMS))
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    from normlab import runtime
    runtime.set_xla_flags(runtime.FLAG_SETS[args.flags])
    write_text(args.result, json.dumps(measure(args.gemms.split(","), args.steps, args.rounds, args.preset)))


if __name__ == "__main__":
    main()
