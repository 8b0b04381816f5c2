"""Property-based run of schemathesis (its CLI) over the service's whole OpenAPI document, with the
production backends: real uvicorn, real Redis, PostgreSQL as the event log. No input it generates may
produce a 5xx, and every answer must conform to the document (status code, content type, response schema).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.launcher import run_service
from tests.serving.conftest import ADMIN_KEY, DEBUG_TOKEN, PG_URL, Registry, pg_schema_or_fail, service_env

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.slow
def test_whole_api_conforms_and_never_5xx_on_postgresql(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str
) -> None:
    engine, schema = pg_schema_or_fail()
    env = service_env(
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        RECSYS_DATABASE_URL=PG_URL,
        RECSYS_DATABASE_SCHEMA=schema,
        # the rate limiter on the request path too (a limit the run stays under)
        RECSYS_RATE_LIMIT="1000000/hour",
        RECSYS_RATE_LIMIT_KEY_PREFIX=f"{redis_prefix}:ratelimit",
    )
    cli = Path(sys.executable).parent / "schemathesis"
    try:
        with run_service(env, workers=1, ready_timeout_s=180) as svc:
            proc = subprocess.run(
                [str(cli), "run", f"{svc.url}/openapi.json", "--checks", CHECKS,
                 "--max-examples", "15", "--seed", "20261122", "--workers", "1",
                 "--phases", "examples,coverage,fuzzing", "--no-color",
                 # the admin operations too, with their credentials
                 "-H", f"X-Debug-Token: {DEBUG_TOKEN}", "-H", f"X-Api-Key: {ADMIN_KEY}"],
                capture_output=True, text=True, timeout=420, cwd=tmp_path,
            )  # fmt: skip
            log = svc.log()
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
    output = proc.stdout + proc.stderr
    summary = [line for line in output.splitlines() if re.search(r"\b(passed|failed|errors?)\b", line)]
    print("\n".join(summary[-6:]))  # the figures, shown with -s
    if proc.returncode != 0:
        print(output[-12000:])  # shown by pytest on failure
        print("--- service log ---\n" + log[-3000:])
    assert proc.returncode == 0, "schemathesis found failures (output above)"
    assert "Internal Server Error" not in log and "Traceback" not in log
