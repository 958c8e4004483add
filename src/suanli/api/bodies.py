"""Submitted documents (a job, a service): JSON or YAML, parsed and validated with every problem a 4xx naming the
field. CPU work: callers run it in a worker thread, never on the event loop."""

# no "from __future__ import annotations": FastAPI reads these annotations at run time

import json
from typing import Any, TypeVar

from fastapi import HTTPException
from pydantic import BaseModel, ValidationError

from suanli.api.errors import errors_detail
from suanli.errors import SuanliError
from suanli.specfile import load_bounded, printable, validate

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_TYPES = ("application/json", "")  # no Content-Type: JSON

M = TypeVar("M", bound=BaseModel)


def parse_body(body: bytes, ctype: str, model: type[M], noun: str) -> tuple[M, dict[str, Any]]:
    """``body`` as ``model`` (``noun`` names the document in messages: "a job is a mapping")."""
    if ctype not in YAML_TYPES and ctype not in JSON_TYPES:
        raise HTTPException(415, f"Content-Type {printable(ctype)!r}: send application/json or application/yaml")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "body: not UTF-8 text") from None
    if "\x00" in text:
        raise HTTPException(422, "body: NUL characters are not allowed")
    try:
        if ctype in YAML_TYPES:
            data, root = load_bounded(text, "body")  # refuses alias bombs before anything walks the data
            if not isinstance(data, dict):
                raise HTTPException(422, f"body: {noun} is a mapping")
            spec = validate(data, root, model, "body")
        else:
            try:
                data = json.loads(text) if text.strip() else None
            except (json.JSONDecodeError, RecursionError) as e:
                raise HTTPException(400, f"body: not valid JSON: {e}") from None
            if not isinstance(data, dict):
                raise HTTPException(422, f"body: {noun} is a JSON object")
            spec = model.model_validate(data)
    except ValidationError as e:
        raise HTTPException(422, errors_detail(list(e.errors()), ("body",))["detail"]) from None
    except (SuanliError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise HTTPException(422, printable(f"body: {e}")) from None
    return spec, data
