"""Run the service as a separate process (``python -m serving``) on a free port. Test and benchmark support,
not the product: tests that need real worker processes (caps under concurrency) and the benchmarks use it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveService:
    """A running service process: its base URL, pid and log file."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """The uvicorn process and its worker children (for RSS measurement)."""
        pids = [self.pid]
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split():
                pids.append(int(line))
        return pids

    def rss_bytes(self) -> int:
        """Resident memory of the service's processes (sum)."""
        total = 0
        for pid in self.worker_pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total


@contextlib.contextmanager
def run_service(
    env: Mapping[str, str],
    *,
    workers: int = 1,
    port: int | None = None,
    ready_timeout_s: float = 120.0,
    cwd: str | Path | None = None,
    log_path: str | Path | None = None,
    command: Sequence[str] | None = None,
) -> Iterator[LiveService]:
    """Start ``python -m serving`` (or ``command``, an app served the same way)
    with ``env`` (on top of this process's environment), wait until ``/readyz``
    answers 200, yield it, then stop it (SIGTERM, then SIGKILL after 10 s). Raises RuntimeError with the log
    if it does not become ready in time or exits early."""
    port = port or free_port()
    full_env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        **env,
        "RECSYS_PORT": str(port),
        "RECSYS_HOST": "127.0.0.1",
        "RECSYS_WORKERS": str(workers),
    }
    if log_path is None:
        log_path = tempfile.mkstemp(prefix="recsys-serve-", suffix=".log")[1]
    log_file = Path(log_path)
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            list(command or [sys.executable, "-m", "serving"]),
            env=full_env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = LiveService(url=f"http://127.0.0.1:{port}", port=port, process=proc, log_path=log_file)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"service exited with {proc.returncode} before ready:\n{service.log()[-4000:]}"
                )
            try:
                if httpx.get(f"{service.url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service not ready after {ready_timeout_s}s:\n{service.log()[-4000:]}")
            time.sleep(0.2)
        yield service
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
