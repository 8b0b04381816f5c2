"""Property-based run of schemathesis (its CLI) over the service's own OpenAPI document: no input it
generates may produce a 5xx. The service runs as a real uvicorn process over real Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from serving.launcher import run_service
from tests.serving.conftest import Registry, service_env


@pytest.mark.slow
def test_no_5xx_from_generated_requests(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str
) -> None:
    env = service_env(registry, serving_world, tmp_path, redis_prefix)
    cli = Path(sys.executable).parent / "schemathesis"
    with run_service(env, workers=1, ready_timeout_s=180) as svc:
        proc = subprocess.run(
            [str(cli), "run", f"{svc.url}/openapi.json",
             "--checks", "not_a_server_error,content_type_conformance,status_code_conformance",
             "--max-examples", "15", "--seed", "20261122", "--workers", "1",
             "--phases", "examples,coverage,fuzzing", "--no-color"],
            capture_output=True, text=True, timeout=240, cwd=tmp_path,
        )  # fmt: skip
        log = svc.log()
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        print(output[-8000:])  # shown by pytest on failure
        print("--- service log ---\n" + log[-3000:])
    assert proc.returncode == 0, "schemathesis found failures (output above)"
    assert "Internal Server Error" not in log
