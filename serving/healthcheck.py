"""``python -m serving.healthcheck``: exit 0 when the service on this host is ready (``GET /readyz`` answers
200 on ``RECSYS_PORT``), else 1 with the reason on stderr. The image's ``HEALTHCHECK`` runs it.

It runs every few seconds beside the service, so it imports nothing but the standard library: it reads
``RECSYS_PORT`` itself rather than through :class:`serving.config.Settings` (whose validation imports the
core, seconds of CPU on a busy host).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0


def check(port: int, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when ready; else why not."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout_s) as resp:
            return None if resp.status == 200 else f"/readyz answered {resp.status}"
    except urllib.error.HTTPError as exc:  # 503: a check failed, named in the body
        return f"/readyz answered {exc.code}: {exc.read(2000).decode(errors='replace')}"
    except OSError as exc:
        return f"/readyz unreachable on port {port}: {exc}"


def main() -> int:
    port = os.environ.get("RECSYS_PORT", "8000")
    if not port.isdigit():
        print(f"RECSYS_PORT must be a port number, got {port!r}", file=sys.stderr)
        return 1
    problem = check(int(port))
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
