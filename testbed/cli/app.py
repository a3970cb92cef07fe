"""``testbed``: one typer app, one small function per command, each calling one library function."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from testbed.errors import TestbedError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Edge-AI emulation testbed: run topologies of devices, edge nodes and clouds on Ray.")
console = Console(width=max(150, Console().width))
err_console = Console(stderr=True)


def fail(exc: TestbedError) -> None:
    err_console.print(f"[bold red]error[/] ({type(exc).__name__}): {exc}", highlight=False)
    raise typer.Exit(exc.exit_code)


def table_from_frame(df: object, title: str = "", floatfmt: str = "{:.2f}") -> Table:
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c))
    for _, row in df.iterrows():
        t.add_row(*[floatfmt.format(v) if isinstance(v, float) else str(v) for v in row.tolist()])
    return t


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="topology or experiment YAML")]) -> None:
    """Check a topology or experiment file."""
    from testbed.config.loader import Experiment, load_any

    try:
        obj = load_any(file)
    except TestbedError as exc:
        fail(exc)
        return
    topo = obj.topology if isinstance(obj, Experiment) else obj
    kind = "experiment" if isinstance(obj, Experiment) else "topology"
    console.print(f"[green]ok[/]: {kind} {file} — {len(topo.nodes)} nodes, {len(topo.links)} links")


@app.command()
def run(experiment: Annotated[Path, typer.Argument(help="experiment YAML")],
        address: Annotated[str | None, typer.Option(help="Ray cluster address (default: local Ray)")] = None,
        out: Annotated[Path, typer.Option(help="results root")] = Path("results"),
        no_fit: Annotated[bool, typer.Option("--no-fit", help="skip fitting cgroup quotas")] = False) -> None:
    """Run an experiment and write its results directory."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from testbed.config.loader import load_experiment
    from testbed.runner import run_experiment

    logging.basicConfig(level=logging.WARNING)
    try:
        exp = load_experiment(experiment)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as prog:
            task = prog.add_task(f"{exp.spec.name}: starting", total=None)

            def progress(done: int, total: int, label: str) -> None:
                prog.update(task, completed=done, total=total, description=f"{exp.spec.name}: {label or 'running'}")

            outcome = run_experiment(exp, out, address, progress, fit_caps=not no_fit)
    except TestbedError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: torn down; the partial run is kept and marked")
        raise typer.Exit(130) from None
    for w in outcome.warnings:
        err_console.print(f"[yellow]warning[/]: {w}", highlight=False)
    if not outcome.summary.empty:
        console.print(table_from_frame(_short_summary(outcome.summary), title=f"{exp.spec.name} summary"))
    if (outcome.path / "findings.csv").exists():
        import pandas as pd

        for r in pd.read_csv(outcome.path / "findings.csv").itertuples():
            colour = {"held": "green", "did not hold": "red"}.get(str(r.result), "cyan")
            ev = f" [dim]({r.evidence})[/]" if isinstance(getattr(r, "evidence", None), str) and r.evidence else ""
            console.print(f"[{colour}]{r.result}[/]: {r.finding}{ev}", highlight=False)
    tm = outcome.manifest.get("time")
    if tm:
        console.print(f"time dilation k = {tm['time_dilation']:g} ({tm['how']['mode']}, set by {tm['how']['binding']}"
                      "): "
                      f"times above are emulated; {tm.get('emulated_s', 0):.1f} s emulated took "
                      f"{tm.get('wall_s', 0):.1f} s of wall time", highlight=False)
    console.print(f"results: {outcome.path}")


@app.command()
def sweep(sweep_file: Annotated[Path, typer.Argument(help="sweep YAML")],
          address: Annotated[str | None, typer.Option(help="Ray cluster address (default: local Ray)")] = None,
          out: Annotated[Path, typer.Option(help="results root (sweeps go to OUT/sweeps/NAME)")] = Path("results"),
          parallel: Annotated[int | None, typer.Option(help="points in flight at once (default: one per Ray node)")]
          = None) -> None:
    """Run an experiment over a grid of parameter values, each point a Ray task; finished points are skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from testbed.sweep import run_sweep

    logging.basicConfig(level=logging.WARNING)
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as prog:
            task = prog.add_task(f"sweep {sweep_file.stem}", total=None)

            def progress(done: int, total: int, label: str) -> None:
                prog.update(task, completed=done, total=total, description=f"sweep: {label}")

            table, root = run_sweep(sweep_file, out, address, parallel, progress)
    except TestbedError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished points are kept; run the sweep again to resume")
        raise typer.Exit(130) from None
    if not table.empty:
        cols = [c for c in table.columns if c not in ("run_dir", "error", "ray_node")][:12]
        console.print(table_from_frame(table[cols], title=f"sweep {root.name}"))
        failed = table[table.status != "complete"]
        for r in failed.itertuples():
            err_console.print(f"[red]{r.status}[/]: point {r.point}: {r.error}")
    console.print(f"table: {root / 'sweep.csv'}  plot: {root / 'sweep.png'}")
    if not table.empty and (table.status != "complete").any():
        raise typer.Exit(1)


def _short_summary(df: object) -> object:
    """The columns a person reads first; the full table is in summary.csv."""
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    names = {"device": "device", "phase": "phase", "target": "runs on", "requests": "n",
             "latency_p50_ms": "p50 ms", "latency_p95_ms": "p95 ms", "compute_ms": "compute ms",
             "transfer_ms": "transfer ms", "bytes_per_request": "bytes/req", "energy_j_per_request": "J/req",
             "fastest": "fastest",
             # early exit
             "config": "config", "local_exits": "local", "edge_acc": "edge acc %", "cloud_acc": "cloud acc %",
             "overall_acc": "acc %", "overall_latency_ms": "latency ms", "bytes_up_to_cloud": "bytes up",
             # partition offloading
             "algorithm": "algorithm", "predicted_total_ms": "predicted ms", "measured_total_ms": "measured ms",
             "prediction_error_pct": "error %",
             # blockchain-incentivized offloading
             "p50_ms": "p50 ms", "overhead_p50_ms": "chain overhead ms", "tasks": "tasks", "paid": "paid",
             "refunded": "refunded", "bad_claims_slashed": "frauds slashed", "good_claims_slashed": "honest slashed",
             "attacks_rejected": "txs rejected"}
    cols = [c for c in names if c in df.columns]
    return df[cols].rename(columns=names) if cols else df


@app.command()
def doctor(require: Annotated[list[str] | None, typer.Option(
        "--require", help="exit 3 unless this capability is present (repeatable), e.g. --require mininet-wifi")] = None
           ) -> None:
    """Say which emulation backends this host supports, and why."""
    from testbed.doctor import choose_backends, probe

    caps = probe()
    t = Table(title="host capabilities")
    for col in ("capability", "ok", "detail"):
        t.add_column(col)
    for c in caps:
        t.add_row(c.name, "[green]yes[/]" if c.ok else "[red]no[/]", c.detail)
    console.print(t)
    links, compute, reasons = choose_backends("auto", "auto", caps)
    netem = next((c for c in caps if c.name == "tc-netem"), None)
    console.print(f"auto backends: links=[bold]{links}[/], compute=[bold]{compute}[/]")
    for r in reasons:
        console.print(f"  {r}")
    if links == "kernel" and netem is not None and not netem.ok:
        console.print("  delay/jitter/loss: applied in the transport's receive path (no netem in this kernel)")
    have = {c.name: c.ok for c in caps}
    missing = [r for r in require or [] if not have.get(r, False)]
    if missing:
        unknown = [r for r in missing if r not in have]
        err_console.print(f"[red]missing[/]: {', '.join(missing)}"
                          + (f" (known capabilities: {', '.join(have)})" if unknown else ""))
        raise typer.Exit(3)


@app.command()
def clean(run_id: Annotated[str | None, typer.Option("--run", help="only this run id")] = None,
          all_: Annotated[bool, typer.Option("--all", help="also live runs, and every object named tb-*")] = False
          ) -> None:
    """Remove namespaces, cgroups, routes and processes that killed runs left behind (idempotent)."""
    from testbed.lifecycle.cleanup import clean as do_clean

    rep = do_clean(run_id, include_live=all_, sweep=all_)
    for r in rep.removed:
        console.print(f"removed {r}")
    for s in rep.skipped_live_runs:
        console.print(f"[yellow]skipped[/] run {s}: its owner is still running (use --all)")
    for f in rep.failed:
        err_console.print(f"[red]failed[/] {f}")
    if not rep.removed and not rep.failed:
        console.print("nothing to clean")
    if rep.failed:
        raise typer.Exit(5)


@app.command()
def contracts() -> None:
    """Compile the chain's Vyper contracts into the cache (a run compiles on first use otherwise)."""
    import time as _t

    from testbed.chain import CONTRACTS, EVM_VERSION, cache_dir, compiled

    t = Table(title=f"contracts (EVM {EVM_VERSION}, cache {cache_dir()})")
    for col in ("contract", "bytecode bytes", "functions", "events", "seconds"):
        t.add_column(col)
    for f in sorted(CONTRACTS.glob("*.vy")):
        t0 = _t.monotonic()
        c = compiled(f.stem)
        kinds = [e.get("type") for e in c["abi"]]
        t.add_row(f.stem, str(len(c["bytecode"]) // 2 - 1), str(kinds.count("function")), str(kinds.count("event")),
                  f"{_t.monotonic() - t0:.2f}")
    console.print(t)


@app.command()
def schema(out: Annotated[Path | None, typer.Option(help="directory for the JSON Schema files")] = None) -> None:
    """Export JSON Schemas of topology and experiment files."""
    from testbed.config.models import Catalog, ExperimentSpec, TopologySpec

    schemas = {"topology": TopologySpec.model_json_schema(), "experiment": ExperimentSpec.model_json_schema(),
               "catalog": Catalog.model_json_schema()}
    if out is None:
        console.print_json(json.dumps(schemas))
        return
    out.mkdir(parents=True, exist_ok=True)
    for k, v in schemas.items():
        (out / f"{k}.schema.json").write_text(json.dumps(v, indent=2))
        console.print(f"wrote {out / (k + '.schema.json')}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory under results/")]) -> None:
    """Render report.html (summary table, latency CDF, per-hop breakdown, bytes per link)."""
    from testbed.report import render_report

    try:
        out = render_report(run_dir)
    except FileNotFoundError as exc:
        err_console.print(f"[bold red]error[/]: {exc}")
        raise typer.Exit(2) from None
    console.print(f"report: {out}")


@app.command()
def calibrate(classes: Annotated[str, typer.Option(help="comma-separated hardware classes")] = "rpi4b",
              models: Annotated[str, typer.Option(help="comma-separated models")] = "resnet18,mobilenet_v2",
              refit: Annotated[bool, typer.Option("--refit", help="forget earlier fits on this host")] = False) -> None:
    """Measure this host, fit each class's caps, and print emulated vs published latency."""
    from testbed import bench as b
    from testbed.calibration import CalibrationStore, calibration_path

    logging.basicConfig(level=logging.WARNING)
    if refit:
        st = CalibrationStore.load()
        st.cgroup_cores.clear()
        st.dilation_slowdown.clear()
        st.fit_error_pct.clear()
        st.host_ms.clear()
        st.save()
    _, compute = b.available_backends()
    rows = []
    with console.status("calibrating ..."):
        for hc in classes.split(","):
            rows += b.bench_classes(compute, tuple(models.split(",")), hardware=hc.strip(), requests=20)
    _print_rows(rows)
    store = CalibrationStore.load()
    console.print(f"host one-thread latencies (ms): {json.dumps({k: round(v, 2) for k, v in store.host_ms.items()})}")
    console.print(f"saved: {calibration_path()}")


def _print_rows(rows: list[Any]) -> None:
    t = Table(title="measured vs target")
    for c in ("bench", "case", "measured", "target", "error", "tolerance", "ok"):
        t.add_column(c)
    for r in rows:
        t.add_row(r.bench, r.case, f"{r.measured:.3f} {r.unit}", f"{r.expected:.3f} {r.unit}",
                  f"{r.error:+.2f} {r.tolerance_unit}", f"{r.tolerance:g} {r.tolerance_unit}",
                  "[green]yes[/]" if r.ok else "[red]NO[/]")
    console.print(t)


@app.command()
def bench(which: Annotated[str, typer.Argument(
              help="suites: fidelity | seeds | scale; single benchmarks: links | transport | classes | demo | "
                   "dilation | classes-all | fl-flower | chain | trace | all")] = "all",
          out: Annotated[Path, typer.Option(help="where to store the JSON record")] = Path("results/bench"),
          size: Annotated[str, typer.Option(help="suite size (fidelity, seeds): quick (under 10 min) or full")]
          = "quick",
          only: Annotated[str | None, typer.Option(help="seeds suite: only entries whose name contains this")] = None,
          url: Annotated[str | None, typer.Option(help="chain: also time a JSON-RPC node on this machine")] = None,
          quick: Annotated[bool, typer.Option("--quick", help="same as --size quick")] = False,
          full: Annotated[bool, typer.Option("--full", help="same as --size full")] = False,
          load: Annotated[bool, typer.Option("--load", help="run beside a CPU-burning competitor on every core "
                                                           "(the host made slower; killed when the bench ends)")]
          = False,
          ) -> None:
    """Measure the emulation against its targets and print measured beside target."""

    from testbed import bench as b

    if quick and full:
        err_console.print("[red]error[/]: --quick and --full together: choose one")
        raise typer.Exit(2)
    size = "quick" if quick else "full" if full else size

    logging.basicConfig(level=logging.WARNING)
    if load:
        from testbed.bench_time import competitor

        with competitor() as pids:
            console.print(f"CPU-burning competitor on every core: pids {', '.join(map(str, pids))}")
            _bench(which, out, size, only, url, b)
        return
    _bench(which, out, size, only, url, b)


def _bench(which: str, out: Path, size: str, only: str | None, url: str | None, b: Any) -> None:
    import datetime as dt

    from testbed import bench_time as bt

    if which == "seeds":
        _seeds(size, out, only)
        return
    if which == "scale":
        import pandas as pd

        from testbed.suites import run_scale

        with console.status("scale: 10, 50 and 200 emulated devices ..."):
            srows, sdir = run_scale(out_root=out)
        console.print(table_from_frame(pd.DataFrame(srows), title="start-up time and memory"))
        console.print(f"plot: {sdir / 'scale.png'}")
        return
    links, compute = b.available_backends()
    jobs: dict[str, Callable[[], list[b.Row]]] = {
        "links": lambda: b.bench_links(links), "transport": lambda: sum((b.bench_transport(x) for x in links), []),
        "classes": lambda: b.bench_classes(compute), "demo": bt.bench_demo_host,
        "dilation": lambda: bt.bench_dilated_links(links[:2]) + bt.bench_dilation_compute(compute[-1]),
        "classes-all": lambda: bt.bench_classes_all(models=bt.FULL_MODELS if size == "full" else bt.QUICK_MODELS),
        "fl-flower": _fl_flower,
        "chain": lambda: _chain(links, url), "trace": lambda: b.bench_traces(links)}
    label = which
    if which == "fidelity":
        if size not in ("quick", "full"):
            err_console.print(f"[red]error[/]: --size {size!r}: use quick or full")
            raise typer.Exit(2)
        jobs = dict(b.fidelity(size, links, compute))  # the suite's own sizes of the same benchmarks
        names, label = list(jobs), f"fidelity-{size}"
    elif which == "all":
        names = [j for j in jobs if j not in ("fl-flower", "chain", "dilation", "classes-all")]
    elif which in jobs:
        names = [which]
    else:
        err_console.print(f"[red]error[/]: unknown benchmark {which!r}; choose one of: {', '.join(jobs)}, all")
        raise typer.Exit(2)
    rows: list[b.Row] = []
    try:
        for name in names:
            with console.status(f"bench {name} ..."):
                rows += jobs[name]()
    except TestbedError as exc:
        fail(exc)
    _print_rows(rows)
    out.mkdir(parents=True, exist_ok=True)
    f = out / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{label}.json"
    f.write_text(json.dumps(b.as_records(rows), indent=2))
    console.print(f"record: {f}  ({sum(r.ok for r in rows)}/{len(rows)} within tolerance)")


def _seeds(size: str, out: Path, only: str | None) -> None:
    from testbed.suites import run_suite

    if size not in ("quick", "full"):
        err_console.print(f"[red]error[/]: --size {size!r}: use quick or full")
        raise typer.Exit(2)
    with console.status("seeds suite ...") as st:
        rows, suite_dir = run_suite(size, out, only, progress=lambda name: st.update(f"seeds suite: {name}"))
    t = Table(title=f"seeds suite ({size})")
    for c in ("entry", "finding", "verdict", "evidence"):
        t.add_column(c, overflow="fold")
    colour = {"PASS": "green", "FAIL": "red", "ERROR": "red"}
    for r in rows:
        t.add_row(r["entry"], r["finding"], f"[{colour.get(r['verdict'], 'cyan')}]{r['verdict']}[/]", r["evidence"])
    console.print(t)
    console.print(f"report: {suite_dir / 'index.html'}  summary: {suite_dir / 'summary.json'}")


def _chain(links: list[str], url: str | None) -> list[Any]:
    from testbed.chain.bench import bench_chain

    return bench_chain(links, url=url)


def _fl_flower() -> list[Any]:
    from workloads.fl.bench import bench_fl_flower  # the CLI may reach into workloads; the core may not

    return bench_fl_flower()


def main() -> None:
    try:
        app()
    except TestbedError as exc:  # pragma: no cover - commands catch their own
        err_console.print(f"error: {exc}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
