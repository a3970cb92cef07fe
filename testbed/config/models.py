"""Typed, frozen configuration models (pydantic v2) for catalogs, topologies and experiments.

Raw models mirror the YAML; ``testbed.config.loader`` resolves names and defaults into a
``Topology`` (see ``testbed.topology``) so that nothing past the loader sees a dict.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from testbed.config.units import parse_rate_mbit, parse_time_ms

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")


class Tier(str, enum.Enum):
    """The three tiers of an edge-AI system."""

    DEVICE = "device"
    EDGE = "edge"
    CLOUD = "cloud"


class Frozen(BaseModel):
    """Base of every config model: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _check_name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            f"name {value!r} is not a valid identifier (letters, digits and '_', starting with a letter, "
            "at most 32 characters); rename it, e.g. "
            f"{(re.sub(r'[^A-Za-z0-9_]', '_', value).lstrip('0123456789') or 'node1')[:32]!r}"
        )
    return value


def _unit_aliases(data: Any) -> Any:
    """Accept ``rate: 10mbit`` / ``delay: 20ms`` / ``jitter`` / ``loss`` beside the unit-suffixed names."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for short, long_, parse in (("rate", "rate_mbit", parse_rate_mbit), ("delay", "delay_ms", parse_time_ms),
                                ("jitter", "jitter_ms", parse_time_ms)):
        if short in out:
            if long_ in out:
                raise ValueError(f"give either '{short}' or '{long_}', not both")
            out[long_] = parse(out.pop(short))
        elif isinstance(out.get(long_), str):
            out[long_] = parse(out[long_])
    if "loss" in out:
        loss = out.pop("loss")
        if isinstance(loss, str) and loss.strip().endswith("%"):
            loss = float(loss.strip()[:-1])
        out["loss_pct"] = loss
    return out


# Bounds on a link, beyond which a value is a mistake rather than a network: 1 Tbit/s is past any link the kernel's
# shapers hold on one host, and a minute of one-way delay past any path on Earth or to a satellite.
MAX_RATE_MBIT = 1_000_000.0
MAX_DELAY_MS = 60_000.0
Rate = Annotated[float, Field(gt=0, le=MAX_RATE_MBIT)]
Delay = Annotated[float, Field(ge=0, le=MAX_DELAY_MS)]
# A pool's devices are each a namespace, a veth pair and addresses of their own: past this many, a run would spend
# the host's kernel memory and minutes of set-up before a request is sent
MAX_POOL = 1024
MAX_SPIKE_CORES = 1024  # a CPU spike's busy processes; the host's own count is checked when a run starts


class LinkSpec(Frozen):
    """Shaping of one direction of a link."""

    rate_mbit: Rate
    delay_ms: Delay = 0.0
    jitter_ms: Delay = 0.0
    loss_pct: float = Field(0.0, ge=0.0, le=100.0)

    _aliases = model_validator(mode="before")(_unit_aliases)


class LinkSpecPatch(Frozen):
    """A partial ``LinkSpec`` merged field by field over a link class."""

    rate_mbit: Rate | None = None
    delay_ms: Delay | None = None
    jitter_ms: Delay | None = None
    loss_pct: float | None = Field(None, ge=0.0, le=100.0)

    _aliases = model_validator(mode="before")(_unit_aliases)

    def over(self, base: LinkSpec | None) -> LinkSpec:
        """Merge this patch over ``base`` (fields set here win)."""
        values = base.model_dump() if base else {}
        values.update({k: v for k, v in self.model_dump().items() if v is not None})
        return LinkSpec.model_validate(values)


class LinkClass(Frozen):
    """A named kind of link (Wi-Fi, LTE, WAN...) with published figures and their sources."""

    description: str = ""
    up: LinkSpec
    down: LinkSpec
    tx_energy_uj_per_bit: NonNegativeFloat | None = None
    sources: dict[str, str] = Field(default_factory=dict)


class ReferenceLatency(Frozen):
    """A published batch-1 inference latency of one model on one device."""

    value: PositiveFloat
    framework: str
    source: str


class HardwareClass(Frozen):
    """A class of hardware (Raspberry Pi 4, Jetson Nano, cloud GPU...) as data with sources."""

    name: str = ""
    description: str = ""
    tier_hint: Tier
    cores: PositiveInt
    memory_mib: PositiveInt
    power_idle_w: NonNegativeFloat | None = None
    power_busy_w: NonNegativeFloat | None = None
    accelerator: str | None = None
    nic_link_class: str
    reference_latency_ms: dict[str, ReferenceLatency] = Field(default_factory=dict)
    sources: dict[str, str] = Field(default_factory=dict)


class Catalog(Frozen):
    """All hardware and link classes known to a run."""

    hardware_classes: dict[str, HardwareClass] = Field(default_factory=dict)
    link_classes: dict[str, LinkClass] = Field(default_factory=dict)


class NodeSpec(Frozen):
    """One emulated node, or a pool of ``count`` identical devices named ``<name>0..<name>{count-1}``."""

    name: str
    tier: Tier
    hardware_class: str
    count: PositiveInt = 1
    # Ray placement: the node's actors go to the Ray node that offers the custom resource testbed_site_<site>;
    # links between nodes of sites on different Ray nodes are shaped in userspace (see docs/design-notes.md)
    site: str | None = None

    _name = field_validator("name")(_check_name)

    @field_validator("site")
    @classmethod
    def _site(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "").isalnum():
            raise ValueError(f"site {value!r}: letters, digits and '_' only (it names a Ray resource)")
        return value

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"count {value} must be at least 1 (a pool of 0 devices is empty); "
                             "remove the node instead")
        if isinstance(value, int) and value > MAX_POOL:
            raise ValueError(f"count {value} is over the {MAX_POOL} devices a pool may hold (each is a network "
                             "namespace, a veth pair and addresses of its own on this host); split the pool or "
                             "emulate fewer devices")
        return value


class LinkDecl(Frozen):
    """A link between two nodes: a named class, explicit shaping per direction, or a class with overrides.

    ``up`` is the direction from ``ends[0]`` to ``ends[1]``; ``down`` the reverse. If only ``up`` is
    given, ``down`` takes the same values.
    """

    ends: tuple[str, str]
    link_class: str | None = None
    up: LinkSpecPatch | None = None
    down: LinkSpecPatch | None = None

    @model_validator(mode="after")
    def _something_given(self) -> LinkDecl:
        if self.link_class is None and self.up is None:
            raise ValueError("a link needs 'link_class' or 'up' (rate, delay, jitter, loss)")
        if self.ends[0] == self.ends[1]:
            raise ValueError(f"a link joins two different nodes, not {self.ends[0]!r} to itself")
        return self


class TopologySpec(Frozen):
    """A topology file: nodes and links, plus the address pool emulated addresses come from."""

    name: str
    description: str = ""
    nodes: list[NodeSpec] = Field(min_length=1)
    links: list[LinkDecl] = Field(default_factory=list)
    address_pool: str = "198.18.0.0/15"

    _name = field_validator("name")(_check_name)

    @field_validator("address_pool")
    @classmethod
    def _sealed_pool(cls, v: str) -> str:
        import ipaddress

        try:
            net = ipaddress.ip_network(v, strict=True)
        except ValueError as exc:
            raise ValueError(f"address_pool {v!r} is not an IPv4 network ({exc})") from None
        if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(ipaddress.IPv4Network("198.18.0.0/15")):
            raise ValueError(f"address_pool {v} is outside 198.18.0.0/15, the benchmarking range the host "
                             "blackholes during a run; use a network inside it, e.g. 198.18.0.0/16")
        return v


class WorkloadSpec(Frozen):
    """A workload by registered name with its parameters (validated by the workload's own model)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class BackendChoice(Frozen):
    """Which emulation backends to use; ``auto`` picks the best one the host supports."""

    links: Literal["auto", "kernel", "userspace", "mininet", "mininet-wifi"] = "auto"
    compute: Literal["auto", "cgroup", "dilation", "none"] = "auto"


class LinkEvent(Frozen):
    """A timed change of one link (see ``testbed.scenario``)."""

    at_s: NonNegativeFloat
    link: tuple[str, str]
    up: LinkSpecPatch | None = None
    down: LinkSpecPatch | None = None
    down_for_s: PositiveFloat | None = None  # the link goes down for this long, then comes back as it was


class NodeEvent(Frozen):
    """A node crashes at ``at_s`` (its processes are killed) and, if ``restart_after_s`` is given, restarts."""

    at_s: NonNegativeFloat
    crash: str
    restart_after_s: PositiveFloat | None = None


class ChurnEvent(Frozen):
    """A node leaves (its links go down and workloads stop using it: a device walking out of range, switched off,
    or a client dropping out) and, after ``rejoin_after_s``, joins again; ``join`` alone means the node is absent
    from the start and joins at ``at_s``. Unlike ``crash``, its processes keep running; pooled devices can churn."""

    at_s: NonNegativeFloat
    leave: str | None = None
    join: str | None = None
    rejoin_after_s: PositiveFloat | None = None

    @model_validator(mode="after")
    def _one_node(self) -> ChurnEvent:
        if (self.leave is None) == (self.join is None):
            raise ValueError("give either leave: NODE or join: NODE")
        if self.join is not None and self.rejoin_after_s is not None:
            raise ValueError("rejoin_after_s goes with leave:")
        return self


class PartitionEvent(Frozen):
    """The nodes in ``partition`` are cut off from the rest: every link with one end inside goes down (kernel
    backend) until ``heal_after_s``, if given."""

    at_s: NonNegativeFloat
    partition: list[str] = Field(min_length=1)
    heal_after_s: PositiveFloat | None = None


class CpuSpike(Frozen):
    """``cores`` busy processes contend with ``cpu_spike``'s compute for ``duration_s`` (cgroup backend: inside
    the node's own CPU quota; otherwise on the whole host)."""

    at_s: NonNegativeFloat
    cpu_spike: str
    cores: PositiveInt = 1
    duration_s: PositiveFloat

    @field_validator("cores")
    @classmethod
    def _cores(cls, value: int) -> int:
        # the file's own bound; the host's core count is checked when the run starts (runner.check_host), so that a
        # file validates the same on every machine
        if value > MAX_SPIKE_CORES:
            raise ValueError(f"cores {value} is over {MAX_SPIKE_CORES}: a spike is one busy process per core")
        return value


class TraceSpec(Frozen):
    """A link trace replayed from CSV (see ``testbed.scenario``)."""

    link: tuple[str, str]
    file: str
    direction: Literal["up", "down", "both"] = "both"
    loop: bool = False


class PathLossSpec(Frozen):
    """Log-distance path loss with log-normal shadowing: PL(d) = pl0_db + 10 n log10(d / 1 m) + X."""

    pl0_db: float = 40.0  # at 1 m; free space at 2.4 GHz is 40 dB
    exponent: PositiveFloat = 3.0  # 2 free space, 2.7-3.5 indoor office/urban
    shadowing_db: NonNegativeFloat = 4.0  # standard deviation of X
    correlation: float = Field(0.8, ge=0, lt=1)  # of X from one step to the next (AR(1); 0: independent)


class RandomWaypoint(Frozen):
    """Random waypoint on the distance axis: pick a distance, walk there at a random speed, pause, repeat."""

    max_distance_m: PositiveFloat = 80.0
    min_distance_m: PositiveFloat = 1.0
    speed_mps: tuple[PositiveFloat, PositiveFloat] = (0.5, 1.5)
    pause_s: NonNegativeFloat = 2.0
    duration_s: PositiveFloat = 60.0


class MobilitySpec(Frozen):
    """A device moving relative to its access point; its link's rate and loss follow the SNR (see
    ``testbed.mobility``)."""

    device: str
    ap: str
    wifi: Literal["wifi_n", "wifi_ac", "wifi_ax"] = "wifi_n"
    tx_power_dbm: float = 20.0
    noise_dbm: float = -90.0
    path_loss: PathLossSpec = Field(default_factory=lambda: PathLossSpec.model_validate({}))
    waypoints: list[tuple[NonNegativeFloat, PositiveFloat]] | None = None  # (t_s, distance_m), linear between
    random_waypoint: RandomWaypoint | None = None
    step_s: PositiveFloat = 0.5
    seed: int | None = None  # default: the experiment's

    @model_validator(mode="after")
    def _one_path(self) -> MobilitySpec:
        if (self.waypoints is None) == (self.random_waypoint is None):
            raise ValueError("give either waypoints or random_waypoint")
        if self.waypoints is not None and [t for t, _ in self.waypoints] != sorted(t for t, _ in self.waypoints):
            raise ValueError("waypoints must be in time order")
        return self


class ScenarioSpec(Frozen):
    """What happens to the network while the workload runs."""

    events: list[LinkEvent | NodeEvent | ChurnEvent | PartitionEvent | CpuSpike] = Field(default_factory=list)
    traces: list[TraceSpec] = Field(default_factory=list)
    mobility: list[MobilitySpec] = Field(default_factory=list)
    horizon_s: PositiveFloat = 3600.0  # a looping trace stops here


class ExperimentSpec(Frozen):
    """An experiment file: a topology, a workload, how long, and a seed."""

    name: str
    description: str = ""
    topology: str
    workload: WorkloadSpec
    requests: PositiveInt | None = None
    duration_s: PositiveFloat | None = None
    seed: int = 0
    backends: BackendChoice = BackendChoice()
    scenario: ScenarioSpec | None = None
    # the run's time dilation k (testbed.clock, testbed.dilation): "auto" picks the smallest k at which every class
    # reaches its speed and the nodes' CPU demand fits the host; a number fixes it (k > 1: slower than the world)
    time_dilation: Literal["auto"] | float = "auto"
    max_time_dilation: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 100.0
    # let a class that auto cannot reach within max_time_dilation run as fast as the host allows, flagged
    approximate_classes: bool = False

    _name = field_validator("name")(_check_name)

    @field_validator("time_dilation", mode="before")
    @classmethod
    def _dilation(cls, v: Any) -> Any:
        if v == "auto":
            return v
        import math

        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"must be 'auto' or a positive finite number (e.g. 10: the run lasts ten times the "
                             f"emulated time), got {v!r}")
        return float(v)

    @model_validator(mode="after")
    def _requests_or_duration(self) -> ExperimentSpec:
        if self.requests is not None and self.duration_s is not None:
            raise ValueError("give either 'requests' (per device and tier) or 'duration_s', not both")
        return self
