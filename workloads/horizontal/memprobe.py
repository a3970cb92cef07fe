"""Peak memory of a process that holds a model part and runs one input through it (measured, not computed).

``python -m workloads.horizontal.memprobe FILE SHAPE_JSON [REGION_JSON]`` loads the module saved in FILE
(a whole model, or the ``nn.ModuleList`` of a device's fused ops), runs one random input of SHAPE through
it (with REGION, as that tile: its own padding, ops [start, end)) and prints, in bytes, the growth of the
resident set after ``import torch``: once the weights are loaded, and at the peak.
"""

from __future__ import annotations

import json
import resource
import sys


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str]) -> None:
    import torch
    from torch import nn

    from workloads.horizontal.tiles import Region, ops_of, run_region

    torch.set_num_threads(1)
    base = _rss()
    mod = torch.load(argv[0], map_location="cpu", weights_only=False)
    loaded = _rss()
    x = torch.rand(*json.loads(argv[1]))
    with torch.inference_mode():
        if len(argv) > 2:
            r = json.loads(argv[2])
            region = Region(r["start"], r["end"], tuple(map(tuple, r["out"])), tuple(map(tuple, r["inp"])),
                            tuple(map(tuple, r["pads"])))
            run_region(list(mod), ops_of(nn.Sequential(*mod)), x, region)
        else:
            mod(x)
    print(json.dumps({"weights_bytes": loaded - base, "peak_bytes": _rss() - base}))


if __name__ == "__main__":
    main(sys.argv[1:])
