"""Scenarios: what happens to the network while a workload runs.

An experiment may carry ``scenario:`` with timed link changes (``events``) and link traces replayed from
CSV files (``traces``). Times count from the workload's first step. Every applied change is a span of
kind ``scenario`` in the run's results, so a plot can put the network's state beside the workload's.

- ``events``: ``{at_s, link: [a, b], up: {rate, delay, jitter, loss}, down: {...}}`` merges the given
  fields over the link's current shaping, per direction (``up`` is a→b as the topology declares it;
  naming the ends the other way round swaps them). ``down_for_s: S`` takes the link down for S seconds
  (kernel backend: every packet on it is dropped, both ways; TCP retransmits once it is back).
- ``traces``: ``{link: [a, b], direction: up|down|both, file: trace.csv}``; the CSV has ``t_s`` and any of
  ``rate_mbit``, ``delay_ms``, ``jitter_ms``, ``loss_pct``; each row is applied at its time. ``loop: true``
  repeats the trace after its last row.
"""

from __future__ import annotations

import csv
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed import clock
from testbed.config.models import ChurnEvent, CpuSpike, LinkSpecPatch, NodeEvent, PartitionEvent, ScenarioSpec
from testbed.errors import ConfigError

# Bounds on what a scenario may ask for, checked before anything is built: each timed change is a Python object
# and a call at run time, so a scenario of millions of them exhausts memory while it is still being validated.
MAX_TRACE_ROWS = 100_000
MAX_ACTIONS = 200_000

if TYPE_CHECKING:
    from testbed.testbed import Testbed
    from testbed.topology import Topology


@dataclass(order=True)
class Action:
    t_s: float
    seq: int
    kind: str = field(compare=False)  # "set" | "down" | "up" | "crash" | "restart" | "cpu_spike" | "leave" | "join"
    link: int = field(compare=False)  # -1 for node events
    up: LinkSpecPatch | None = field(compare=False, default=None)
    down: LinkSpecPatch | None = field(compare=False, default=None)
    source: str = field(compare=False, default="")
    info: dict[str, Any] = field(compare=False, default_factory=dict)  # e.g. distance and SNR (mobility)
    node: str = field(compare=False, default="")  # crash / restart


def _link_index(topo: Topology, ends: tuple[str, str], source: str, path: str) -> tuple[int, bool]:
    """The link joining ``ends`` and whether they are named in its declared order."""
    for lk in topo.links:
        if (lk.a, lk.b) == tuple(ends):
            return lk.index, True
        if (lk.b, lk.a) == tuple(ends):
            return lk.index, False
    raise ConfigError(f"no link joins {ends[0]!r} and {ends[1]!r}", file=source, path=path,
                      fix="name the two ends of a link of the topology")


def read_trace(path: Path, source: str, where: str) -> list[tuple[float, LinkSpecPatch]]:
    """Rows of a trace CSV as (time, patch); raises ``ConfigError`` naming the row that is wrong."""
    if not path.exists():
        raise ConfigError(f"trace file {str(path)!r} not found", file=source, path=where,
                          fix="give a path relative to the experiment file")
    rows: list[tuple[float, LinkSpecPatch]] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        known = {"t_s", "rate_mbit", "delay_ms", "jitter_ms", "loss_pct"}
        if "t_s" not in cols or not (cols & (known - {"t_s"})) or cols - known:
            raise ConfigError(f"{path}: columns {sorted(cols)}; want t_s and any of rate_mbit, delay_ms, jitter_ms, "
                              "loss_pct", file=source, path=where, fix="fix the CSV header")
        last = -1.0
        for i, r in enumerate(reader, start=2):
            try:
                t = float(r["t_s"])
                patch = LinkSpecPatch.model_validate({k: float(v) for k, v in r.items() if k != "t_s" and v != ""})
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{path}, line {i}: {e}", file=source, path=where,
                                  fix="numbers only; rate_mbit > 0, 0 <= loss_pct <= 100") from None
            if not math.isfinite(t) or t < 0:
                raise ConfigError(f"{path}, line {i}: t_s {r['t_s']!r} is not a time", file=source, path=where,
                                  fix="seconds from the start of the run: a finite number >= 0")
            if t < last:
                raise ConfigError(f"{path}, line {i}: t_s {t} goes back in time (previous {last})", file=source,
                                  path=where, fix="sort the rows by t_s")
            if len(rows) >= MAX_TRACE_ROWS:
                raise ConfigError(f"{path} has more than {MAX_TRACE_ROWS} rows", file=source, path=where,
                                  fix=f"resample it to at most {MAX_TRACE_ROWS} rows (every row is a re-shape of "
                                      "the link at run time)")
            last = t
            rows.append((t, patch))
    if not rows:
        raise ConfigError(f"{path} has no rows", file=source, path=where, fix="add at least one row")
    return rows


def timeline(spec: ScenarioSpec, topo: Topology, source: str, base_dir: Path, seed: int = 0) -> list[Action]:
    """Every change the scenario makes, in time order (validated against the topology)."""
    acts: list[Action] = []
    seq = 0
    for i, ev in enumerate(spec.events):
        if isinstance(ev, PartitionEvent):
            unknown = [n for n in ev.partition if n not in topo.nodes]
            if unknown:
                raise ConfigError(f"no node {unknown[0]!r}", file=source, path=f"scenario.events[{i}].partition",
                                  fix="name nodes of the topology")
            inside = set(ev.partition)
            cut = [lk.index for lk in topo.links if (lk.a in inside) != (lk.b in inside)]
            if not cut:
                raise ConfigError("the partition cuts no link", file=source, path=f"scenario.events[{i}].partition",
                                  fix="name a set of nodes that has links to the rest")
            for idx in cut:
                acts.append(Action(ev.at_s, seq, "down", idx, source=f"events[{i}]",
                                   info={"partition": sorted(inside)}))
                seq += 1
                if ev.heal_after_s is not None:
                    acts.append(Action(ev.at_s + ev.heal_after_s, seq, "up", idx, source=f"events[{i}]"))
                    seq += 1
            continue
        if isinstance(ev, CpuSpike):
            if ev.cpu_spike not in topo.nodes:
                raise ConfigError(f"no node {ev.cpu_spike!r}", file=source, path=f"scenario.events[{i}].cpu_spike",
                                  fix="name a node of the topology")
            acts.append(Action(ev.at_s, seq, "cpu_spike", -1, source=f"events[{i}]", node=ev.cpu_spike,
                               info={"cores": ev.cores, "duration_s": ev.duration_s}))
            seq += 1
            continue
        if isinstance(ev, ChurnEvent):
            node = ev.leave or ev.join or ""
            if node not in topo.nodes:
                raise ConfigError(f"no node {node!r}", file=source,
                                  path=f"scenario.events[{i}].{'leave' if ev.leave else 'join'}",
                                  fix=f"one of {', '.join(list(topo.nodes)[:10])}")
            if ev.join is not None:
                if not any(a.node == node and a.kind == "leave" for a in acts):
                    acts.append(Action(0.0, seq, "leave", -1, node=node, source=f"events[{i}]",
                                       info={"absent_from_start": True}))
                    seq += 1
                acts.append(Action(ev.at_s, seq, "join", -1, node=node, source=f"events[{i}]"))
                seq += 1
                continue
            acts.append(Action(ev.at_s, seq, "leave", -1, node=node, source=f"events[{i}]"))
            seq += 1
            if ev.rejoin_after_s is not None:
                acts.append(Action(ev.at_s + ev.rejoin_after_s, seq, "join", -1, node=node, source=f"events[{i}]"))
                seq += 1
            continue
        if isinstance(ev, NodeEvent):
            if ev.crash not in topo.nodes:
                raise ConfigError(f"no node {ev.crash!r} to crash", file=source, path=f"scenario.events[{i}].crash",
                                  fix=f"one of {', '.join(list(topo.nodes)[:10])}")
            if topo.nodes[ev.crash].pool is not None:
                raise ConfigError(f"{ev.crash} is in a device pool, whose devices share one process", file=source,
                                  path=f"scenario.events[{i}].crash", fix="crash a node that is not in a pool")
            acts.append(Action(ev.at_s, seq, "crash", -1, node=ev.crash, source=f"events[{i}]"))
            seq += 1
            if ev.restart_after_s is not None:
                acts.append(Action(ev.at_s + ev.restart_after_s, seq, "restart", -1, node=ev.crash,
                                   source=f"events[{i}]"))
                seq += 1
            continue
        idx, fwd = _link_index(topo, ev.link, source, f"scenario.events[{i}].link")
        up, down = (ev.up, ev.down) if fwd else (ev.down, ev.up)
        if ev.down_for_s is not None:
            if up or down:
                raise ConfigError("an event either re-shapes a link or takes it down, not both", file=source,
                                  path=f"scenario.events[{i}]", fix="split it into two events")
            acts += [Action(ev.at_s, seq, "down", idx, source=f"events[{i}]"),
                     Action(ev.at_s + ev.down_for_s, seq + 1, "up", idx, source=f"events[{i}]")]
            seq += 2
            continue
        if up is None and down is None:
            raise ConfigError("the event changes nothing", file=source, path=f"scenario.events[{i}]",
                              fix="give up:, down: or down_for_s:")
        acts.append(Action(ev.at_s, seq, "set", idx, up, down, f"events[{i}]"))
        seq += 1
    for i, tr in enumerate(spec.traces):
        idx, fwd = _link_index(topo, tr.link, source, f"scenario.traces[{i}].link")
        direction = tr.direction if fwd or tr.direction == "both" else {"up": "down", "down": "up"}[tr.direction]
        rows = read_trace((base_dir / tr.file) if not Path(tr.file).is_absolute() else Path(tr.file), source,
                          f"scenario.traces[{i}].file")
        period = rows[-1][0] + (rows[1][0] - rows[0][0] if len(rows) > 1 else 1.0)
        if tr.loop:
            if period <= 0:
                raise ConfigError(f"looping trace {tr.file}: its rows span no time (period {period:g} s), so it "
                                  "would repeat forever", file=source, path=f"scenario.traces[{i}].loop",
                                  fix="give the rows increasing t_s, or set loop: false")
            n = len(rows) * math.ceil(spec.horizon_s / period)
            if len(acts) + n > MAX_ACTIONS:
                raise ConfigError(f"looping trace {tr.file}: {len(rows)} rows every {period:g} s up to horizon_s "
                                  f"{spec.horizon_s:g} make {n} link changes, over the {MAX_ACTIONS} a scenario "
                                  "may hold", file=source, path=f"scenario.traces[{i}]",
                                  fix="a shorter scenario.horizon_s, a longer period, or fewer rows")
        offset = 0.0
        while True:
            for t, p in rows:
                if offset + t > spec.horizon_s:
                    break
                acts.append(Action(offset + t, seq, "set", idx, p if direction in ("up", "both") else None,
                                   p if direction in ("down", "both") else None, f"traces[{i}]"))
                seq += 1
            offset += period
            if not tr.loop or offset > spec.horizon_s:
                break
    for i, mob in enumerate(spec.mobility):
        from testbed.mobility import LADDERS, trajectory

        idx, _ = _link_index(topo, (mob.device, mob.ap), source, f"scenario.mobility[{i}]")
        lk = topo.links[idx]
        wifi = lk.link_class if lk.link_class in LADDERS else mob.wifi
        top = lk.up.rate_mbit  # what the class gives next to the access point
        last: tuple[float, float] | None = None
        try:
            samples = trajectory(mob, top, seed if mob.seed is None else mob.seed, wifi, until_s=spec.horizon_s,
                                 max_samples=MAX_ACTIONS - len(acts))
        except ValueError as exc:
            raise ConfigError(f"mobility[{i}]: {exc}, the link changes a scenario may hold", file=source,
                              path=f"scenario.mobility[{i}].step_s",
                              fix="a longer step_s, a shorter scenario.horizon_s, or fewer moving devices") from None
        for s in samples:
            if s.t_s > spec.horizon_s:
                break
            state = (round(s.rate_mbit, 3), round(s.loss_pct, 2))
            if state == last:
                continue
            last = state
            patch = LinkSpecPatch(rate_mbit=max(s.rate_mbit, 0.01), loss_pct=s.loss_pct)
            acts.append(Action(s.t_s, seq, "set", idx, patch, patch, f"mobility[{i}]",
                               {"distance_m": round(s.distance_m, 2), "snr_db": round(s.snr_db, 2), "wifi": wifi}))
            seq += 1
    if len(acts) > MAX_ACTIONS:  # events: each partition adds a change per link it cuts
        raise ConfigError(f"the scenario makes {len(acts)} timed changes, over the {MAX_ACTIONS} it may hold",
                          file=source, path="scenario", fix="fewer events, traces or mobility paths")
    return sorted(acts)


class ScenarioPlayer:
    """Applies a timeline to a live testbed from a thread; its spans are drained like the nodes'."""

    def __init__(self, tb: Testbed, actions: list[Action]) -> None:
        self.tb = tb
        self.actions = actions
        self.spans: list[dict[str, Any]] = []
        self.applied = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tb-scenario")
        self.t0_ns = 0

    def start(self) -> None:
        """Apply what holds from the start (nodes absent from the start) before returning, then play the rest
        on the scenario's clock from a thread."""
        self.t0_ns = clock.now_ns()
        initial = [a for a in self.actions if a.info.get("absent_from_start")]
        self.actions = [a for a in self.actions if not a.info.get("absent_from_start")]
        for a in initial:
            self._apply(a)
        self._thread.start()

    def _run(self) -> None:
        for a in self.actions:
            wait = self.t0_ns / 1e9 + a.t_s - clock.now()
            if wait > 0 and self._stop.wait(clock.wall(wait)):
                return
            if self._stop.is_set():
                return
            self._apply(a)

    def _apply(self, a: Action) -> None:
        from testbed.metrics import make_span

        t0 = clock.now_ns()
        attrs: dict[str, Any] = {}
        if a.kind in ("crash", "restart", "cpu_spike", "leave", "join"):
            try:
                if a.kind == "cpu_spike":
                    self.tb.cpu_spike(a.node, int(a.info["cores"]), float(a.info["duration_s"]))
                elif a.kind in ("leave", "join"):
                    self.tb.set_presence(a.node, a.kind == "join")
                else:
                    (self.tb.crash_node if a.kind == "crash" else self.tb.restart_node)(a.node)
            except Exception as e:  # reported in the manifest; the run goes on
                self.errors.append(f"{a.source} at {a.t_s} s: {type(e).__name__}: {e}")
                return
            with self._lock:
                self.spans.append(make_span(self.tb.run_id, a.node, "scenario", t0, clock.now_ns(),
                                            event=a.kind, at_s=a.t_s, source=a.source, **a.info))
                self.applied += 1
            return
        lk = self.tb.topology.links[a.link]
        try:
            if a.kind == "set":
                up = a.up.over(lk.up) if a.up else lk.up
                down = a.down.over(lk.down) if a.down else lk.down
                self.tb.set_link(a.link, up, down)
                attrs = {"up_rate_mbit": up.rate_mbit, "up_delay_ms": up.delay_ms, "up_loss_pct": up.loss_pct,
                         "down_rate_mbit": down.rate_mbit, "down_delay_ms": down.delay_ms,
                         "down_loss_pct": down.loss_pct}
            else:
                self.tb.set_link_state(a.link, a.kind == "up", reason=a.source)
        except Exception as e:  # reported in the manifest; the run goes on
            self.errors.append(f"{a.source} at {a.t_s} s: {type(e).__name__}: {e}")
            return
        span = make_span(self.tb.run_id, "scenario", "scenario", t0, clock.now_ns(), src=lk.a, dst=lk.b,
                         event=a.kind, link=a.link, at_s=a.t_s, source=a.source, **attrs, **a.info)
        with self._lock:
            self.spans.append(span)
            self.applied += 1

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self.spans = self.spans, []
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
