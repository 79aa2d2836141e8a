"""Bench child for PyTorch, eager or ``torch.compile``: the model (``mirror``) with Keras' initializers and BN
conventions.

Two conventions differ from Keras and are mapped or noted:
* ``BatchNorm1d(momentum=0.01)`` is Keras' ``momentum=0.99``: PyTorch weights the *new* batch statistic.
* PyTorch updates ``running_var`` with the *unbiased* batch variance (n/(n-1) times Keras' biased one); the
  normalisation itself uses the biased variance in both, so training is the same and inference differs
  slightly (a factor 32/31 on the moving variance, ≈1.6%).
"""

import os
import time
from pathlib import Path

from normlab.bench import without_jax

if __name__ == "__main__":  # the peer's own process: before the kinds' modules (``interop.mirror``) import JAX
    without_jax.install()

from normlab.bench.common import child_parser, load_arrays, read_model, summarize, write_result  # noqa: E402
from normlab.interop.mirror import Unsupported, torch_model  # noqa: E402

NOTES = ["BatchNorm1d(momentum=0.01, eps=1e-3) == Keras BatchNormalization(momentum=0.99, epsilon=1e-3)",
         "PyTorch's running_var uses the unbiased batch variance (Keras: biased); training math is identical"]


def inductor_cache_note() -> str:
    """torch.compile's warm-up is much shorter when Inductor's on-disk cache already holds this model."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        path = Path(cache_dir())
    except (ImportError, AttributeError, OSError):
        return "Inductor cache: location unknown"
    state = "already populated" if path.is_dir() and any(path.iterdir()) else "empty"
    return f"Inductor cache {path} was {state} before this run: warm-up is shorter on a warm cache"


def train(torch, args, arrays) -> dict:
    import torch.nn.functional as F
    x_train, y_train, x_val, y_val = (torch.from_numpy(a) for a in arrays)
    torch.manual_seed(0)
    job = read_model(args)
    model = torch_model(torch.nn, job["description"])
    params = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    net = torch.compile(model) if args.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=job["config"]["learning_rate"])
    x_val = x_val.float() / 255
    times, val_accuracy = [], None
    for _ in range(args.epochs):
        start = time.perf_counter()
        net.train()
        for rows in torch.randperm(len(y_train)).split(job["config"]["batch_size"]):
            loss = F.cross_entropy(net(x_train[rows].float().div_(255)), y_train[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.inference_mode():
            val_accuracy = (net(x_val).argmax(1) == y_val).float().mean().item()
        times.append(time.perf_counter() - start)
    return summarize(times, len(y_train)) | {"val_accuracy": val_accuracy, "params": params}


def main(argv=None) -> None:
    parser = child_parser(__doc__)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(os.cpu_count())
    _, *arrays = load_arrays(args)
    notes = NOTES + ([inductor_cache_note()] if args.compile else [])
    result = {"threads": torch.get_num_threads(), "versions": {"torch": torch.__version__}, "notes": notes}
    try:
        result |= train(torch, args, arrays)
    except Unsupported as error:  # a layer PyTorch has no mirror for: the peer sits this model out
        result["skipped"] = str(error)
    except Exception as error:  # torch.compile failing (no compiler, unsupported op) is a result, not a crash
        if not args.compile:
            raise
        result["skipped"] = f"torch.compile failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    write_result(args.out, result)


if __name__ == "__main__":
    main()
