"""The marketer pages' guards over the real app: no session, no page; no CSRF token, no change; the API key
is the only way in; a failed create leaves nothing behind."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.conftest import Registry, make_settings

API_KEY = "test-pages-admin-key-0123456789"


@pytest.fixture(scope="module")
def pages(
    registry: Registry, serving_world: Path, tmp_path_factory: pytest.TempPathFactory, module_prefix: str
) -> Iterator[TestClient]:
    settings = make_settings(
        registry,
        serving_world,
        tmp_path_factory.mktemp("svc-pages"),
        module_prefix,
        admin_api_key=API_KEY,
        experiments_poll_s=0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False, follow_redirects=False) as c:
        yield c


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden field {name}"
    return found.group(1)


def log_in(client: TestClient) -> str:
    """Log in through the form; returns the session's CSRF token (read from a page's form)."""
    form = client.get("/experiments/login")
    resp = client.post(
        "/experiments/login",
        data={"api_key": API_KEY, "login_token": hidden(form.text, "login_token"), "next": "/experiments"},
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/experiments"
    cookie = resp.headers["set-cookie"]
    assert "recsys_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    return hidden(client.get("/experiments/new").text, "csrf_token")


def test_pages_need_a_session(pages: TestClient) -> None:
    pages.cookies.clear()
    for path in ("/experiments", "/experiments/new", "/experiments/anything"):
        resp = pages.get(path)
        assert resp.status_code == 303
        assert resp.headers["location"].startswith("/experiments/login?next=")
    for path in ("/experiments/new", "/experiments/x/start", "/experiments/x/stop", "/experiments/logout"):
        assert pages.post(path, data={"csrf_token": "x"}).status_code == 401


def test_login_needs_the_key_and_its_own_form(pages: TestClient) -> None:
    pages.cookies.clear()
    form = pages.get("/experiments/login")
    assert form.headers["content-security-policy"].startswith("default-src 'none'")
    token = hidden(form.text, "login_token")
    wrong = pages.post("/experiments/login", data={"api_key": "wrong", "login_token": token})
    assert wrong.status_code == 401 and "Wrong API key" in wrong.text
    assert "recsys_session" not in wrong.headers.get("set-cookie", "")
    # a login posted from elsewhere (no token of ours) is refused even with the right key
    pages.cookies.clear()
    forged = pages.post("/experiments/login", data={"api_key": API_KEY, "login_token": "made-up"})
    assert forged.status_code == 403
    # after login, never redirected off-site
    form = pages.get("/experiments/login?next=//evil.example/x")
    assert hidden(form.text, "next") == "/experiments"


def test_forms_need_the_sessions_csrf_token_and_bad_input_creates_nothing(pages: TestClient) -> None:
    pages.cookies.clear()
    csrf = log_in(pages)
    body = {
        "key": "pages-guard",
        "placements": "booking",
        "variant_key_0": "control",
        "variant_weight_0": "0.5",
        "variant_model_0": "champion",
        "variant_key_1": "b",
        "variant_weight_1": "0.5",
        "variant_model_1": "champion",
        "variant_objective_1": "acceptance",
    }
    assert pages.post("/experiments/new", data={**body, "csrf_token": "guess"}).status_code == 403
    bad = pages.post("/experiments/new", data={**body, "variant_weight_1": "0.7", "csrf_token": csrf})
    assert bad.status_code == 422 and "weight" in bad.text
    unknown = pages.post(
        "/experiments/new", data={**body, "variant_model_1": "no-such-alias", "csrf_token": csrf}
    )
    assert unknown.status_code == 422 and "no-such-alias" in unknown.text
    assert "pages-guard" not in pages.get("/experiments").text  # nothing half-created
    ok = pages.post("/experiments/new", data={**body, "csrf_token": csrf})
    assert ok.status_code == 303 and ok.headers["location"] == "/experiments/pages-guard"
    assert pages.post("/experiments/pages-guard/start", data={"csrf_token": "guess"}).status_code == 403
    assert 'id="status">draft<' in pages.get("/experiments/pages-guard").text
    assert pages.post("/experiments/pages-guard/start", data={"csrf_token": csrf}).status_code == 303
    assert 'id="status">running<' in pages.get("/experiments/pages-guard").text
    assert pages.post("/experiments/pages-guard/stop", data={"csrf_token": csrf}).status_code == 303
    assert pages.get("/experiments/nope").status_code == 404
    assert pages.post("/experiments/nope/start", data={"csrf_token": csrf}).status_code == 404


def test_without_an_admin_key_the_pages_are_off(
    registry: Registry, serving_world: Path, tmp_path: Path, module_prefix: str
) -> None:
    settings = make_settings(
        registry, serving_world, tmp_path, module_prefix, experiments_poll_s=0, admin_api_key=None
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        assert client.get("/experiments/login").status_code == 503
        assert client.get("/experiments").status_code == 303
