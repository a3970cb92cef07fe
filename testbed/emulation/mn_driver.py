"""Builds a Mininet or mininet-wifi network from a plan file and holds it until told to stop.

This file is run by the Python that has Mininet installed (Debian's or the VM's system Python), not by
the testbed's virtual environment, so it imports nothing from the testbed. The plan comes from
``testbed.emulation.mnbackend.translate``. Protocol, one JSON object per line:

* stdout, once built: ``{"pids": {mininet_name: pid}}``, or ``{"error": "..."}`` and exit 1.
* stdin: ``{"cmd": "position", "node": NAME, "position": "x,y,z"}`` moves a station (mininet-wifi);
  ``{"cmd": "stop"}``, or end of input (the testbed died), stops the network and exits.

Mininet creates the namespaces (one shell process per node); the testbed attaches them by PID,
addresses the interfaces and shapes wired links itself, exactly as in its kernel backend.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any


def build_wired(plan: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Debian's wired Mininet: every node a host, every link a veth pair between two hosts (no switch)."""
    from mininet.net import Mininet

    net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False, autoStaticArp=False)
    nodes: dict[str, Any] = {}
    for h in plan["hosts"] + plan["stations"]:
        nodes[h["name"]] = net.addHost(h["name"], ip=None)
    for lk in plan["wired"]:
        net.addLink(nodes[lk["a"]], nodes[lk["b"]], intfName1=lk["intf_a"], intfName2=lk["intf_b"])
    net.build()
    return net, nodes


def build_wifi(plan: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """mininet-wifi: stations for devices, an access point per edge with its edge host on a wired port."""
    from mn_wifi.net import Mininet_wifi

    net = Mininet_wifi(topo=None, controller=None, build=False, autoSetMacs=False)
    nodes: dict[str, Any] = {}
    for h in plan["hosts"]:
        nodes[h["name"]] = net.addHost(h["name"], ip=None)
    for s in plan["stations"]:
        kw: dict[str, Any] = {"position": s["position"]}
        kw.update(s.get("range_params", {}))
        nodes[s["name"]] = net.addStation(s["name"], ip=None, **kw)
    for ap in plan["access_points"]:
        nodes[ap["name"]] = net.addAccessPoint(ap["name"], ssid=ap["ssid"], mode=ap["mode"],
                                               channel=str(ap["channel"]), position=ap["position"],
                                               failMode="standalone")
    prop = plan["propagation"]
    net.setPropagationModel(**prop)
    net.configureNodes()
    for lk in plan["wired"]:
        net.addLink(nodes[lk["a"]], nodes[lk["b"]], intfName1=lk["intf_a"], intfName2=lk["intf_b"])
    mob = plan["mobility"]
    if mob["stations"]:
        if mob["random"]:
            net.setMobilityModel(time=0, model="RandomWayPoint", max_x=mob["max_x"], max_y=mob["max_y"],
                                 seed=mob["seed"])
        else:
            net.startMobility(time=0)
            for m in mob["stations"]:
                for seg in m["segments"]:
                    net.mobility(nodes[m["station"]], "start", time=seg["t0"], position=seg["p0"])
                    net.mobility(nodes[m["station"]], "stop", time=seg["t1"], position=seg["p1"])
            net.stopMobility(time=mob["end_s"])
    net.build()
    for ap in plan["access_points"]:
        nodes[ap["name"]].start([])
    return net, nodes


def main() -> int:
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    try:
        from mininet.log import setLogLevel

        setLogLevel("warning")
        net, nodes = build_wifi(plan) if plan["mode"] == "wifi" else build_wired(plan)
    except Exception as exc:  # noqa: BLE001 - reported to the testbed, which raises
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}), flush=True)
        return 1
    try:
        pids = {name: n.pid for name, n in nodes.items() if getattr(n, "pid", None)}
        print(json.dumps({"pids": pids}), flush=True)
        for line in sys.stdin:
            msg = json.loads(line)
            if msg.get("cmd") == "stop":
                break
            if msg.get("cmd") == "position":
                nodes[msg["node"]].setPosition(msg["position"])
            print(json.dumps({"ok": msg.get("cmd")}), flush=True)
    finally:
        net.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
