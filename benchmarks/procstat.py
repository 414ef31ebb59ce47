"""What the benchmarks read about processes from /proc (Linux): CPU time, parents, children."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class Proc(NamedTuple):
    comm: str  # the command name
    ppid: int
    cpu_seconds: float  # user and system time so far


def process_table() -> dict[int, Proc]:
    """Every process on the machine now (one that ends while it is read is left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = Proc(comm, int(fields[1]),
                                      (int(fields[11]) + int(fields[12])) / tick)
    return table


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (none when it is gone)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests so far, all cores (a busy neighbour)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")
