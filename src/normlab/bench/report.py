"""The bench's terminal table and its figure: steady epoch time per system, as bars, with the ratio to normlab."""

from pathlib import Path

from matplotlib.figure import Figure
from rich.markup import escape
from rich.table import Table

from normlab.files import write_bytes
from normlab.report.plots import OKABE_ITO, png_bytes

COLUMNS = ("system", "setting", "compile s", "epoch s", "samples/s", "peak RSS MiB", "val acc", "× normlab")
FAMILY_COLOUR = {"normlab": OKABE_ITO[0], "keras": OKABE_ITO[1], "torch": OKABE_ITO[2]}
PER_MODEL = ("normlab-vmap", "normlab-procs")  # several models at once: bar = time per model
LOG_SPREAD = 20  # log x axis when the slowest bar is more than this many times the fastest


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def bench_table(bench: dict) -> Table:
    config = bench["config"]
    table = Table(title=f"{config['preset']}, {config['epochs']} epoch(s), batch 32, {config['n_train']:,} "
                        f"{config['data']} training images; epoch s = median steady epoch; × normlab = epoch s / normlab's")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("system", "setting") else "right")
    for name, r in bench["systems"].items():
        if r["status"] != "ok":
            table.add_row(name, escape(f"{r['status']}: {r['reason']}"), *[""] * (len(COLUMNS) - 2))
            continue
        table.add_row(name, r["setting"], _num(r["compile_s"], ".1f"), _num(r["epoch_s"], ".3f"),
                      _num(r["samples_per_s"], ",.0f"), _num(r["peak_rss_mib"], ",.0f"),
                      _num(r["val_accuracy"], ".4f"), _num(r.get("ratio_vs_normlab"), ".2f") + "×")
    return table


def footer_lines(bench: dict) -> list[str]:
    lines = []
    if floor := bench.get("floor"):
        others = ", ".join(f"{name} {f['floor_s']:.3f} s" for name, f in floor.get("floors", {}).items()
                           if name != floor.get("floor_gemm"))
        lines.append(f"matmul floor ({floor.get('floor_gemm', 'xla')} sgemm only, {floor['steps']} steps of batch "
                     f"{floor['batch']}): {floor['floor_s']:.3f} s/epoch; normlab's epoch is "
                     f"{floor['pct_of_floor']:.0f}% of it" + (f" (other GEMMs: {others})" if others else ""))
        lines += [f"  {p['product']:<18} {p['seconds'] * 1e3:8.1f} ms  {p['gflop_per_s']:6.1f} GFLOP/s"
                  for p in floor["products"]]
    if rounds := {n: r["epoch_s_rounds"] for n, r in bench["systems"].items() if "epoch_s_rounds" in r}:
        lines.append("epoch s of every round (the fastest is in the table): "
                     + "; ".join(f"{n} " + ", ".join(f"{t:.2f}" for t in ts) for n, ts in rounds.items()))
    ran = {n: r for n, r in bench["systems"].items() if "load_avg_1min_before" in r}
    lines.append(f"1-min load average before each system ({bench['cpu_count']} cores): "
                 + ", ".join(f"{n} {r['load_avg_1min_before']:.1f}" for n, r in ran.items()))
    if noisy := [n for n, r in ran.items() if (r.get("compile_s") or 0) < 0]:
        lines.append(f"negative warm-up for {', '.join(noisy)}: epoch 1 beat the later median, i.e. no measurable "
                     "warm-up and run-to-run noise (or other load) larger than it")
    mismatched = [n for n, r in bench["systems"].items() if r.get("params_match_normlab") is False]
    if mismatched:
        lines.append(f"parameter count differs from normlab's {bench['expected_params']:,}: {', '.join(mismatched)}")
    if study := bench.get("study"):
        nl = study["normlab"]
        if nl["status"] == "ok":
            lines.append(f"study (3 presets x 5 seeds x 10 epochs, compile included, end to end): normlab "
                         f"{nl['total_s']:.0f} s with {nl['workers']} worker process(es), peak memory "
                         f"{nl['peak_rss_mib']:,.0f} MiB PSS ({nl['peak_rss_sum_mib']:,.0f} MiB RSS summed)")
        lines += [_study_line(name, study[name]) for name in ("keras-tf", "keras-jax")]
    return lines


def _study_line(name: str, r: dict) -> str:
    """A Keras study's total; keras-jax's ran in pinned workers, as normlab's, with its chosen setting."""
    if r["status"] != "ok":
        return f"  {name} study {r['status']}: {r['reason']}"
    how = (f" with {r['workers']} pinned worker process(es), steps_per_execution {r['steps_per_execution']}"
           if "workers" in r else "")
    ratio = f", {r['ratio_vs_normlab']:.1f}× normlab" if "ratio_vs_normlab" in r else ""
    return f"  {name} {r['total_s']:.0f} s measured{how}{ratio}"


def plot_bench(bench: dict, path: Path) -> Path | None:
    """Horizontal bars of steady epoch time, fastest on top; the matmul floor as a dashed line."""
    rows = [(n, r) for n, r in bench["systems"].items() if r["status"] == "ok"]
    if not rows:
        return None
    rows.sort(key=lambda item: item[1]["epoch_s"], reverse=True)
    times = [r["epoch_s"] for _, r in rows]
    fig = Figure(figsize=(8, 0.5 * len(rows) + 1.6), layout="constrained")
    ax = fig.subplots()
    labels = [f"{n} (per model)" if n in PER_MODEL else n for n, _ in rows]
    colours = [FAMILY_COLOUR[n.split("-")[0]] for n, _ in rows]
    bars = ax.barh(labels, times, color=colours)
    for bar, (name, _) in zip(bars, rows):
        bar.set_hatch("//" if name in PER_MODEL else "")
    if max(times) / min(times) > LOG_SPREAD:
        ax.set_xscale("log")
    for y, (_, r) in enumerate(rows):
        ratio = f"  ({r['ratio_vs_normlab']:.2f}× normlab)" if "ratio_vs_normlab" in r else ""
        ax.text(r["epoch_s"], y, f" {r['epoch_s']:.2f} s{ratio}", va="center", fontsize="small")
    if floor := bench.get("floor"):
        ax.axvline(floor["floor_s"], color="black", linestyle="--", linewidth=1,
                   label=f"matmul floor {floor['floor_s']:.2f} s")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlim(right=max(times) * (4 if ax.get_xscale() == "log" else 1.45))
    ax.set(xlabel="steady epoch time, s (lower is better)",
           title=f"{bench['config']['preset']}: one epoch of {bench['config']['n_train']:,} "
                 f"{bench['config']['data']} images, batch 32")
    ax.grid(axis="x", alpha=0.3)
    return write_bytes(path, png_bytes(fig))
