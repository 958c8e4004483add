"""Job and service documents go through one parser: the same 4xx, naming the field, for both kinds."""

import pytest
from fastapi import HTTPException

from suanli.api.routers.jobs import parse_spec
from suanli.api.routers.services import parse_service

JOB = b'{"name": "j", "command": ["true"]}'
SERVICE = b'{"name": "s", "command": ["serve"], "replicas": {"min": 1, "max": 2}}'


@pytest.mark.parametrize(("parse", "ok", "noun"), [(parse_spec, JOB, "a job"), (parse_service, SERVICE, "a service")])
def test_both_kinds_refuse_the_same_bad_bodies(parse, ok, noun) -> None:  # type: ignore[no-untyped-def]
    spec, data = parse(ok, "application/json")
    assert spec.name == data["name"]
    spec, _ = parse(ok.decode().replace('"', "'").encode(), "application/yaml")  # YAML flow style
    cases = [
        (ok, "text/plain", 415, "Content-Type"),
        (b"\xff\xfe", "application/json", 400, "not UTF-8"),
        (ok[:-1] + b', "x": "\x00"}', "application/json", 422, "NUL"),
        (b"[1, 2]", "application/json", 422, f"{noun} is a JSON object"),
        (b"- 1\n- 2\n", "application/yaml", 422, f"{noun} is a mapping"),
        (b"{", "application/json", 400, "not valid JSON"),
        (b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
         b'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
         b'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n', "application/yaml", 422, "body"),
    ]
    for body, ctype, status, words in cases:
        with pytest.raises(HTTPException) as e:
            parse(body, ctype)
        assert e.value.status_code == status and words in str(e.value.detail), (body[:40], e.value.detail)
