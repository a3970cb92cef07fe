"""Builds a Mininet or mininet-wifi network from a plan file and holds it until told to stop.

This file is run by the Python that has Mininet installed (Debian's or the VM's system Python), not by
the testbed's virtual environment, so it imports nothing from the testbed. The plan comes from
``testbed.emulation.mnbackend.translate``. Protocol, one JSON object per line:

* stdout, once built: ``{"pids": {mininet_name: pid}}``, or ``{"error": "..."}`` and exit 1.
* stdin: ``{"cmd": "start_mobility"}`` starts replaying the stations' tracks (the scenario's clock starts);
  ``{"cmd": "position", "node": NAME, "position": "x,y,z"}`` moves a station (mininet-wifi);
  ``{"cmd": "stop"}``, or end of input (the testbed died), stops the network and exits.

Mininet creates the namespaces (one shell process per node); the testbed attaches them by PID,
addresses the interfaces and shapes wired links itself, exactly as in its kernel backend.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from typing import Any


def make_net(plan: dict[str, Any]) -> Any:
    if plan["mode"] == "wifi":
        from mn_wifi.net import Mininet_wifi

        return Mininet_wifi(topo=None, controller=None, build=False, autoSetMacs=False)
    from mininet.net import Mininet

    return Mininet(topo=None, controller=None, build=False, autoSetMacs=False, autoStaticArp=False)


def build_wired(net: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Debian's wired Mininet: every node a host, every link a veth pair between two hosts (no switch)."""
    nodes: dict[str, Any] = {}
    for h in plan["hosts"] + plan["stations"]:
        nodes[h["name"]] = net.addHost(h["name"], ip=None)
    for lk in plan["wired"]:
        net.addLink(nodes[lk["a"]], nodes[lk["b"]], intfName1=lk["intf_a"], intfName2=lk["intf_b"])
    net.build()
    return nodes


def build_wifi(net: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """mininet-wifi: stations for devices, an access point per edge with its edge host on a wired port."""
    nodes: dict[str, Any] = {}
    for h in plan["hosts"]:
        nodes[h["name"]] = net.addHost(h["name"], ip=None)
    for s in plan["stations"]:
        nodes[s["name"]] = net.addStation(s["name"], ip=None, ip6=None, position=s["position"], mode=s["mode"],
                                          channel=str(s["channel"]))
    for ap in plan["access_points"]:
        nodes[ap["name"]] = net.addAccessPoint(ap["name"], ssid=ap["ssid"], mode=ap["mode"],
                                               channel=str(ap["channel"]), position=ap["position"],
                                               failMode="standalone")
    net.setPropagationModel(**plan["propagation"])
    net.configureNodes()
    for lk in plan["wired"]:
        net.addLink(nodes[lk["a"]], nodes[lk["b"]], intfName1=lk["intf_a"], intfName2=lk["intf_b"])
    # stations associate by range at build; mobility is replayed by ``Replay`` (positions over time), not by
    # mininet-wifi's own mobility models
    net.build()
    for ap in plan["access_points"]:
        nodes[ap["name"]].start([])
    return nodes


class Replay(threading.Thread):
    """Moves stations along their tracks ([t_s, "x,y,z"], ...) from the moment the scenario starts."""

    def __init__(self, nodes: dict[str, Any], tracks: list[dict[str, Any]], time_dilation: float = 1.0) -> None:
        super().__init__(daemon=True, name="mn-replay")
        self.nodes = nodes
        # track times are emulated seconds; this process has no testbed clock, so they are stretched here
        self.moves = sorted((t * time_dilation, tr["station"], pos) for tr in tracks for t, pos in tr["samples"])
        self.stop = threading.Event()
        self.applied = 0

    def run(self) -> None:
        t0 = time.monotonic()
        for t, sta, pos in self.moves:
            if self.stop.wait(max(0.0, t0 + t - time.monotonic())):
                return
            self.nodes[sta].setPosition(pos)
            self.applied += 1


def main() -> int:
    # the protocol gets its own copy of stdout; anything else printed here or by the processes Mininet
    # starts (they inherit fd 1) goes to stderr, so it can never corrupt the JSON lines
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def send(msg: dict[str, Any]) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    with open(sys.argv[1]) as f:
        plan = json.load(f)
    net: Any = None
    replay: Replay | None = None
    try:
        from mininet.log import setLogLevel

        setLogLevel("warning")
        net = make_net(plan)
        nodes = build_wifi(net, plan) if plan["mode"] == "wifi" else build_wired(net, plan)
    except BaseException as exc:  # noqa: BLE001 - reported to the testbed (mininet-wifi may call exit())
        send({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
        if net is not None:
            try:
                net.stop()  # what was half built: access points, veths, radios
            except BaseException:  # noqa: BLE001 - the build error is the one to report
                traceback.print_exc()
        return 1
    try:
        send({"pids": {name: n.pid for name, n in nodes.items() if getattr(n, "pid", None)}})
        for line in sys.stdin:
            msg = json.loads(line)
            if msg.get("cmd") == "stop":
                break
            if msg.get("cmd") == "position":
                nodes[msg["node"]].setPosition(msg["position"])
            if msg.get("cmd") == "start_mobility" and replay is None and plan.get("tracks"):
                replay = Replay(nodes, plan["tracks"], float(msg.get("time_dilation", 1.0)))
                replay.start()
            send({"ok": msg.get("cmd")})
    finally:
        if replay is not None:
            replay.stop.set()
        net.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
