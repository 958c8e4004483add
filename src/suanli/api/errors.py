"""Answers to bad input: a 4xx whose detail names the field and what is wrong with it; request bodies over a limit
are refused with 413 before they are read."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from suanli.control.store import Conflict, Invalid, NotFound
from suanli.specfile import printable

log = logging.getLogger("suanli.api")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = self.limit + 1
                if n > self.limit:
                    await _too_large(send, self.limit)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body over the limit of {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for p in loc:
        if isinstance(p, str) and p.startswith("function-"):
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def errors_detail(errors: list[dict[str, Any]], prefix: tuple[Any, ...] = ()) -> dict[str, Any]:
    items = [{"field": printable(_loc((*prefix, *e.get("loc", ())))),
              "message": printable(str(e.get("msg", "invalid")).removeprefix("Value error, "))} for e in errors]
    return {"detail": "; ".join(f"{i['field']}: {i['message']}" for i in items[:5]), "errors": items}


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(errors_detail(list(exc.errors())), status_code=422)

    @app.exception_handler(NotFound)
    async def _nf(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _cf(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(sa_exc.DataError)
    async def _data(_: Request, exc: sa_exc.DataError) -> JSONResponse:
        # a value the database refuses (a safety net: input validation should have caught it first)
        log.warning("database refused a value: %s", exc.orig)
        return JSONResponse({"detail": f"a value was refused by the database: {exc.orig}"}, status_code=422)

    @app.exception_handler(Invalid)
    async def _iv(_: Request, exc: Invalid) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)
