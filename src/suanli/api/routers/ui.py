"""The dashboard's pages: HTML shells (Jinja2) whose scripts read the JSON API with the user's token, so a page
shows exactly what the API lets that token see. Everything a page loads is served from here (no CDN)."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from suanli.api.deps import JobId

HERE = Path(__file__).resolve().parent.parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
# the pages run only their own scripts: even text that slipped into the HTML could not run as code
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
PAGES = {"fleet": "Fleet", "queues": "Queues", "jobs": "Jobs", "nodes": "Nodes", "history": "Over time",
         "plan": "Plan"}

router = APIRouter(include_in_schema=False)


def page(request: Request, name: str, **ctx: object) -> Response:
    r = templates.TemplateResponse(request, f"{name}.html", {"page": name, "pages": PAGES, **ctx})
    r.headers["Content-Security-Policy"] = CSP
    r.headers["X-Content-Type-Options"] = "nosniff"
    r.headers["Cache-Control"] = "no-store"
    return r


@router.get("/", response_class=HTMLResponse)
def fleet_page(request: Request) -> Response:
    return page(request, "fleet")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return page(request, "login")


@router.get("/ui/fleet")
def fleet_alias() -> RedirectResponse:
    return RedirectResponse("/", status_code=307)


@router.get("/ui/queues", response_class=HTMLResponse)
def queues_page(request: Request) -> Response:
    return page(request, "queues")


@router.get("/ui/jobs", response_class=HTMLResponse)
def jobs_page(request: Request) -> Response:
    return page(request, "jobs")


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: JobId) -> Response:
    return page(request, "job", job_id=job_id)


@router.get("/ui/nodes", response_class=HTMLResponse)
def nodes_page(request: Request) -> Response:
    return page(request, "nodes")


@router.get("/ui/history", response_class=HTMLResponse)
def history_page(request: Request) -> Response:
    return page(request, "history")


@router.get("/ui/plan", response_class=HTMLResponse)
def plan_page(request: Request) -> Response:
    return page(request, "plan")
