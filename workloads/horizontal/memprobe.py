"""Peak memory of a process that holds a model part and runs one input through it (measured, not computed).

``python -m workloads.horizontal.memprobe FILE SHAPE_JSON [REGION_JSON]`` loads the module saved in FILE
(a whole model, or the ``nn.ModuleList`` of a device's fused ops), runs one random input of SHAPE through
it (with REGION, as that tile: its own padding, ops [start, end)) and prints, in bytes, the growth of the
resident set over its size after ``import torch`` (whose peak is reset first): once the weights are
loaded, and at the peak.
"""

from __future__ import annotations

import json
import resource
import sys


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> None:
    """Linux resets the peak resident set (VmHWM) on writing 5 to clear_refs (since 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak() -> int:
    try:
        return _status("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str]) -> None:
    import torch
    from torch import nn

    from workloads.horizontal.tiles import ops_of, region_from_meta, run_region

    torch.set_num_threads(1)
    _reset_peak()
    base = _status("VmRSS")
    mod = torch.load(argv[0], map_location="cpu", weights_only=False)
    loaded = _status("VmRSS")
    x = torch.rand(*json.loads(argv[1]))
    with torch.inference_mode():
        if len(argv) > 2:
            region = region_from_meta(json.loads(argv[2]))
            run_region(list(mod), ops_of(nn.Sequential(*mod)), x, region)
        else:
            mod(x)
    print(json.dumps({"weights_bytes": loaded - base, "peak_bytes": _peak() - base}))


if __name__ == "__main__":
    main(sys.argv[1:])
