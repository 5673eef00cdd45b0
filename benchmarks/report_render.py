"""report.md and the plots of benchmarks/report.py, from its results (a dict read from JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Display order, legend labels and colours of the servers, stable across plots and reports.
SERVERS = {
    "batching": ("this server, batching on", "#1f77b4"),
    "nobatch": ("this server, batching off", "#2ca02c"),
    "naive": ("naive Starlette + ORT", "#7f7f7f"),
    "mlserver": ("MLServer 1.7.1 (ORT runtime)", "#d62728"),
}
SATURATED_PCT = 90  # wrk CPU at or above this: the generator may be the bottleneck
BUSY_PCT = 10  # machine CPU use (other processes) around the runs from which the report warns

Results = dict[str, Any]
Cell = dict[str, Any]


# ----------------------------------------------------------------------------- report.md


def render(results: Results, out: Path) -> None:
    """Writes report.md and, when matplotlib is there, the plots."""
    plots: list[str] = []
    try:
        import matplotlib
    except ImportError:
        print("# matplotlib not installed (pip install matplotlib): no plots", file=sys.stderr)
    else:
        matplotlib.use("Agg")
        plots = write_plots(results, out)
    (out / "report.md").write_text(markdown(results, plots))
    print(f"# wrote {out / 'report.md'}" + "".join(f"\n# wrote {out / p}" for p in plots))


def model_order(results: Results) -> list[str]:
    return results.get("models") or list(dict.fromkeys(c["model"] for c in results["cells"]))


def server_order(results: Results) -> list[str]:
    present = dict.fromkeys(c["server"] for c in results["cells"])
    return [s for s in SERVERS if s in present] + [s for s in present if s not in SERVERS]


def label(server: str) -> str:
    return SERVERS.get(server, (server, ""))[0]


def machine_line(results: Results) -> str:
    m = results.get("machine") or {}
    cores = m.get("cores_usable") or results.get("cores", "?")
    return f"{m.get('cpu_model', 'unknown CPU')}, {cores} cores"


def sorted_cells(results: Results) -> list[Cell]:
    models, servers = model_order(results), server_order(results)
    return sorted(results["cells"], key=lambda c: (
        models.index(c["model"]) if c["model"] in models else len(models), c["rows"],
        c["clients"], servers.index(c["server"])))


def markdown(results: Results, plots: list[str]) -> str:
    lines = [f"# End-to-end benchmark, {results.get('date_utc', 'date not recorded')}", ""]
    lines += _method(results)
    lines += ["", "## Limits", ""]
    lines += _limits(results)
    lines += _results_table(results)
    lines += _mlserver(results)
    rss = results.get("rss_mb") or {}
    if rss:
        lines += ["", "## Resident memory", "",
                  "Server process and its children, with every example model loaded.", "",
                  "| server | at start MB | after the runs MB |", "| --- | ---: | ---: |"]
        lines += [f"| {label(k)} | {v['start']:.0f} | {v.get('end', float('nan')):.0f} |"
                  for k, v in rss.items()]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p[:-4]}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _method(results: Results) -> list[str]:
    """Machine, software, method, how quiet the machine was, and the command."""
    m = results.get("machine") or {}
    server_cpu, load_cpu = results.get("server_cpu", "0"), results.get("load_cpu", "1")
    lines = [
        f"- **Machine:** {machine_line(results)}"
        + (f" ({m['cores_online']} online), {m.get('memory_gb')} GiB RAM, {m.get('kernel')}"
           if m else " (machine not recorded)"),
        f"- **Software:** Python {m.get('python', '?')}, onnxruntime {m.get('onnxruntime', '?')}, "
        f"numpy {m.get('numpy', '?')}, {m.get('wrk') or 'wrk'}; commit {m.get('commit', '?')}",
        f"- **Method:** each server pinned to core {server_cpu}, wrk (1 thread, closed loop: "
        f"each client keeps one request in flight) pinned to core {load_cpu}; "
        f"{results.get('duration_s', '?')} s per run, median of {results.get('repeats', '?')} "
        "runs; in each (model, clients) cell the servers' runs are interleaved "
        "(A, B, C, A, B, C, ...). One sample row per request unless rows/req says otherwise.",
    ]
    busy = {w: m.get(f"cpu_busy_pct_{w}") for w in ("before", "after")}
    during = m.get("cpu_other_pct_during")
    if during is not None or any(b is not None for b in busy.values()):
        said = [f"{b:.0f}% busy {w} the runs (2 s samples)" for w, b in busy.items()
                if b is not None]
        if during is not None:
            said.append(f"{during:.0f}% of its CPU not charged to the benchmark's processes "
                        "during them (other processes, kernel network work)")
        lines += [f"- **Quiet machine?** {'; '.join(said)}."]
    if "command" in results:
        lines += ["- **Command** (from the repository root):", "",
                  "  ```", "  " + results["command"], "  ```", "",
                  "  which ran (`--registry`: the example models, built by report.py into a "
                  "temporary folder that MLServer served too):", "",
                  "  ```", "  " + results["bench_e2e_command"], "  ```"]
    if any(b is not None and b >= BUSY_PCT for b in [*busy.values(), during]):
        lines += ["", f"> **The machine was not idle** ({BUSY_PCT}% or more above): other "
                  "processes may have taken CPU time from the servers or wrk, making these "
                  "numbers low and noisy."]
    return lines


def _limits(results: Results) -> list[str]:
    """The generator's ceiling and the raw ONNX Runtime limit per model."""
    server_cpu = results.get("server_cpu", "0")
    lines: list[str] = []
    ceiling = results.get("generator_ceiling")
    if ceiling:
        lines += [f"**Generator ceiling:** {ceiling['rps']:,.0f} req/s (wrk against a raw ASGI "
                  f"endpoint answering a constant, on core {server_cpu}, 64 clients; p50 "
                  f"{ceiling['p50_ms']:.2f} ms, wrk CPU {ceiling['gen_cpu_pct']:.0f}%). No "
                  "Python HTTP server can pass this here; a server near it is measuring the "
                  "HTTP stack and the generator more than itself.", ""]
    raw = results.get("raw_ort") or {}
    if raw:
        lines += ["**Raw ONNX Runtime limit** (`session.run` in one process on the server "
                  "core, 1 thread, best of batch sizes 1 to 256, no HTTP or JSON): the ceiling "
                  "for one-row requests is this many requests/s, reached only by batching.", "",
                  "| model | rows/s | at batch size |", "| --- | ---: | ---: |"]
        lines += [f"| {k} | {v['rows_per_s']:,.0f} | {v['batch']} |" for k, v in raw.items()]
        lines.append("")
    return lines


def _results_table(results: Results) -> list[str]:
    cells = sorted_cells(results)
    naive = {(c["model"], c["clients"], c["rows"]): c["rps"] for c in cells
             if c["server"] == "naive"}
    lines = ["## Results", "",
             "| model | rows/req | clients | server | req/s | p50 ms | p99 ms | vs naive | "
             "generator CPU | errors |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in cells:
        base = naive.get((c["model"], c["clients"], c["rows"]))
        ratio = f"{c['rps'] / base:.2f}x" if base else "-"
        cpu = f"{c['gen_cpu_pct']:.0f}%"
        cpu = f"**{cpu}**" if c["gen_cpu_pct"] >= SATURATED_PCT else cpu
        name = label(c["server"]) + (" *" if c.get("interleaved") is False else "")
        lines.append(f"| {c['model']} | {c['rows']} | {c['clients']} | {name} | "
                     f"{c['rps']:,.0f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | {ratio} | "
                     f"{cpu} | {c['errors']:.0f} |")
    lines += ["", "req/s, p50 and p99 are medians over the runs. *vs naive*: req/s over the naive "
              "server's in the same cell. *generator CPU*: wrk's CPU time over the run's length "
              f"(100% is its whole core; bold from {SATURATED_PCT}%: the generator may be what "
              "limits the number, which is then a lower bound). *errors*: non-2xx answers plus "
              "socket errors and timeouts."]
    return lines


def _mlserver(results: Results) -> list[str]:
    mls = results.get("mlserver")
    if not mls:
        return []
    server_cpu = results.get("server_cpu", "0")
    lines = ["", "## MLServer", ""]
    if mls.get("status") != "ok":
        lines += [f"MLServer {mls.get('status')}: {mls.get('reason')}"]
        if mls.get("log_tail"):
            lines += ["", "```", mls["log_tail"].strip(), "```"]
        return lines
    v, s = mls["versions"], mls["settings"]
    lines += [
        f"\\* MLServer {v['mlserver']} (uvicorn {v['uvicorn']}, uvloop {v['uvloop']}, "
        f"httptools {v.get('httptools')}, onnxruntime {v['onnxruntime']}) serving the "
        "same `model.onnx` files through `benchmarks/mlserver_onnx` (ONNX Runtime, "
        f"1 thread), pinned to core {server_cpu}. Settings: `{json.dumps(s)}`.",
        "",
        "**Its runs are not interleaved with the others':** they ran right after them, "
        "with the same cases, duration and repeats, so slow drift of the machine "
        "between the two phases is not cancelled out.",
    ]
    if mls.get("warning"):
        lines += ["", f"Warning: {mls['warning']}."]
    return lines


# ----------------------------------------------------------------------------- plots


def write_plots(results: Results, out: Path) -> list[str]:
    import matplotlib.pyplot as plt

    written = []
    for model in model_order(results):
        cells = [c for c in results["cells"] if c["model"] == model and c["rows"] == 1]
        if not cells:
            continue
        for kind, draw in (("throughput", plot_throughput), ("latency", plot_latency)):
            fig = draw(results, model, cells)
            name = f"{model}-{kind}.png"
            fig.savefig(out / name, dpi=130)
            plt.close(fig)
            written.append(name)
    return written


def subtitle(results: Results) -> str:
    return (f"{machine_line(results)}; server on core {results.get('server_cpu', '0')}, "
            f"wrk on core {results.get('load_cpu', '1')}; one row per request; "
            f"{results.get('duration_s', '?')} s runs, median of {results.get('repeats', '?')}")


def by_server(results: Results, cells: list[Cell]) -> list[tuple[str, list[Cell]]]:
    return [(s, sorted((c for c in cells if c["server"] == s), key=lambda c: c["clients"]))
            for s in server_order(results) if any(c["server"] == s for c in cells)]


def legend_label(server: str, cells: list[Cell]) -> str:
    return label(server) + (" (run after, not interleaved)"
                            if any(c.get("interleaved") is False for c in cells) else "")


def plot_throughput(results: Results, model: str, cells: list[Cell]) -> Any:
    """Requests/s vs clients per server (bars: min to max of the runs) and the limits."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    top = 0.0
    handles = []
    for server, sc in by_server(results, cells):
        xs = [c["clients"] for c in sc]
        ys = [c["rps"] for c in sc]
        lo = [y - min(r["rps"] for r in c.get("runs") or [c]) for y, c in zip(ys, sc, strict=True)]
        hi = [max(r["rps"] for r in c.get("runs") or [c]) - y for y, c in zip(ys, sc, strict=True)]
        handles.append(ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, lw=2, ms=6,
                                   color=SERVERS.get(server, ("", None))[1],
                                   label=legend_label(server, sc)))
        top = max(top, *(y + h for y, h in zip(ys, hi, strict=True)))
    clients = sorted({c["clients"] for c in cells})
    # Reference lines when they fit the scale (at most 1.6x the best server), else a note.
    refs = []
    ceiling = results.get("generator_ceiling")
    if ceiling:
        refs.append((ceiling["rps"], "req/s", "generator ceiling, wrk vs a constant ASGI "
                     "endpoint", ":", "#444444"))
    raw = (results.get("raw_ort") or {}).get(model)
    if raw:
        refs.append((raw["rows_per_s"], "rows/s = 1-row req/s ceiling", "raw ONNX Runtime, "
                     f"session.run at batch {raw['batch']}", "--", "#9467bd"))
    notes = []
    ylim = top * 1.15
    for value, unit, text, style, color in refs:
        if value <= top * 1.6:
            handles.append(ax.axhline(value, ls=style, color=color, lw=1.5,
                                      label=f"{text}: {value:,.0f} {unit}"))
            ylim = max(ylim, value * 1.08)
        else:
            ratio = value / top
            notes.append(f"  {text}: {value:,.0f} {unit} ({ratio:,.{1 if ratio < 10 else 0}f}x)")
    if notes:
        notes.insert(0, "Off the scale (x the top of the curves):")
        ax.text(0.01, 0.98, "\n".join(notes), transform=ax.transAxes, va="top", ha="left",
                fontsize=8.5, color="#333333",
                bbox={"boxstyle": "round", "fc": "white", "ec": "#bbbbbb", "alpha": 0.9})
        ylim *= 1 + 0.06 * len(notes)  # room for the note above the lines
    ax.set_xscale("log", base=2)
    ax.set_xticks(clients, [str(c) for c in clients])
    ax.minorticks_off()
    ax.set_ylim(0, ylim)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
    ax.set_xlabel("concurrent clients (closed loop, one request in flight each)")
    ax.set_ylabel("throughput (requests/s)")
    ax.grid(True, alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(f"{model}: throughput vs concurrency", fontsize=14, fontweight="bold")
    ax.set_title(subtitle(results), fontsize=9, color="#444444")
    return fig


def plot_latency(results: Results, model: str, cells: list[Cell]) -> Any:
    """p50 (solid) and p99 (dashed) latency vs requests/s, one colour per server."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    handles = []
    for server, sc in by_server(results, cells):
        color = SERVERS.get(server, ("", None))[1]
        xs = [c["rps"] for c in sc]
        ax.plot(xs, [c["p50_ms"] for c in sc], "-o", color=color, lw=2, ms=6)
        ax.plot(xs, [c["p99_ms"] for c in sc], "--s", color=color, lw=1.5, ms=5, alpha=0.85)
        for c in sc:
            ax.annotate(f"{c['clients']}", (c["rps"], c["p50_ms"]), textcoords="offset points",
                        xytext=(5, -11), fontsize=8, color=color)
        handles.append(Line2D([], [], color=color, lw=2, label=legend_label(server, sc)))
    handles += [Line2D([], [], color="black", ls="-", marker="o", label="p50 (labels: clients)"),
                Line2D([], [], color="black", ls="--", marker="s", label="p99")]
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", axis="y", alpha=0.1)
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(f"{model}: latency percentiles vs throughput", fontsize=14, fontweight="bold")
    ax.set_title(subtitle(results), fontsize=9, color="#444444")
    return fig
