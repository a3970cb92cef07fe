"""A mutation fuzzer over the shipped topologies and experiments (issue 17): 500 malformed or mutated files, each
refused with one ``ConfigError`` or accepted; never another exception, never a hang.

Mutations are drawn from a seeded generator (the run is the same every time; change ``SEED`` to explore): a value
replaced by one of a list of hostile values (negative, zero, huge, non-finite, empty, long strings, wrong types),
a key dropped, an unknown key added, a mapping turned into a list, a list emptied or repeated a thousand times.
"""

from __future__ import annotations

import copy
import random
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from testbed.config.loader import load_any
from testbed.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SEED = 17
N = 500
# validating these builds and cuts models (seconds each): the fuzzer keeps to files that validate in milliseconds
SLOW = {"deepthings_link_sweep.yaml", "adaptive_replanning.yaml"}
HOSTILE: list[Any] = [-1, 0, 10**12, -(10**12), 1e308, float("nan"), float("inf"), "", "x" * 5000, None, True, [],
                      {}, [1, 2, 3], {"a": 1}, "1e9gbit", "-5ms", "../../etc/passwd", "nan", 3.5, "rpi4b", "kernel",
                      2**63, "0mbit"]


def sources() -> list[Path]:
    files = sorted((ROOT / "topologies").glob("*.yaml")) + sorted((ROOT / "experiments").glob("*.yaml"))
    return [f for f in files if f.name not in SLOW]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in ``node`` (mapping keys and list indices)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:20]):
            out += paths(v, (*prefix, i))
    return out


def mutate(doc: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    doc = copy.deepcopy(doc)
    what = []
    for _ in range(rng.randint(1, 3)):
        p = rng.choice(paths(doc)[1:] or [()])
        if not p:
            continue
        parent = doc
        for step in p[:-1]:
            parent = parent[step]
        key = p[-1]
        op = rng.choice(["value", "value", "value", "drop", "unknown", "listify", "repeat"])
        if op == "value":
            parent[key] = rng.choice(HOSTILE)
        elif op == "drop":
            del parent[key]
        elif op == "unknown" and isinstance(parent, dict):
            parent[f"zz_{rng.randint(0, 99)}"] = rng.choice(HOSTILE)
        elif op == "listify":
            parent[key] = [parent[key]]
        elif op == "repeat" and isinstance(parent[key], list) and parent[key]:
            parent[key] = parent[key] * 1000
        what.append(f"{op} {'.'.join(map(str, p))}")
    return doc, what


def test_500_mutated_files_are_refused_or_accepted_cleanly(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    srcs = sources()
    docs = {f: yaml.safe_load(f.read_text()) for f in srcs}
    for f in srcs:  # the unmutated files first: imports (torch, the workloads) are not the fuzzer's memory
        load_any(f)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bad, slowest, refused = [], (0.0, ""), 0
    times: list[float] = []
    for i in range(N):
        src = srcs[i % len(srcs)]
        doc, what = mutate(docs[src], rng)
        if isinstance(doc.get("topology"), str):  # an experiment names its topology relative to itself
            doc["topology"] = str((src.parent / doc["topology"]).resolve())
        f = tmp_path / f"m{i:03d}-{src.name}"
        f.write_text(yaml.safe_dump(doc, sort_keys=False))
        t0 = time.monotonic()
        try:
            load_any(f)
        except ConfigError as e:
            refused += 1
            assert str(f) in str(e) or e.file, (f, what, e)
        except Exception as e:  # noqa: BLE001 - what the fuzzer is for
            bad.append(f"{src.name} {what}: {type(e).__name__}: {str(e)[:200]}")
        dt = time.monotonic() - t0
        times.append(dt)
        if dt > slowest[0]:
            slowest = (dt, f"{src.name} {what}")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"fuzz: {N} files from {len(srcs)} sources, {refused} refused, {N - refused - len(bad)} accepted, "
          f"{len(bad)} other errors; slowest {slowest[0]:.2f} s ({slowest[1]}); peak RSS grew {grown_mb:.0f} MB")
    assert not bad, "\n".join(bad[:20])
    # a blow-up, not a timing target: one mutant that takes thousands of times the typical one's time (a few ms
    # each) is a pathological input, on a fast host or a slow one; a hang is pytest-timeout's to catch
    typical = statistics.median(times)
    assert slowest[0] < 2000 * typical, (slowest, typical)
    assert grown_mb < 300
