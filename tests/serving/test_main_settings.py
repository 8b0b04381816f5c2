"""``python -m serving`` with bad settings: one message naming each bad variable, non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bad_settings_exit_with_a_message_naming_the_variables() -> None:
    env = {
        **os.environ,
        "RECSYS_DEBUG_TOKEN": "short",
        "RECSYS_PORT": "0",
        "RECSYS_REQUEST_LOG_WRITER": "fork",
        "RECSYS_GC_YOUNG_THRESHOLD": "50",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "serving"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "RECSYS_DEBUG_TOKEN" in proc.stderr and "16 characters" in proc.stderr
    assert "RECSYS_PORT" in proc.stderr
    assert "RECSYS_REQUEST_LOG_WRITER: Input should be 'process' or 'thread'" in proc.stderr
    assert "RECSYS_GC_YOUNG_THRESHOLD: Input should be greater than or equal to 100" in proc.stderr
    assert "Traceback" not in proc.stderr
