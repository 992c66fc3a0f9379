"""Does this machine run two busy processes at twice the speed of one? A check of the cores themselves, without
raybt, to read Ray's speed-up against (``bench_throughput.py --only steady`` prints "machine ceiling" for raybt's own
sweeps).

    python benchmarks/bench_machine.py              # 3 repeats of each loop, alone then in pairs
    python benchmarks/bench_machine.py --repeat 5 --processes 4

Two compiled loops, each run by one process alone and then by ``--processes`` processes at once (started together,
each doing the same work): *arithmetic*, a dependent chain of multiply-adds on registers (no memory traffic), and
*memory*, a sum over a 64 MB float64 array read again and again (about 10 GB/s per process on the machines raybt is
measured on). Speed-up = ``processes × single-process wall / slowest wall of the group``: the number of processes
on cores of their own, less when they share a physical core (SMT siblings), memory bandwidth or a host with busy
neighbours (a VM's vCPUs). Repeats are interleaved, so a change of the host's load shows as spread.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = r'''
import sys, time
import numba, numpy as np

@numba.njit
def arithmetic(n):
    x, y = 1.0, 0.5
    for _ in range(n):
        x = x * 1.0000001 + y
        y = y * 0.9999999 - 1e-9
    return x + y

@numba.njit
def memory(values, passes):
    total = 0.0
    for _ in range(passes):
        for i in range(values.size):
            total += values[i]
    return total

kind = sys.argv[1]
values = np.ones(8_000_000)  # 64 MB: larger than the caches
arithmetic(10), memory(values[:10], 1)  # compile before the clock starts
sys.stdout.write("ready\n"); sys.stdout.flush(); sys.stdin.readline()  # start together
started = time.perf_counter()
arithmetic(400_000_000) if kind == "arithmetic" else memory(values, 50)
print(time.perf_counter() - started)
'''


def walls(kind: str, n: int) -> list[float]:
    """Wall seconds of ``n`` processes running the ``kind`` loop at once (released together once all compiled)."""
    children = [subprocess.Popen([sys.executable, "-c", CHILD, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for _ in range(n)]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    return [float(child.communicate()[0]) for child in children]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    for kind in ("arithmetic", "memory"):
        speedups, alone = [], []
        for _ in range(args.repeat):
            single = walls(kind, 1)[0]
            group = walls(kind, args.processes)
            alone.append(single)
            speedups.append(args.processes * single / max(group))
        print(f"{kind:10s}: one process {statistics.median(alone):.3f} s; {args.processes} at once: speed-up "
              f"{statistics.median(speedups):.2f}x (runs {', '.join(f'{s:.2f}' for s in speedups)}; "
              f"{args.processes:.2f}x = cores of their own)")


if __name__ == "__main__":
    main()
