"""``make bench-data``: wall time and peak memory of ``recsys data generate`` at 50,000 and 1,000,000 members.

Each run is measured by ``/usr/bin/time -v`` (GNU time: Debian package ``time``) and compared with the targets
of issue 2: 50k members <= 2 min; 1M members <= 20 min and <= 8 GB peak RSS. Worlds are written under a
temporary directory (or ``--workdir``) and removed afterwards unless ``--keep``.

    python bench/bench_data.py [--sizes 50000 1000000] [--seed 42] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TIME = "/usr/bin/time"
TARGETS = {50_000: (120.0, None), 1_000_000: (1200.0, 8 * 1024**3)}  # members -> (max seconds, max bytes)


def _ensure_time() -> str:
    if Path(TIME).is_file():
        return TIME
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("/usr/bin/time is missing: installing the Debian package 'time' ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "time"], check=False)
        if Path(TIME).is_file():
            return TIME
    sys.exit("error: /usr/bin/time (GNU time) is missing; install it with: sudo apt-get install -y time")


def _parse_time_v(stderr: str) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds user + system, peak RSS bytes) from ``/usr/bin/time -v`` output."""
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    user = re.search(r"User time \(seconds\): ([\d.]+)", stderr)
    system = re.search(r"System time \(seconds\): ([\d.]+)", stderr)
    if not wall or not rss or not user or not system:
        raise RuntimeError("could not parse /usr/bin/time -v output:\n" + stderr[-2000:])
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return seconds, float(user.group(1)) + float(system.group(1)), int(rss.group(1)) * 1024


def _recsys() -> list[str]:
    exe = Path(sys.executable).with_name("recsys")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "training.cli"]


def run(members: int, seed: int, workdir: Path, keep: bool) -> tuple[float, int, bool]:
    out = workdir / f"bench-world-{members}"
    cmd = [
        _ensure_time(),
        "-v",
        *_recsys(),
        "data",
        "generate",
        "--members",
        str(members),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--overwrite",
        "--no-progress",
    ]
    print(f"$ {' '.join(cmd[2:])}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        raise SystemExit(f"error: generating {members:,} members failed (exit {proc.returncode})")
    wall, cpu, rss = _parse_time_v(proc.stderr)
    max_s, max_rss = TARGETS.get(members, (None, None))
    ok = (max_s is None or wall <= max_s) and (max_rss is None or rss <= max_rss)
    target = []
    if max_s is not None:
        target.append(f"<= {max_s / 60:.0f} min")
    if max_rss is not None:
        target.append(f"<= {max_rss / 1024**3:.0f} GB")
    print(
        f"  {members:>9,} members: wall {wall:8.1f} s ({wall / 60:5.2f} min), "
        f"CPU {cpu:7.1f} s, peak RSS {rss / 1024**3:6.2f} GB"
        f"   target {', '.join(target) or '-'}: {'OK' if ok else 'MISSED'}",
        flush=True,
    )
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return wall, rss, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated worlds")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-data-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"bench-data: {os.cpu_count()} CPUs, load average {load:.1f}; worlds under {workdir}", flush=True)
    if load > (os.cpu_count() or 1):
        print(
            "  note: the machine is busy; wall times include waiting for a CPU (compare CPU seconds)",
            flush=True,
        )
    results = [run(n, args.seed, workdir, args.keep) for n in args.sizes]
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(ok for _, _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
