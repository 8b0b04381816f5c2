"""The contract an app team meets first, against a live uvicorn process (real Redis, a SQLite event log):

* every example in /openapi.json validates against its schema and, sent verbatim, answers as documented
  (a documented status, a body that fits the documented schema); the recommend example returns offers;
* a client generated from /openapi.json by a standard generator (datamodel-code-generator, from PyPI)
  parses the live response of every endpoint into its typed model;
* /docs and /redoc load their assets from the service itself (no CDN).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import jsonschema_rs
import pytest

from bench.launcher import LiveService
from tests.serving.conftest import ADMIN_KEY, DEBUG_TOKEN

CREDENTIALS = {"X-Debug-Token": DEBUG_TOKEN, "X-Api-Key": ADMIN_KEY}
# The app's own calls first (experiments started by the walk would route them to variants).
FIRST = ("/v1/recommendations", "/v1/events")


@pytest.fixture(scope="module")
def live(live_service: LiveService) -> LiveService:
    return live_service


@pytest.fixture(scope="module")
def doc(live: LiveService) -> dict[str, Any]:
    return dict(httpx.get(f"{live.url}/openapi.json", timeout=10).json())


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON Schema 2020-12 validator of ``schema`` whose $refs resolve in the document's components."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    return sorted(ops, key=lambda o: (o[0] not in FIRST, FIRST.index(o[0]) if o[0] in FIRST else 0))


def first_example(node: dict[str, Any]) -> Any:
    if "example" in node:
        return node["example"]
    if node.get("examples"):
        ex = node["examples"]
        return ex[0] if isinstance(ex, list) else next(iter(ex.values()))["value"]
    schema = node.get("schema", {})
    if schema.get("examples"):
        return schema["examples"][0]
    return None


def build_request(doc: dict[str, Any], path: str, op: dict[str, Any]) -> tuple[str, dict[str, Any], Any]:
    """(url path, query, json body) from the operation's examples."""
    query: dict[str, Any] = {}
    for p in op.get("parameters", []):
        value = first_example(p)
        if value is None:
            continue
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", str(value))
        elif p["in"] == "query":
            query[p["name"]] = value
    body = None
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is not None:
        body = first_example(content)
        if body is None and "$ref" in content["schema"]:
            body = doc["components"]["schemas"][content["schema"]["$ref"].rsplit("/", 1)[1]].get("example")
        assert body is not None, f"{path}: the request body has no example"
    assert "{" not in path, f"{path}: a path parameter has no example"
    return path, query, body


def response_schema(op: dict[str, Any], status: int) -> dict[str, Any] | None:
    documented = op["responses"].get(str(status))
    assert documented is not None, f"status {status} is not documented ({sorted(op['responses'])})"
    return documented.get("content", {}).get("application/json", {}).get("schema")


def test_every_example_validates_against_its_schema(doc: dict[str, Any]) -> None:
    checked = 0
    for name, schema in doc["components"]["schemas"].items():
        if "example" in schema:
            errors = [e.message for e in validator(doc, schema).iter_errors(schema["example"])]
            assert not errors, (name, errors)
            checked += 1
    for path, method, op in operations(doc):
        for p in op.get("parameters", []):
            value = first_example(p)
            if value is not None:
                assert validator(doc, p["schema"]).is_valid(value), (method, path, p["name"], value)
                checked += 1
    assert checked >= 12


def test_every_example_works_verbatim_against_the_live_service(
    live: LiveService, doc: dict[str, Any]
) -> None:
    seen: dict[str, int] = {}
    with httpx.Client(base_url=live.url, timeout=30, headers=CREDENTIALS) as http:
        for path, method, op in operations(doc):
            url, query, body = build_request(doc, path, op)
            resp = http.request(method.upper(), url, params=query, json=body)
            schema = response_schema(op, resp.status_code)
            if schema is not None:
                errors = [e.message for e in validator(doc, schema).iter_errors(resp.json())]
                assert not errors, (method, path, resp.status_code, errors)
            seen[f"{method.upper()} {path}"] = resp.status_code
            if path == "/v1/recommendations":
                assert resp.status_code == 200 and resp.json()["offers"], resp.text
            if path == "/v1/events":
                assert resp.status_code == 200, resp.text
    print("examples walked:", seen)
    assert len(seen) == sum(len(item) for item in doc["paths"].values())


def generated_models(doc_path: Path, out: Path) -> ModuleType:
    cli = Path(sys.executable).parent / "datamodel-codegen"
    subprocess.run(
        [str(cli), "--input", str(doc_path), "--input-file-type", "openapi", "--output", str(out),
         "--output-model-type", "pydantic_v2.BaseModel", "--extra-fields", "forbid"],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    spec = importlib.util.spec_from_file_location("generated_client_models", out)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_generated_client_parses_every_live_response(
    live: LiveService, doc: dict[str, Any], tmp_path: Path
) -> None:
    doc_path = tmp_path / "openapi.json"
    doc_path.write_bytes(httpx.get(f"{live.url}/openapi.json", timeout=10).content)
    models = generated_models(doc_path, tmp_path / "client_models.py")
    parsed: dict[str, str] = {}
    with httpx.Client(base_url=live.url, timeout=30, headers=CREDENTIALS) as http:
        for path, method, op in operations(doc):
            url, query, body = build_request(doc, path, op)
            resp = http.request(method.upper(), url, params=query, json=body)
            schema = response_schema(op, resp.status_code)
            key = f"{method.upper()} {path} {resp.status_code}"
            if schema is None:  # /metrics: Prometheus text
                assert resp.headers["content-type"].startswith("text/plain"), key
                parsed[key] = "text"
                continue
            if not schema:  # declared as any JSON: nothing to type it with
                parsed[key] = f"untyped JSON {type(resp.json()).__name__}"
                continue
            if "$ref" in schema:
                model = getattr(models, schema["$ref"].rsplit("/", 1)[1])
                parsed[key] = type(model.model_validate(resp.json())).__name__  # raises on any mismatch
            else:  # a list of one model
                assert schema["type"] == "array", (key, schema)
                model = getattr(models, schema["items"]["$ref"].rsplit("/", 1)[1])
                items = [model.model_validate(x) for x in resp.json()]
                parsed[key] = f"list[{model.__name__}] of {len(items)}"
        # an error of the app's own calls, parsed by the generated error model
        bad = http.post("/v1/recommendations", json={"member_id": "M0000042", "placement": "lobby"})
        err = models.ErrorResponse.model_validate(bad.json())
        assert err.error.fields[0].field == "placement"
        parsed["POST /v1/recommendations 422"] = "ErrorResponse"
    print("parsed by the generated client:", parsed)
    untyped = [k for k, v in parsed.items() if v.startswith("untyped")]
    assert untyped == [], untyped
    rec = models.RecommendationResponse.model_validate(
        httpx.post(
            f"{live.url}/v1/recommendations",
            json=doc["components"]["schemas"]["RecommendationRequest"]["example"],
            timeout=30,
        ).json()
    )
    assert rec.offers and isinstance(rec.offers[0].rank, int) and rec.offers[0].currency in ("CNY", None)


def test_docs_are_served_without_a_cdn(live: LiveService) -> None:
    for page, assets in (
        ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")),
        ("/redoc", ("redoc.standalone.js",)),
    ):
        html = httpx.get(f"{live.url}{page}", timeout=10).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert urls and all(u.startswith("/") for u in urls), (page, urls)  # nothing from another host
        for asset in assets:
            url = next(u for u in urls if u.endswith(asset))
            got = httpx.get(f"{live.url}{url}", timeout=10)
            assert got.status_code == 200 and len(got.content) > 10_000, (page, asset)
