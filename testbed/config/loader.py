"""YAML → validated models. Every error names the file, the YAML path, the bad value and the fix."""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from testbed.config.models import Catalog, ExperimentSpec, LinkSpec, TopologySpec
from testbed.errors import ConfigError
from testbed.registry import did_you_mean
from testbed.topology import Link, Node, Topology, assign_addresses

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CATALOG_DIR = REPO_ROOT / "topologies" / "catalog"


def _yaml_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or part in ("tuple", "list"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


# A config file is typed by a person: past this size (or depth) it is a mistake or an attack, and parsing it would
# spend the host's memory before anything could be said about it
MAX_CONFIG_BYTES = 4 * 2**20
MAX_CONFIG_DEPTH = 40


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """``yaml.SafeLoader`` without aliases: an alias repeats a node by reference, and a few nested ones (the
    "billion laughs") make validation walk billions of values. No shipped file uses them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted in testbed files",
                                              ev.start_mark)
        depth = getattr(self, "_depth", 0)
        if depth > MAX_CONFIG_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_CONFIG_DEPTH} levels deep",
                                              self.peek_event().start_mark)
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning I/O, encoding, size and syntax problems into ``ConfigError``."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{size} bytes is over the {MAX_CONFIG_BYTES} a testbed file may have", file=str(p),
                              fix="split it, or keep large data (traces, weights) in files it names")
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", file=str(p),
                          fix="check the path (relative paths start from the current directory)") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})", file=str(p),
                          fix="save the file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", file=str(p),
                          fix="fix the YAML syntax at that line") from None
    if not isinstance(data, dict):
        raise ConfigError("the file must hold a YAML mapping at the top level", file=str(p),
                          fix="see topologies/README.md for the layout")
    return data


def validate_model(model: type[BaseModel], data: Any, file: str, prefix: str = "") -> Any:
    """Validate ``data`` into ``model``; on failure raise one ``ConfigError`` listing each problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errs = exc.errors()
        first = errs[0]
        path = ".".join(p for p in (prefix, _yaml_path(first["loc"])) if p)
        msg = first["msg"].removeprefix("Value error, ")
        value = first.get("input")
        if first["type"] == "extra_forbidden":
            fix = "remove the key or correct its spelling"
            msg = f"unknown key {_yaml_path(first['loc'][-1:])!r}"
        elif first["type"] == "missing":
            fix = "add the missing key"
            msg = "required key is missing"
        else:
            fix = "correct the value (run `testbed schema` for every allowed key and type)"
            if not isinstance(value, dict | list):
                msg += f" (got {value!r})"
        if len(errs) > 1:
            others = "; ".join(".".join(p for p in (prefix, _yaml_path(e["loc"])) if p) for e in errs[1:4])
            msg += f" [and {len(errs) - 1} more problem(s) at: {others}]"
        raise ConfigError(msg, file=file, path=path or None, fix=fix) from None


def load_catalog(directory: str | Path | None = None) -> Catalog:
    """Load ``hardware.yaml`` and ``links.yaml`` from ``directory`` (default: the repo's catalog).

    ``TESTBED_CATALOG_DIR`` overrides the default.
    """
    d = Path(directory or os.environ.get("TESTBED_CATALOG_DIR") or DEFAULT_CATALOG_DIR)
    files = ("hardware.yaml", "links.yaml")
    try:  # one parse per version of the files: every topology and experiment resolves against it
        key = (str(d.resolve()), *(os.stat(d / f).st_mtime_ns for f in files))
    except OSError:
        key = None
    if key is not None and key in _CATALOGS:
        return _CATALOGS[key]
    data: dict[str, Any] = {}
    for fname in files:
        data.update(read_yaml(d / fname))
    hw = data.get("hardware_classes", {})
    if isinstance(hw, dict):
        data["hardware_classes"] = {k: {**v, "name": k} if isinstance(v, dict) else v for k, v in hw.items()}
    cat: Catalog = validate_model(Catalog, data, str(d))
    for name, hc in cat.hardware_classes.items():
        if hc.nic_link_class not in cat.link_classes:
            raise ConfigError(f"unknown link class {hc.nic_link_class!r}." + did_you_mean(
                hc.nic_link_class, list(cat.link_classes)), file=str(d / "hardware.yaml"),
                path=f"hardware_classes.{name}.nic_link_class", fix="use a key of links.yaml")
    if key is not None:
        _CATALOGS[key] = cat
    return cat


_CATALOGS: dict[tuple[Any, ...], Catalog] = {}  # frozen models, shared read-only


def build_topology(spec: TopologySpec, catalog: Catalog, source: str) -> Topology:
    """Resolve a ``TopologySpec`` against the catalog into a ``Topology`` (pure; no side effects)."""
    names: dict[str, str] = {}
    members: list[tuple[str, int]] = []  # (member name, index into spec.nodes)
    pools: dict[str, tuple[str, ...]] = {}
    for i, ns in enumerate(spec.nodes):
        if ns.hardware_class not in catalog.hardware_classes:
            raise ConfigError(
                f"unknown hardware class {ns.hardware_class!r}." + did_you_mean(
                    ns.hardware_class, list(catalog.hardware_classes)),
                file=source, path=f"nodes[{i}].hardware_class",
                fix="use one of: " + ", ".join(sorted(catalog.hardware_classes))
                + " (or add a class to topologies/catalog/hardware.yaml)")
        group = [ns.name] if ns.count == 1 else [f"{ns.name}{k}" for k in range(ns.count)]
        if ns.count > 1:
            pools[ns.name] = tuple(group)
        for m in group + ([ns.name] if ns.count > 1 else []):
            if m in names:
                raise ConfigError(f"duplicate node name {m!r} (also {names[m]})", file=source,
                                  path=f"nodes[{i}].name", fix="give every node (and pool member) a unique name")
            names[m] = f"nodes[{i}]"
        members.extend((m, i) for m in group)
    member_set = {m for m, _ in members}
    resolved_links: list[tuple[str, str, LinkSpec, LinkSpec, str | None]] = []
    for j, ld in enumerate(spec.links):
        ends: list[list[str]] = []
        for k, end in enumerate(ld.ends):
            if end in pools:
                ends.append(list(pools[end]))
            elif end in member_set:
                ends.append([end])
            else:
                raise ConfigError(f"link end {end!r} is not a node." + did_you_mean(end, list(names)),
                                  file=source, path=f"links[{j}].ends[{k}]",
                                  fix="name a node declared under 'nodes'")
        if len(ends[0]) > 1 and len(ends[1]) > 1:
            raise ConfigError("a link cannot join two pools", file=source, path=f"links[{j}].ends",
                              fix="link each pool to a single node (e.g. its edge)")
        base_up = base_down = None
        if ld.link_class is not None:
            lc = catalog.link_classes.get(ld.link_class)
            if lc is None:
                raise ConfigError(f"unknown link class {ld.link_class!r}." + did_you_mean(
                    ld.link_class, list(catalog.link_classes)), file=source, path=f"links[{j}].link_class",
                    fix="use one of: " + ", ".join(sorted(catalog.link_classes)))
            base_up, base_down = lc.up, lc.down
        try:
            up = ld.up.over(base_up) if ld.up else base_up
            down = (ld.down.over(base_down) if ld.down else (base_down if ld.link_class else up))
            if up is None or down is None:
                raise ValueError("rate_mbit is required")
        except ValueError as exc:
            raise ConfigError(f"incomplete link shaping: {exc}", file=source, path=f"links[{j}].up",
                              fix="give 'rate' (e.g. 10mbit) or a link_class") from None
        for a in ends[0]:
            for b in ends[1]:
                resolved_links.append((a, b, up, down, ld.link_class))
    seen_pairs: dict[frozenset[str], int] = {}
    for j, (a, b, *_rest) in enumerate(resolved_links):
        key = frozenset((a, b))
        if key in seen_pairs:
            raise ConfigError(f"two links join {a!r} and {b!r}", file=source, path="links",
                              fix="keep one link per pair of nodes")
        seen_pairs[key] = j
    try:
        node_addrs, link_addrs = assign_addresses(spec.address_pool, len(members), len(resolved_links))
    except ValueError as exc:
        raise ConfigError(str(exc), file=source, path="address_pool",
                          fix="use a larger IPv4 network inside 198.18.0.0/15") from None
    nodes = {}
    for (m, i), addr in zip(members, node_addrs, strict=True):
        ns = spec.nodes[i]
        nodes[m] = Node(m, ns.tier, catalog.hardware_classes[ns.hardware_class], addr,
                        pool=ns.name if ns.count > 1 else None, site=ns.site)
    links = []
    for j, ((a, b, up, down, lc_name), (aa, ba, plen)) in enumerate(zip(resolved_links, link_addrs, strict=True)):
        energy = catalog.link_classes[lc_name].tx_energy_uj_per_bit if lc_name else None
        links.append(Link(j, a, b, up, down, lc_name, energy, aa, ba, plen))
    topo = Topology(spec.name, nodes, tuple(links), spec.address_pool, source, pools)
    comps = topo.components()
    if len(comps) > 1:
        parts = " | ".join(", ".join(sorted(c)[:6]) + (" ..." if len(c) > 6 else "") for c in comps)
        raise ConfigError(f"the topology is disconnected: {len(comps)} separate parts: {parts}", file=source,
                          path="links", fix="add links so that every node can reach every other node")
    return topo


def load_topology(path: str | Path, catalog: Catalog | None = None) -> Topology:
    """Load and resolve a topology file.

    Raises
    ------
    ConfigError
        Naming the file, the YAML path and the fix.
    """
    return topology_from_dict(read_yaml(path), str(path), catalog)


def topology_from_dict(data: dict[str, Any], source: str = "<dict>", catalog: Catalog | None = None) -> Topology:
    """Validate and resolve a topology given as a mapping (what a topology file holds); ``source`` names it in
    error messages."""
    spec: TopologySpec = validate_model(TopologySpec, data, source)
    return build_topology(spec, catalog or load_catalog(), source)


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: its spec, the resolved topology, and the workload's typed parameters."""

    spec: ExperimentSpec
    topology: Topology
    params: BaseModel
    source: str


def resolve_relative(base_file: str | Path, ref: str) -> Path:
    """Resolve ``ref`` relative to ``base_file``'s directory, then to the CWD, then to the repo root."""
    for cand in (Path(base_file).parent / ref, Path(ref), REPO_ROOT / ref):
        if cand.exists():
            return cand
    return Path(base_file).parent / ref


def load_experiment(path: str | Path, catalog: Catalog | None = None,
                    overrides: dict[str, Any] | None = None) -> Experiment:
    """Load an experiment file, its topology and its workload parameters; ``overrides`` (dotted path -> value,
    see ``apply_overrides``) change values of either file first, as ``testbed run --set`` and sweeps do."""
    return experiment_from_dict(read_yaml(path), path, catalog, overrides=overrides)


def experiment_from_dict(data: dict[str, Any], source: str | Path = "<dict>", catalog: Catalog | None = None,
                         topology: dict[str, Any] | None = None,
                         overrides: dict[str, Any] | None = None) -> Experiment:
    """Validate an experiment given as a mapping (what an experiment file holds).

    ``source`` names it in messages, and relative paths (its topology, a scenario's trace) resolve from its
    directory. ``topology`` gives the topology as a mapping instead of the file that ``data["topology"]`` names.
    ``overrides`` are applied to copies; neither mapping is changed.
    """
    from testbed.registry import UnknownNameError
    from testbed.workload import WORKLOADS  # registry only; workloads load through entry points

    path = str(source)
    data = copy.deepcopy(data)
    exp_over = {k: v for k, v in (overrides or {}).items() if not k.startswith("topology.")}
    topo_over = {k: v for k, v in (overrides or {}).items() if k.startswith("topology.")}
    apply_overrides(data, exp_over, path, "experiment")
    if topology is not None:
        data.setdefault("topology", "<dict>")
    spec: ExperimentSpec = validate_model(ExperimentSpec, data, path)
    try:
        wl = WORKLOADS.get(spec.workload.name)
    except UnknownNameError as exc:
        raise ConfigError(str(exc), file=path, path="workload.name",
                          fix="use a registered workload name") from None
    params = validate_model(wl.Params, spec.workload.params, path, prefix="workload.params")
    if topology is None:
        topo_path = resolve_relative(path, spec.topology)
        if not topo_path.exists():
            raise ConfigError(f"topology file {spec.topology!r} not found", file=path, path="topology",
                              fix="give a path relative to the experiment file or the repository root")
        topo_source, topo_data = str(topo_path), read_yaml(topo_path)
    else:
        topo_source, topo_data = f"{path}: topology", copy.deepcopy(topology)
    apply_overrides(topo_data, {k.removeprefix("topology."): v for k, v in topo_over.items()}, topo_source,
                    "topology", prefix="topology.")
    topo = topology_from_dict(topo_data, topo_source, catalog)
    wl.check(params, topo, path)
    if spec.time_dilation != "auto":  # a fixed k is checked here; auto's k is checked once chosen, before building
        from testbed.dilation import check_link_rates

        check_link_rates(topo, float(spec.time_dilation), path, "a smaller time_dilation, or a faster link")
    if spec.scenario is not None:
        from testbed.scenario import timeline

        timeline(spec.scenario, topo, str(path), Path(path).parent, spec.seed)  # raises on a bad link, file, row
    return Experiment(spec, topo, params, path)


def load_any(path: str | Path) -> Experiment | Topology:
    """Validate a topology or an experiment file, whichever ``path`` holds."""
    data = read_yaml(path)
    if "workload" in data:
        return load_experiment(path)
    if "nodes" in data:
        return load_topology(path)
    raise ConfigError("neither a topology (no 'nodes') nor an experiment (no 'workload')", file=str(path),
                      fix="a topology has 'nodes' and 'links'; an experiment has 'topology' and 'workload'")


_INDEX = re.compile(r"^(?P<key>[^\[\]]+)?(?P<idx>(\[\d+\])*)$")
MAX_OVERRIDE_CHARS = 65536


def path_steps(path: str) -> list[str | int]:
    """``a.b[2].c`` -> ``["a", "b", 2, "c"]``; ValueError for anything else."""
    out: list[str | int] = []
    for part in path.split("."):
        m = _INDEX.match(part)
        if not m or not part:
            raise ValueError(part)
        if m.group("key"):
            out.append(m.group("key"))
        out += [int(i) for i in re.findall(r"\[(\d+)\]", m.group("idx") or "")]
    return out


def set_path(doc: Any, path: str, value: Any) -> None:
    """Set ``value`` at dotted ``path`` (with ``[i]`` list indices) in ``doc``; the parent must exist."""
    steps = path_steps(path)
    cur = doc
    for s in steps[:-1]:
        cur = cur[s]  # KeyError / IndexError / TypeError: the path does not exist
    last = steps[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    elif isinstance(cur, dict):
        if not isinstance(last, str):
            raise TypeError(f"{path}: [{last}] indexes a mapping")
        cur[last] = value
    else:
        raise TypeError(f"{path}: cannot set inside a {type(cur).__name__}")


def apply_overrides(doc: dict[str, Any], overrides: dict[str, Any], file: str, kind: str, prefix: str = "",
                    where: str = "") -> None:
    """Set each dotted path of ``overrides`` in ``doc`` (a file's mapping). A path that names no value of the
    file raises ``ConfigError``; a new key may be added to a mapping that exists (an optional parameter)."""
    for k, v in overrides.items():
        try:
            set_path(doc, k, v)
        except (KeyError, IndexError, TypeError, ValueError):
            raise ConfigError(f"{prefix + k!r} does not name a value of the {kind} file", file=file,
                              path=where or prefix + k,
                              fix="use a dotted path to an existing key, e.g. workload.params.requests_per_device "
                                  "or topology.links[0].up.rate") from None


def parse_override(text: str, where: str = "--set") -> tuple[str, Any]:
    """``"dotted.path=value"`` -> ``(path, value)``; the value is read as YAML (``5``, ``2.5``, ``[edge, cloud]``,
    ``{rate: 10mbit}``, ``true``), with the files' safe loader: no tags, no aliases."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{text!r} is not path=value", file=where,
                          fix="e.g. --set workload.params.requests_per_device=5")
    try:
        path_steps(key)
    except ValueError:
        raise ConfigError(f"{key!r} is not a dotted path", file=where,
                          fix="keys joined by dots, list items as [i]: workload.params.tiers[0]") from None
    if len(raw) > MAX_OVERRIDE_CHARS:
        raise ConfigError(f"the value of {key} is over {MAX_OVERRIDE_CHARS} characters", file=where,
                          fix="put large values in the experiment file")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"the value of {key} is not valid YAML: {getattr(exc, 'problem', exc)}", file=where,
                          fix="quote it, e.g. --set 'name=\"x y\"'") from None
    return key, value
