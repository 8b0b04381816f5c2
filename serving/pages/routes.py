"""The marketer pages: log in with the admin API key, list experiments, create, start and stop one, read its
report. Server-rendered (Jinja2), no script, nothing from a CDN; the charts are inline SVG.

They call the same store, schema and report code as the admin API (``/v1/experiments``), so a page and the
API can never disagree. A page without a valid session redirects to the login form; a form posted without
a session or with a wrong CSRF token is refused (401/403) and changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from recsys.experiments import ExperimentError, ExperimentStore
from recsys.experiments.model import to_json
from serving.api.experiment_schemas import ExperimentIn, to_domain
from serving.experiment_report import experiment_report
from serving.pages import charts
from serving.pages.auth import (
    LOGIN_COOKIE,
    LOGIN_MAX_AGE_S,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    Session,
    SessionSigner,
    csrf_ok,
)
from serving.pages.forms import (
    HOLDOUT_SERVING,
    OBJECTIVES,
    PLACEMENTS,
    PRIMARY_METRICS,
    VARIANT_ROWS,
    FormError,
    experiment_payload,
)
from serving.services import Services

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["pct"] = lambda v, d=2: "–" if v is None else f"{v * 100:.{d}f}%"
templates.env.filters["spct"] = lambda v, d=2: "–" if v is None else f"{v * 100:+.{d}f}%"
templates.env.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:,.{d}f}"
templates.env.filters["pval"] = lambda v: "–" if v is None else (f"{v:.4f}" if v >= 1e-4 else f"{v:.1e}")

# No script at all; inline styles only; forms post to this origin; never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _signer(services: Services) -> SessionSigner | None:
    key = services.settings.admin_api_key
    return SessionSigner(key.get_secret_value()) if key is not None else None


def _store(services: Services) -> ExperimentStore | None:
    return services.experiment_store


def _session(request: Request) -> Session | None:
    signer = _signer(_services(request))
    return signer.read_session(request.cookies.get(SESSION_COOKIE)) if signer else None


def _page(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def _secure(request: Request) -> bool:
    # Production sits behind TLS (often ended at a proxy, so the scheme seen here may say http).
    return request.url.scheme == "https" or _services(request).settings.env == "production"


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/experiments/login?next={quote(request.url.path)}", status_code=303)


def _refused(request: Request, status_code: int, message: str) -> HTMLResponse:
    return _page(request, "message.html", {"title": "Refused", "message": message}, status_code=status_code)


async def _form_session(request: Request) -> tuple[FormData, Session] | HTMLResponse:
    """The posted form and the session, or the refusal (no session: 401; wrong CSRF token: 403)."""
    session = _session(request)
    form = await request.form()
    if session is None:
        return _refused(request, 401, "Your session has expired: log in again.")
    token = form.get("csrf_token")
    if not csrf_ok(session, token if isinstance(token, str) else None):
        return _refused(request, 403, "The form's security token does not match your session: reload it.")
    return form, session


# ------------------------------------------------------------------------------------------------ login


@router.get("/experiments/login")
async def login_form(request: Request, next: str = "/experiments") -> Response:
    signer = _signer(_services(request))
    if signer is None:
        return _refused(request, 503, "The experiment pages are disabled: RECSYS_ADMIN_API_KEY is not set.")
    cookie, token = signer.new_login_token()
    response = _page(request, "login.html", {"login_token": token, "next": _safe_next(next), "error": None})
    response.set_cookie(
        LOGIN_COOKIE,
        cookie,
        max_age=LOGIN_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/experiments",
    )
    return response


def _safe_next(target: str) -> str:
    # only paths of these pages: never an open redirect to another site
    return target if target.startswith("/experiments") and not target.startswith("//") else "/experiments"


@router.post("/experiments/login")
async def login(request: Request) -> Response:
    signer = _signer(_services(request))
    if signer is None:
        return _refused(request, 503, "The experiment pages are disabled: RECSYS_ADMIN_API_KEY is not set.")
    form = await request.form()
    api_key, token, target = (str(form.get(n) or "") for n in ("api_key", "login_token", "next"))
    if not signer.login_token_ok(request.cookies.get(LOGIN_COOKIE), token):
        return _refused(request, 403, "The login form expired or was not sent by this site: reload it.")
    if not signer.key_matches(api_key):
        cookie, new_token = signer.new_login_token()
        response = _page(
            request,
            "login.html",
            {"login_token": new_token, "next": _safe_next(target), "error": "Wrong API key."},
            status_code=401,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            cookie,
            max_age=LOGIN_MAX_AGE_S,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
            path="/experiments",
        )
        return response
    value, _ = signer.new_session()
    redirect = RedirectResponse(_safe_next(target), status_code=303)
    redirect.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )
    redirect.delete_cookie(LOGIN_COOKIE, path="/experiments")
    return redirect


@router.post("/experiments/logout")
async def logout(request: Request) -> Response:
    checked = await _form_session(request)
    if isinstance(checked, HTMLResponse):
        return checked
    response = RedirectResponse("/experiments/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ------------------------------------------------------------------------------------------------ pages


@router.get("/experiments")
async def list_page(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    store = _store(_services(request))
    if store is None:
        return _refused(request, 503, "No experiment store is configured.")
    experiments = [to_json(e) for e in await run_in_threadpool(store.list_all)]
    return _page(request, "list.html", {"experiments": experiments, "csrf": session.csrf})


def _new_context(session: Session, form: FormData | None, errors: list[tuple[str, str]]) -> dict[str, Any]:
    values = {k: str(v) for k, v in form.multi_items()} if form is not None else {}
    chosen = form.getlist("placements") if form is not None else ["booking"]
    return {
        "csrf": session.csrf,
        "values": values,
        "chosen": chosen,
        "errors": errors,
        "rows": range(VARIANT_ROWS),
        "placements": PLACEMENTS,
        "objectives": OBJECTIVES,
        "metrics": PRIMARY_METRICS,
        "holdout_serving": HOLDOUT_SERVING,
    }


@router.get("/experiments/new")
async def new_page(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    return _page(request, "new.html", _new_context(session, None, []))


def _field_name(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@router.post("/experiments/new")
async def create(request: Request) -> Response:
    checked = await _form_session(request)
    if isinstance(checked, HTMLResponse):
        return checked
    form, session = checked
    services = _services(request)
    store = _store(services)
    if store is None:
        return _refused(request, 503, "No experiment store is configured.")
    fields = {k: str(v) for k, v in form.multi_items() if isinstance(v, str)}
    errors: list[tuple[str, str]] = []
    try:
        payload = experiment_payload(fields, [str(p) for p in form.getlist("placements")])
        body = ExperimentIn.model_validate(payload)
        exp = to_domain(body, services.settings.model_name)
        created = await run_in_threadpool(store.create, exp)
    except FormError as exc:
        errors.append((exc.field, exc.message))
    except ValidationError as exc:
        errors.extend((_field_name(tuple(e["loc"])), e["msg"]) for e in exc.errors())
    except ExperimentError as exc:
        errors.append((exc.field, exc.message))
    if errors:
        return _page(request, "new.html", _new_context(session, form, errors), status_code=422)
    return RedirectResponse(f"/experiments/{quote(created.key)}", status_code=303)


async def _transition(request: Request, key: str, action: str) -> Response:
    checked = await _form_session(request)
    if isinstance(checked, HTMLResponse):
        return checked
    services = _services(request)
    store = _store(services)
    if store is None:
        return _refused(request, 503, "No experiment store is configured.")
    try:
        await run_in_threadpool(store.start if action == "start" else store.stop, key)
    except ExperimentError as exc:
        status = {"not_found": 404, "conflict": 409}.get(exc.kind, 422)
        return _refused(request, status, f"Cannot {action} {key}: {exc.field}: {exc.message}")
    if services.experiments is not None:
        await services.experiments.refresh()  # this worker at once, the others within their poll
    return RedirectResponse(f"/experiments/{quote(key)}", status_code=303)


@router.post("/experiments/{key}/start")
async def start(request: Request, key: str) -> Response:
    return await _transition(request, key, "start")


@router.post("/experiments/{key}/stop")
async def stop(request: Request, key: str) -> Response:
    return await _transition(request, key, "stop")


@router.get("/experiments/{key}")
async def report_page(request: Request, key: str) -> Response:
    session = _session(request)
    if session is None:
        return _to_login(request)
    services = _services(request)
    store = _store(services)
    if store is None:
        return _refused(request, 503, "No experiment store is configured.")
    exp = await run_in_threadpool(store.get, key)
    if exp is None:
        return _refused(request, 404, f"Unknown experiment {key!r}.")
    report = await run_in_threadpool(experiment_report, services, exp)
    offline = {e.get("variant"): e for e in (report.get("offline_estimate") or {}).get("estimates", []) or []}
    return _page(
        request,
        "report.html",
        {
            "csrf": session.csrf,
            "r": report,
            "exp": report["experiment"],
            "offline_by_variant": offline,
            "lift_chart": charts.lift_chart(report),
            "timeline_chart": charts.timeline_chart(report),
        },
    )
