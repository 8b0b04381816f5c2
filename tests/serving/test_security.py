"""Admin and marketer paths need the admin API key (never the debug token), production refuses weak keys at
start-up, the marketer session cookie's attributes, CORS off by default and on by settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from serving.app import create_app
from tests.serving.conftest import ADMIN_KEY, DEBUG_TOKEN, Registry, make_settings

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PREFIXES = ("/v1/admin", "/v1/experiments")
PAGES_PREFIX = "/experiments"
# Every credential but the right one: none, a wrong key, the right key with a byte more, the debug token in
# either header.
WRONG_CREDENTIALS = (
    {},
    {"X-Api-Key": "wrong-key-0123456789abcdef"},
    {"X-Api-Key": ADMIN_KEY + "x"},
    {"X-Api-Key": DEBUG_TOKEN},
    {"X-Debug-Token": DEBUG_TOKEN},
)


@pytest.fixture(scope="module")
def app_client(
    registry: Registry, serving_world: Path, tmp_path_factory: pytest.TempPathFactory, module_prefix: str
) -> Iterator[TestClient]:
    settings = make_settings(
        registry, serving_world, tmp_path_factory.mktemp("svc-sec"), module_prefix, experiments_poll_s=0
    )
    with TestClient(create_app(settings), raise_server_exceptions=False, follow_redirects=False) as c:
        yield c


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def flat_routes(routes: list[Any]) -> Iterator[Any]:
    """Every route of the app, through the included routers (they carry no prefix of their own)."""
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI's included router
        if inner is not None:
            yield from flat_routes(inner.routes)
        else:
            yield route


def routes_under(client: TestClient, prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    found = []
    for route in flat_routes(client.app.routes):  # type: ignore[attr-defined]
        if isinstance(route, APIRoute | Route) and route.path.startswith(prefixes):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    found.append((method, concrete(route.path)))
    return found


def test_every_admin_api_route_answers_401_without_the_admin_key(app_client: TestClient) -> None:
    routes = routes_under(app_client, ADMIN_PREFIXES)
    # The walk finds the routes (a renamed prefix would make this test vacuous).
    assert ("POST", "/v1/admin/reload") in routes and ("POST", "/v1/admin/caps-policy/reload") in routes
    assert ("GET", "/v1/experiments/x/report") in routes and len(routes) >= 9
    for method, path in routes:
        for headers in WRONG_CREDENTIALS:
            resp = app_client.request(method, path, headers=headers, json={})
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.json()["error"]["code"] == "unauthorized"
            assert resp.headers["www-authenticate"] == "ApiKey"
    # The right key passes the guard (whatever the route then answers, it is not 401).
    assert app_client.post("/v1/admin/reload", headers={"X-Api-Key": ADMIN_KEY}).status_code == 200


def test_every_marketer_page_needs_a_session(app_client: TestClient) -> None:
    routes = [r for r in routes_under(app_client, (PAGES_PREFIX,)) if not r[1].endswith("/login")]
    assert ("POST", "/experiments/new") in routes and ("GET", "/experiments/x") in routes
    app_client.cookies.clear()
    for method, path in routes:
        for headers in WRONG_CREDENTIALS:
            resp = app_client.request(method, path, headers=headers, data={"csrf_token": "x"})
            if method == "GET":  # a browser is sent to the login form, and shown nothing else
                assert resp.status_code == 303, (method, path, headers)
                assert resp.headers["location"].startswith("/experiments/login?next=")
            else:
                assert resp.status_code == 401, (method, path, headers, resp.text)
    wrong = app_client.post("/experiments/login", data={"api_key": DEBUG_TOKEN, "login_token": "x"})
    assert wrong.status_code == 403  # no login form token: refused before the key is even compared


def log_in(client: TestClient) -> str:
    """Log in through the form with the admin key; returns the Set-Cookie header of the session."""
    form = client.get("/experiments/login")
    token = re.search(r'name="login_token" value="([^"]*)"', form.text)
    assert token
    resp = client.post(
        "/experiments/login",
        data={"api_key": ADMIN_KEY, "login_token": token.group(1), "next": "/experiments"},
    )
    assert resp.status_code == 303
    return next(c for c in resp.headers.get_list("set-cookie") if c.startswith("recsys_session="))


def cookie_attributes(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")[1:]]
    return {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else "") for p in parts}


@pytest.mark.parametrize(("base_url", "env", "secure"), [
    ("http://testserver", "development", False),
    ("https://testserver", "development", True),
    ("http://testserver", "production", True),  # TLS ended at a proxy: the cookie is Secure all the same
])  # fmt: skip
def test_session_cookie_is_signed_http_only_same_site_and_secure_over_tls(
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    module_prefix: str,
    base_url: str,
    env: str,
    secure: bool,
) -> None:
    keys = {"admin_api_key": ADMIN_KEY * 2, "tracking_secret": "t" * 40} if env == "production" else {}
    settings = make_settings(
        registry, serving_world, tmp_path, module_prefix, experiments_poll_s=0, env=env, debug_token=None,
        **keys,
    )  # fmt: skip
    with TestClient(create_app(settings), base_url=base_url, follow_redirects=False) as client:
        form = client.get("/experiments/login")
        token = re.search(r'name="login_token" value="([^"]*)"', form.text)
        assert token
        login_cookie = form.headers["set-cookie"]
        attrs = cookie_attributes(login_cookie)
        assert "httponly" in attrs and attrs["samesite"].lower() == "strict"
        assert attrs["path"] == "/experiments"
        assert ("secure" in attrs) is secure
        # Sent back by hand: a client keeps a Secure cookie from a plain-http origin to itself.
        client.cookies.clear()
        resp = client.post(
            "/experiments/login",
            data={"api_key": settings.admin_api_key.get_secret_value(), "login_token": token.group(1)},  # type: ignore[union-attr]
            headers={"Cookie": login_cookie.split(";", 1)[0]},
        )
        assert resp.status_code == 303
        session = next(c for c in resp.headers.get_list("set-cookie") if c.startswith("recsys_session="))
        attrs = cookie_attributes(session)
        assert "httponly" in attrs and attrs["samesite"].lower() == "strict" and attrs["path"] == "/"
        assert ("secure" in attrs) is secure
        assert int(attrs["max-age"]) <= 8 * 3600
        value = session.split(";", 1)[0].split("=", 1)[1]
        assert value.count(".") == 2  # itsdangerous: payload.timestamp.signature
        # A tampered signature is no session.
        client.cookies.clear()
        client.cookies.set("recsys_session", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
        assert client.get("/experiments").status_code == 303


def test_form_post_without_the_csrf_token_is_refused_and_changes_nothing(app_client: TestClient) -> None:
    app_client.cookies.clear()
    log_in(app_client)
    before = app_client.get("/v1/experiments", headers={"X-Api-Key": ADMIN_KEY}).json()["experiments"]
    form = {"key": "csrf-probe", "name": "CSRF probe", "placement": "home"}
    refused = app_client.post("/experiments/new", data=form)  # the session cookie, no csrf_token field
    assert refused.status_code == 403 and "security token" in refused.text
    assert app_client.post("/experiments/csrf-probe/start", data={}).status_code == 403
    assert app_client.post("/experiments/logout", data={}).status_code == 403
    after = app_client.get("/v1/experiments", headers={"X-Api-Key": ADMIN_KEY}).json()["experiments"]
    assert after == before


def run_serving(env_over: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update({"RECSYS_ENV": "production", "RECSYS_PORT": "1", **env_over})
    return subprocess.run(
        [sys.executable, "-m", "serving"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


STRONG = "s" * 40


@pytest.mark.parametrize(("keys", "setting", "message"), [
    ({"RECSYS_TRACKING_SECRET": STRONG}, "RECSYS_ADMIN_API_KEY", "must be set in production"),
    ({"RECSYS_ADMIN_API_KEY": "", "RECSYS_TRACKING_SECRET": STRONG}, "RECSYS_ADMIN_API_KEY", "is empty"),
    ({"RECSYS_ADMIN_API_KEY": "changeme", "RECSYS_TRACKING_SECRET": STRONG}, "RECSYS_ADMIN_API_KEY",
     "placeholder"),
    ({"RECSYS_ADMIN_API_KEY": "k" * 20, "RECSYS_TRACKING_SECRET": STRONG}, "RECSYS_ADMIN_API_KEY",
     "at least 32 characters in production"),
    ({"RECSYS_ADMIN_API_KEY": STRONG}, "RECSYS_TRACKING_SECRET", "must be set in production"),
    ({"RECSYS_ADMIN_API_KEY": STRONG, "RECSYS_TRACKING_SECRET": STRONG, "RECSYS_DEBUG_TOKEN": "d" * 20},
     "RECSYS_DEBUG_TOKEN", "at least 32 characters in production"),
])  # fmt: skip
def test_production_refuses_to_start_with_a_missing_placeholder_or_short_key(
    keys: dict[str, str], setting: str, message: str
) -> None:
    proc = run_serving(keys)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip().startswith("RECSYS_")]
    assert any(line.strip().startswith(f"{setting}:") and message in line for line in lines), proc.stderr
    assert "Traceback" not in proc.stderr
    for value in keys.values():
        if len(value) >= 8:
            assert value not in proc.stderr  # never echo a secret


def test_cors_is_off_by_default(app_client: TestClient) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    assert "access-control-allow-origin" not in app_client.get("/healthz", headers=origin).headers
    preflight = app_client.options(
        "/v1/recommendations", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(
    registry: Registry, serving_world: Path, tmp_path: Path, module_prefix: str
) -> None:
    allowed = "https://offers.example"
    settings = make_settings(
        registry, serving_world, tmp_path, module_prefix, cors_allow_origins=f"{allowed}, https://b.example"
    )
    with TestClient(create_app(settings)) as client:
        ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        ok = client.options("/v1/recommendations", headers={"Origin": allowed, **ask})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
        assert "POST" in ok.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in ok.headers
        other = client.options("/v1/recommendations", headers={"Origin": "https://evil.example", **ask})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        simple = client.get("/healthz", headers={"Origin": allowed})
        assert simple.headers["access-control-allow-origin"] == allowed


@pytest.mark.parametrize("path", ["/v1/events", "/v1/recommendations", "/v1/experiments"])
def test_a_chunked_body_over_the_limit_is_a_json_413(app_client: TestClient, path: str) -> None:
    limit = app_client.app.state.services.settings.max_body_bytes  # type: ignore[attr-defined]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"events": ['
        for _ in range(limit // 1024 + 2):
            yield b" " * 1024
        yield b"]}"

    resp = app_client.post(
        path, content=chunks(), headers={"Content-Type": "application/json", "X-Api-Key": ADMIN_KEY}
    )
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "payload_too_large"
    assert str(limit) in resp.json()["error"]["message"]
