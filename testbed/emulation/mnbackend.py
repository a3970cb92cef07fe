"""Link backends ``mininet`` (Debian's wired Mininet) and ``mininet-wifi`` (stations, access points, radio).

Mininet builds the network: one namespace per node, made by its ``mnexec`` shells. It runs in its own
process (``mn_driver.py``) under the Python that has Mininet installed, so the testbed's virtual
environment never imports it. The testbed then *attaches* each node's namespace by PID under its own
namespace name, and from there on everything is the kernel backend's: the node's /32 on ``lo``, link
addresses, TBF shaping on wired links, static routes, scenario changes, teardown from the ledger.

With ``mininet-wifi`` a device with a Wi-Fi link (``wifi_n``/``wifi_ac``/``wifi_ax``) to an edge node is a
*station*; each such edge node gets an *access point* with the edge host on a wired port behind it, and
every other node is a host. mininet-wifi's own propagation model and mobility set the radio links' rate
and loss; the experiment's ``scenario.mobility`` is translated into station positions over time.

``translate`` is pure (unit-tested everywhere); ``MininetNetwork`` needs root and Mininet.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from testbed import clock
from testbed.config.models import LinkSpec, MobilitySpec, Tier
from testbed.emulation.network import KernelNetwork, host_ifnames
from testbed.errors import ConfigError, EmulationError, PrivilegeError
from testbed.lifecycle.ledger import Ledger
from testbed.mobility import distance_at, walk
from testbed.topology import PathSpec, Topology
from testbed.transport import PathModel

logger = logging.getLogger(__name__)

DRIVER = Path(__file__).with_name("mn_driver.py")
# mininet-wifi mode and channel: "n2" is 802.11n at 2.4 GHz ("n" alone is 5 GHz there), "ax5" 802.11ax at 5 GHz
# ("ax" is 6 GHz, which needs WPA3); an unknown mode/channel pair makes mininet-wifi's hostapd set-up exit
WIFI_MODES = {"wifi_n": ("n2", 1), "wifi_ac": ("ac", 36), "wifi_ax": ("ax5", 36)}
AP_SPACING_M = 1000.0  # access points far enough apart that a station hears only its own
Y_M = 10.0


def wireless_links(topo: Topology) -> dict[int, tuple[str, str]]:
    """Links that become radio links under mininet-wifi: index -> (device, edge)."""
    out = {}
    for lk in topo.links:
        if lk.link_class not in WIFI_MODES:
            continue
        tiers = {topo.nodes[lk.a].tier, topo.nodes[lk.b].tier}
        if tiers == {Tier.DEVICE, Tier.EDGE}:
            dev, edge = (lk.a, lk.b) if topo.nodes[lk.a].tier == Tier.DEVICE else (lk.b, lk.a)
            out[lk.index] = (dev, edge)
    return out


def translate(topo: Topology, run_id: str, wifi: bool, mobility: list[MobilitySpec] | None = None,
              seed: int = 0, source: str = "<memory>") -> dict[str, Any]:
    """The Mininet network for ``topo``, as a JSON-able plan for ``mn_driver.py``.

    Wired mode: every node a host, every link a veth pair between hosts. Wi-Fi mode: see the module doc.
    Interfaces are created under host-unique names (``host_a``/``host_b``) and renamed by the testbed to
    ``final`` once the namespaces are attached.
    """
    mobility = mobility or []
    radio = wireless_links(topo) if wifi else {}
    stations: dict[str, str] = {}  # device -> its edge
    for dev, edge in radio.values():
        if dev in stations and stations[dev] != edge:
            raise ConfigError(f"device {dev} has Wi-Fi links to two edge nodes ({stations[dev]}, {edge})",
                              file=source, path="links", fix="give a station one access point: make one link wired")
        stations[dev] = edge
    for dev in stations:
        if topo.nodes[dev].pool is not None:
            raise ConfigError(f"{dev} is in a device pool; mininet-wifi needs one station per device", file=source,
                              path="nodes", fix="list the devices without count:, or use the kernel backend")
    aps: dict[str, dict[str, Any]] = {}
    for idx, (_dev, edge) in sorted(radio.items()):
        cls = topo.links[idx].link_class or ""
        mode, channel = WIFI_MODES[cls]
        if edge in aps and aps[edge]["mode"] != mode:
            raise ConfigError(f"edge {edge}'s Wi-Fi links mix classes", file=source, path="links",
                              fix="one access point per edge: give its Wi-Fi links one link class")
        if edge not in aps:
            i = len(aps)
            aps[edge] = {"name": f"ap{i}", "edge": edge, "ssid": f"tb-{edge}"[:32], "mode": mode,
                         "channel": channel, "x": 10.0 + AP_SPACING_M * i,
                         "position": f"{10.0 + AP_SPACING_M * i:.1f},{Y_M:.1f},0"}
    names: dict[str, str] = {}
    hosts: list[dict[str, Any]] = []
    sta_list: list[dict[str, Any]] = []
    for n in topo.nodes:
        if n in stations:
            names[n] = f"sta{len(sta_list)}"
            sta_list.append({"name": names[n], "node": n})
        else:
            names[n] = f"h{len(hosts)}"
            hosts.append({"name": names[n], "node": n})
    moves = {m.device: m for m in mobility}
    for i, m in enumerate(mobility):
        if wifi and (stations.get(m.device) != m.ap):
            raise ConfigError(f"{m.device} is not a station of {m.ap}'s access point", file=source,
                              path=f"scenario.mobility[{i}]",
                              fix="move a device over its Wi-Fi link (wifi_n, wifi_ac or wifi_ax) to that edge")
    tracks: list[dict[str, Any]] = []
    for s in sta_list:
        ap = aps[stations[s["node"]]]
        s["mode"], s["channel"] = ap["mode"], ap["channel"]
        mv = moves.get(s["node"])
        d0 = 5.0
        if mv is not None:
            # the same walk as on the kernel backend (testbed.mobility, same seed); the driver replays it as
            # positions, and mininet-wifi's propagation model turns the distance into signal, rate and loss
            rng = np.random.default_rng(seed if mv.seed is None else mv.seed)
            knots = walk(mv, rng)
            n_steps = int(math.floor(knots[-1][0] / mv.step_s)) + 1
            samples = [[round(k * mv.step_s, 3), f"{ap['x'] + max(distance_at(knots, k * mv.step_s), 0.1):.2f},"
                        f"{Y_M:.1f},0"] for k in range(n_steps)]
            tracks.append({"station": s["name"], "samples": samples})
            d0 = max(distance_at(knots, 0.0), 0.1)
        s["position"] = f"{ap['x'] + d0:.2f},{Y_M:.1f},0"
    pl = mobility[0].path_loss if mobility else None
    if pl is None:
        propagation: dict[str, Any] = {"model": "logDistance", "exp": 3.0}
    elif pl.shadowing_db > 0:
        propagation = {"model": "logNormalShadowing", "exp": pl.exponent, "variance": pl.shadowing_db}
    else:
        propagation = {"model": "logDistance", "exp": pl.exponent}
    wired, radio_out = [], []
    for lk in topo.links:
        if lk.index in radio:
            dev, edge = radio[lk.index]
            dev_addr, edge_addr = (lk.a_address, lk.b_address) if lk.a == dev else (lk.b_address, lk.a_address)
            radio_out.append({"index": lk.index, "station": names[dev], "node": dev, "edge": edge,
                              "ap": aps[edge]["name"], "intf": f"{names[dev]}-wlan0", "addr_station": dev_addr,
                              "addr_edge": edge_addr, "prefixlen": lk.prefixlen})
            continue
        ha, hb = host_ifnames(run_id, lk.index)
        wired.append({"index": lk.index, "a": names[lk.a], "b": names[lk.b], "node_a": lk.a, "node_b": lk.b,
                      "intf_a": ha, "intf_b": hb, "final": f"l{lk.index}", "addrs_a": [lk.a_address],
                      "addrs_b": [lk.b_address], "prefixlen": lk.prefixlen})
    for i, (edge, ap) in enumerate(aps.items()):
        edge_addrs = [r["addr_edge"] for r in radio_out if r["edge"] == edge]
        plens = {r["prefixlen"] for r in radio_out if r["edge"] == edge}
        ha, hb = host_ifnames(run_id, f"w{i}")
        wired.append({"index": None, "a": ap["name"], "b": names[edge], "node_a": None, "node_b": edge,
                      "intf_a": ha, "intf_b": hb, "final": f"w{i}", "addrs_a": [], "addrs_b": edge_addrs,
                      "prefixlen": plens.pop()})
    return {"mode": "wifi" if wifi else "wired", "run_id": run_id, "names": names, "hosts": hosts,
            "stations": sta_list, "access_points": list(aps.values()), "wired": wired, "radio": radio_out,
            "propagation": propagation, "tracks": tracks}


@functools.cache
def find_mininet(wifi: bool) -> tuple[str | None, str]:
    """The Python that imports Mininet (``mn_wifi`` for Wi-Fi), or None with the reason (probed once per
    process: it starts a Python per candidate, and a run asks in the runner, the testbed and the backend)."""
    module = "mn_wifi.net" if wifi else "mininet.net"
    if shutil.which("mnexec") is None:
        return None, "mnexec not found (Mininet is not installed)"
    tried = []
    for py in dict.fromkeys(p for p in ("/usr/bin/python3", shutil.which("python3"), sys.executable) if p):
        try:
            r = subprocess.run([py, "-c", f"import {module}"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            tried.append(f"{py}: {exc}")
            continue
        if r.returncode == 0:
            return py, f"{py} imports {module}"
        tried.append(f"{py} cannot import {module}")
    return None, "; ".join(tried)


def hwsim_available() -> tuple[bool, str]:
    """Whether the mac80211_hwsim radio module is loaded or loadable (mininet-wifi needs it)."""
    if Path("/sys/module/mac80211_hwsim").exists():
        return True, "mac80211_hwsim loaded"
    release = os.uname().release
    for base in (Path("/lib/modules") / release, Path("/usr/lib/modules") / release):
        if base.exists() and any(base.rglob("mac80211_hwsim.ko*")):
            return True, f"mac80211_hwsim in {base}"
    return False, f"no mac80211_hwsim module for kernel {release}"


class MininetNetwork(KernelNetwork):
    """Mininet makes the namespaces and veths; the testbed attaches and configures them (kernel-backend code)."""

    teardown_kinds = ("pid", "netns", "blackhole")

    def __init__(self, topology: Topology, run_id: str, ledger: Ledger, wifi: bool,
                 mobility: list[MobilitySpec] | None = None, seed: int = 0) -> None:
        super().__init__(topology, run_id, ledger)
        self.wifi = wifi
        self.name = "mininet-wifi" if wifi else "mininet"
        self.mobility = mobility or []
        self.seed = seed
        self.plan: dict[str, Any] = {}
        self.radio: set[int] = set()
        self._proc: subprocess.Popen[str] | None = None
        self._pids: dict[str, int] = {}
        self._stderr: Any = None

    @classmethod
    def check_mininet(cls, wifi: bool) -> str:
        """Raise unless this host can run the backend; returns the Python that has Mininet."""
        name = "mininet-wifi" if wifi else "mininet"
        if os.geteuid() != 0:
            raise PrivilegeError(f"the {name} link backend needs root (Mininet makes network namespaces)")
        py, why = find_mininet(wifi)
        fix = ("run inside the project's Vagrant VM (vagrant up; it installs mininet-wifi and mac80211_hwsim)"
               if wifi else "apt-get install --no-install-recommends mininet")
        if py is None:
            raise EmulationError(f"the {name} link backend is not available on this host: {why}; {fix}, "
                                 "or choose backends: {links: kernel}")
        if wifi:
            ok, hw = hwsim_available()
            if not ok:
                raise EmulationError(f"the mininet-wifi link backend needs the mac80211_hwsim kernel module: {hw}; "
                                     f"{fix}, or choose backends: {{links: kernel}}")
        return py

    def build(self) -> None:
        import psutil

        from testbed import clock
        from testbed.emulation.netns import (
            add_node_address,
            attach_netns,
            dilate_tcp_timers,
            pin_neighbours,
            setup_interface,
        )

        py = self.check_mininet(self.wifi)
        self.check_host(self.topology)
        self.plan = translate(self.topology, self.run_id, self.wifi, self.mobility, self.seed, self.topology.source)
        self.radio = {r["index"] for r in self.plan["radio"]}
        self._blackhole()
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="tb-mn-", delete=False) as f:
            json.dump(self.plan, f)
        try:
            # -P: the driver's folder (which holds this module, mnbackend) must not shadow the real mininet
            # stderr goes to a file, never a pipe nobody reads (a full pipe would stall Mininet)
            self._stderr = tempfile.TemporaryFile("w+")
            self._proc = subprocess.Popen([py, "-P", str(DRIVER), f.name], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                          start_new_session=True)
            self.ledger.record("pid", str(self._proc.pid), pid=self._proc.pid,
                               start=psutil.Process(self._proc.pid).create_time())
            msg = self._read_reply(timeout_s=120.0)
        finally:
            os.unlink(f.name)
        if "error" in msg:
            raise EmulationError(f"{self.name} could not build the network: {msg['error']}")
        pids: dict[str, int] = msg["pids"]
        self._pids = {"driver": self._proc.pid, **pids}
        for mn_name, pid in pids.items():
            self.ledger.record("pid", f"mn-{mn_name}", pid=pid, start=psutil.Process(pid).create_time())
        names = self.plan["names"]
        for node, spec in self.topology.nodes.items():
            self.ledger.record("netns", self.ns(node))
            attach_netns(self.ns(node), pids[names[node]])
            add_node_address(self.ns(node), spec.address)
            if clock.dilation() != 1.0:
                self.tcp_rto_min_us = dilate_tcp_timers(self.ns(node), clock.dilation())
        for w in self.plan["wired"]:
            if w["node_a"] is not None:
                setup_interface(self.ns(w["node_a"]), w["intf_a"], w["final"], w["addrs_a"], w["prefixlen"])
            setup_interface(self.ns(w["node_b"]), w["intf_b"], w["final"], w["addrs_b"], w["prefixlen"])
            if w["node_a"] is not None and len(w["addrs_a"]) == 1 and len(w["addrs_b"]) == 1:  # no ARP on a link
                pin_neighbours(self.ns(w["node_a"]), w["final"], w["addrs_a"][0], self.ns(w["node_b"]), w["final"],
                               w["addrs_b"][0])
            if w["index"] is not None:
                self._shape(w["index"])
        for r in self.plan["radio"]:
            setup_interface(self.ns(r["node"]), r["intf"], None, [r["addr_station"]], r["prefixlen"])
        self._routes()
        self.built = True

    def _read_reply(self, timeout_s: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s  # wall: the driver's answer
        while time.monotonic() < deadline:  # wall: the driver's answer
            ready, _, _ = select.select([self._proc.stdout], [], [], 0.5)
            if ready:
                line = self._proc.stdout.readline()
                if line:
                    try:
                        reply: dict[str, Any] = json.loads(line)
                        return reply
                    except json.JSONDecodeError:
                        logger.debug("mininet driver: %s", line.rstrip())
                        continue
            if self._proc.poll() is not None:
                return {"error": f"the Mininet driver exited with {self._proc.returncode}: {self._stderr_tail()}"}
        return {"error": f"the Mininet driver did not answer within {timeout_s:.0f} s"}

    def scenario_started(self) -> None:
        """Start replaying the stations' walks (mininet-wifi), on the scenario's clock."""
        if self._proc is None or not self.plan.get("tracks"):
            return
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"cmd": "start_mobility", "time_dilation": clock.dilation()}) + "\n")
        self._proc.stdin.flush()
        reply = self._read_reply(timeout_s=30.0)
        if "error" in reply:
            raise EmulationError(f"mininet-wifi could not start the stations' mobility: {reply['error']}")

    def _stderr_tail(self, n: int = 800) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text: str = self._stderr.read()
        return text.strip()[-n:]

    def path_model(self, src: str, dst: str) -> PathModel:
        """Radio hops' delay and loss come from mininet-wifi's model; the transport adds the wired hops'."""
        wired = PathSpec(tuple(h for h in self.topology.path(src, dst).hops if h.link.index not in self.radio))
        return PathModel(wired.delay_ms, wired.jitter_ms, wired.loss_pct)

    def _radio_refuse(self, index: int) -> None:
        if index in self.radio:
            lk = self.topology.links[index]
            raise EmulationError(f"link {lk.name} is a mininet-wifi radio link: its rate and loss follow the "
                                 "propagation model and the stations' mobility, not scenario re-shaping")

    def set_link(self, index: int, up: LinkSpec, down: LinkSpec) -> None:
        self._radio_refuse(index)
        super().set_link(index, up, down)

    def set_link_state(self, index: int, up: bool) -> None:
        self._radio_refuse(index)
        super().set_link_state(index, up)

    def teardown(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
                proc.stdin.close()
                proc.wait(60)
            except (OSError, subprocess.TimeoutExpired) as exc:
                logger.warning("the Mininet driver did not stop by itself (%s); killing it", exc)
        super().teardown()  # ledger: remaining PIDs (host shells), namespace names, blackhole
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update({"name": self.name, "built_by": "Mininet (mn_driver.py), namespaces attached by PID",
                    "mininet_names": self.plan.get("names", {}), "pids": dict(self._pids)})
        if self.wifi:
            out["radio_links"] = {str(r["index"]): f"{r['node']} -> {r['ap']} ({r['edge']})"
                                  for r in self.plan.get("radio", [])}
            out["propagation"] = self.plan.get("propagation")
        return out
