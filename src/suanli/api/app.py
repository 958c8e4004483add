"""The REST API: jobs, nodes and devices, queues and tenants, services and their gateway, metrics. Bearer tokens;
tenants see their own jobs and services.

Every answer to bad input is a 4xx naming the field and what is wrong with it; a write either happens whole or not
at all (each is one store transaction).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from suanli.api import logs
from suanli.api.deps import ControllerView, Ctx
from suanli.api.errors import BodyLimit, install_handlers
from suanli.api.routers import fleet, gateway, history, jobs, meta, nodes, plan, queues, report, tenants, ui
from suanli.api.routers import services as services_router
from suanli.control.logs import FollowerLimit
from suanli.control.metrics import Metrics, RouteTimer
from suanli.control.store import Store
from suanli.workload.spec import JobSpec

MAX_BODY = 256 * 1024

# the log readers' old names (kept for callers of this module)
_last_lines = logs.last_lines
_file_chunks = logs.file_chunks


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    gw = getattr(app.state, "gateway", None)  # the gateway's HTTP client to the replicas (api/routers/gateway.py)
    if gw is not None:
        await gw.aclose()


def create_app(store: Store, *, data_dir: str | Path | None = None, controller: ControllerView | None = None,
               metrics: Metrics | None = None, max_body: int = MAX_BODY, follow_per_tenant: int = 8,
               follow_per_admin: int = 64, services: Any = None, metrics_token: bool = False) -> FastAPI:
    """The API over ``store``. ``controller`` (optional) gives feasibility checks and live metrics;
    ``data_dir`` is where job logs live; ``follow_per_tenant`` caps the logs a tenant follows at once;
    ``services`` (the service manager) enables the services API and the gateway; ``metrics_token``: /metrics
    needs a bearer token (any valid one)."""
    app = FastAPI(title="suanli control plane", version="1", description=__doc__, lifespan=_lifespan,
                  docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=max_body)
    metrics = metrics or Metrics()
    metrics.store = store
    metrics.watch_store(store)
    app.add_middleware(RouteTimer, metrics=metrics)
    app.state.ctx = Ctx(store, metrics, controller, Path(data_dir).resolve() if data_dir is not None else None,
                        FollowerLimit(follow_per_tenant, follow_per_admin), services=services,
                        metrics_token=metrics_token)
    app.state.store = store
    app.state.metrics = metrics
    install_handlers(app)
    # the gateway first: its routes are the hot path (routing tries the routes in order)
    for r in (gateway.router, jobs.router, nodes.router, fleet.router, queues.router, tenants.router, history.router,
              plan.router, meta.router, services_router.router, report.router, ui.router):
        app.include_router(r)
    app.mount("/static", StaticFiles(directory=ui.STATIC), name="static")
    meta.install_docs(app)  # Swagger UI and ReDoc from local files

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        js = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for k, v in js.pop("$defs", {}).items():
            comps[k] = v
        comps["JobSpec"] = js
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app
