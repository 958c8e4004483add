"""Health, Prometheus metrics (a bearer token when the server asks for one: ``metrics_token``), and the API's
documentation pages with their assets served from this server (no CDN: clusters are often air-gapped)."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from suanli.api.deps import CtxDep, Who
from suanli.api.models import ERRORS, Health, Me

router = APIRouter(tags=["meta"])


@router.get("/healthz", response_model=Health, response_model_exclude_none=True)  # "virtual" only on a virtual fleet
def healthz(ctx: CtxDep) -> Health:
    ex = getattr(ctx.controller, "ex", None)
    describe = getattr(ex, "describe", None)
    return Health(ok=True, controller=ctx.controller_state(), virtual=describe() if callable(describe) else None)


@router.get("/metrics", response_class=PlainTextResponse, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
    401: {"description": "this server asks for a bearer token (any valid token) for its metrics"}})
def prom(request: Request, ctx: CtxDep) -> Response:
    """Prometheus metrics. When the server runs with ``metrics_token`` (the default off loopback), any valid
    bearer token is needed (Prometheus: ``authorization: {credentials_file: ...}``); the names it shows (queues,
    accelerator models, route templates) are ones every tenant may list anyway."""
    if ctx.metrics_token:
        auth = request.headers.get("authorization", "")
        scheme, _, tok = auth.partition(" ")
        if scheme.lower() != "bearer" or not tok.strip() or ctx.store.authenticate(tok.strip()) is None:
            raise HTTPException(401, "metrics: a bearer token is needed", headers={"WWW-Authenticate": "Bearer"})
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/whoami", response_model=Me, responses=ERRORS)
def whoami(p: Who) -> Me:
    """Who the token belongs to (the pages show admin actions only to admins; the API checks them anyway)."""
    return Me(admin=p.admin, tenant=p.tenant)


DOCS_ASSETS = "/_assets/docs"


def docs_assets_dir() -> Path | None:
    """Swagger UI and ReDoc files of the ``fastapi-offline`` package, if installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    d = Path(fastapi_offline.__file__).parent / "static"
    return d if (d / "swagger-ui-bundle.js").exists() else None


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their JavaScript and CSS served by this server."""
    assets = docs_assets_dir()
    if assets is None:  # no local copy: no documentation pages rather than pages that fetch code from a CDN
        return
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - docs",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
