"""Wall time of the command line's front door (``--help``, ``--version``, ``schemes``), for one or more
source trees side by side, e.g. a checkout of an older commit against the working tree:

    git archive OLD src probes report_templates | tar -x -C /tmp/old
    taskset -c 1 env OMP_NUM_THREADS=1 python bench/startup.py --src before=/tmp/old/src --src after=src

Each repetition starts a fresh interpreter, as a shell does, and runs the trees in turn, so a change in
the machine's load lands on all of them alike. Prints the median, min and max per tree and command, the
time ``import torch`` alone takes for scale, and the CPU (with torch's dispatch level) it ran on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

RUN = "import sys; from unlearn_audit.cli import main; main(sys.argv[1:])"
COMMANDS = (["--help"], ["audit", "--help"], ["--version"], ["schemes"])


def timed(code: str, args: list[str], src: str | None) -> float:
    env = {**os.environ, "PYTHONPATH": src} if src else dict(os.environ)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", action="append", required=True, help="NAME=PATH of a tree's src/ folder; repeat to compare")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    trees = dict(s.split("=", 1) for s in args.src)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.reps):
        for cmd in COMMANDS:
            for name, src in trees.items():
                times.setdefault((" ".join(cmd), name), []).append(timed(RUN, cmd, os.path.abspath(src)))
        times.setdefault(("import torch", "-"), []).append(timed("import torch", [], None))
    cpu = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         capture_output=True, text=True).stdout.strip()
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "unknown")
    print(f"{model}, torch CPU capability {cpu}, CPUs allowed: {sorted(os.sched_getaffinity(0))}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {args.reps} runs each")
    print(f"{'command':<14} {'tree':<8} {'median s':>9} {'min s':>7} {'max s':>7}")
    for (cmd, name), ts in times.items():
        print(f"{cmd:<14} {name:<8} {statistics.median(ts):>9.2f} {min(ts):>7.2f} {max(ts):>7.2f}")


if __name__ == "__main__":
    main()
