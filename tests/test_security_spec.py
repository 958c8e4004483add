"""Hostile job submissions (issue 9): alias bombs, lone surrogates, arguments the kernel refuses, loose coercion,
names with a trailing newline, messages that do not name the field. Each case is a 4xx naming the field and
nothing is written; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from suanli.control.service import Service
from suanli.errors import SpecError
from suanli.specfile import MAX_NODES, load_bounded, parse_yaml
from suanli.workload.spec import MAX_ARG_STRLEN, JobSpec
from test_api_jobs import admin_h, client, svc  # noqa: F401 (fixtures)

YAML = {"Content-Type": "application/yaml"}


def bomb(levels: int) -> str:
    """The classic: each level is nine aliases of the one before (9**levels strings)."""
    lines = ["name: bomb", "command: [true]", 'a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"env: {{X: *a{levels}}}")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_before_it_is_walked() -> None:
    text = bomb(12)  # 9**12 = 282 billion strings once expanded; ~600 bytes
    assert len(text) < 1000
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="aliases expand to more than"):
        parse_yaml(text, JobSpec, "bomb.yaml")
    assert time.perf_counter() - t0 < 3.0  # expanded, it would take hours; 3 s leaves room for a loaded CI box
    with pytest.raises(SpecError, match="contains it"):
        load_bounded("a: &a [*a]\n")
    # aliases that stay small are fine (merge keys, shared env)
    data, _ = load_bounded("base: &b {x: 1}\nother: {<<: *b, y: 2}\n")
    assert data["other"] == {"x": 1, "y": 2}
    # a document just under the bound is accepted; deep nesting is not a crash
    data, _ = load_bounded("a: &a [" + ", ".join(["1"] * (MAX_NODES // 2 - 10)) + "]\nb: *a\n")
    assert len(data["b"]) == MAX_NODES // 2 - 10
    with pytest.raises(SpecError):
        load_bounded("[" * 100_000)


def test_alias_bomb_over_http_is_a_4xx_and_the_api_stays_responsive(client: TestClient, svc: Service) -> None:  # noqa: F811
    h = admin_h(svc)
    done: dict[str, Any] = {}

    def post() -> None:
        done["r"] = client.post("/v1/jobs", content=bomb(12), headers={**h, **YAML})

    th = threading.Thread(target=post, daemon=True)  # on a server without the bound it would never end
    t0 = time.perf_counter()
    th.start()
    assert client.get("/healthz").status_code == 200
    th.join(10)
    assert not th.is_alive() and time.perf_counter() - t0 < 5
    r = done["r"]
    assert r.status_code == 422 and "aliases" in r.json()["detail"], r.text
    assert client.get("/v1/jobs", headers=h).json()["items"] == []


@pytest.mark.parametrize(("body", "fragment"), [
    # lone surrogates (JSON "\ud800"): 422 naming the field, never stored
    ({"name": "x", "command": ["echo", "\ud800"]}, "body.command[1]: lone surrogate"),
    ({"name": "x", "command": ["true"], "env": {"A": "x\udfff"}}, "body.env.A: lone surrogate"),
    ({"name": "x", "command": ["true"], "llm": "\ud800"}, "body.llm: lone surrogate"),
    ({"name": "x", "command": "echo \ud800"}, "body.command: lone surrogate"),
    ({"name": "x", "command": ["true"], "\ud800": 1}, "unicode string"),
    ({"name": "x", "command": ["true"], "resources": {"model": "\ud800"}}, "body.resources.model"),
    # the kernel refuses arguments and environment strings over MAX_ARG_STRLEN: refuse them at submit
    ({"name": "x", "command": ["echo", "a" * MAX_ARG_STRLEN]}, "body.command[1]: 131072 bytes: over the kernel"),
    ({"name": "x", "command": ["true"], "env": {"BIG": "b" * (MAX_ARG_STRLEN - 4)}}, "body.env: BIG: NAME=value"),
    ({"name": "x", "command": [""]}, "body.command: the program (the first item) must not be empty"),
    ({"name": "x", "command": ""}, "body.command: a job needs a command"),
    # strict where a typo should be an error
    ({"name": "x", "command": ["true"], "resources": {"memory": True}}, "body.resources.memory: must be a size"),
    ({"name": "x", "command": ["true"], "gang": "yes"}, "body.gang: Input should be a valid boolean"),
    ({"name": "x", "command": ["true"], "preemptible": "no"}, "body.preemptible"),
    ({"name": "x", "command": ["true"], "priority": True}, "body.priority"),
    ({"name": "x", "command": ["true"], "resources": {"accelerators": True}}, "body.resources.accelerators"),
    ({"name": "x", "command": ["true"], "resources": {"cpu": "4"}}, "body.resources.cpu"),
    ({"name": "x", "command": ["true"], "env": {"A": {"b": 1}}}, "body.env.A: must be a string or a number, not a "
                                                                "mapping"),
    ({"name": "x", "command": ["true"], "env": {"A": [1]}}, "body.env.A: must be a string or a number, not a list"),
    # names: "$" matched before a final newline
    ({"name": "x\n", "command": ["true"]}, "body.name"),
    ({"name": "x", "command": ["true"], "env": {"A\n": "1"}}, "invalid environment variable name"),
    # messages that name the field (and say what is wrong) for huge and non-finite numbers
    ({"name": "x", "command": ["true"], "resources": {"memory": 1e308}}, "body.resources.memory: too large"),
    ({"name": "x", "command": ["true"], "resources": {"cpu": 1e308}}, "body.resources.cpu: Input should be less"),
    ({"name": "x", "command": ["true"], "expected_runtime": 1e400}, "body.expected_runtime: duration must be a finite"),
    ({"name": "x", "command": ["true"], "termination_grace": "2h"}, "body.termination_grace: at most 3600 s"),
])
def test_hostile_json_is_422_naming_the_field_and_nothing_is_written(client: TestClient, svc: Service,  # noqa: F811
                                                                     body: Any, fragment: str) -> None:
    import json

    h = admin_h(svc)
    raw = json.dumps(body, ensure_ascii=True).replace("Infinity", "1e400")
    r = client.post("/v1/jobs", content=raw.encode(), headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"], r.json()["detail"]
    assert client.get("/v1/jobs", headers=h).json()["items"] == []


@pytest.mark.parametrize(("raw", "fragment"), [
    ('{"name": "x", "command": ["true"], "resources": {"cpu": NaN}}', "body.resources.cpu: Input should be a finite"),
    ('{"name": "x", "command": ["true"], "resources": {"accelerators": NaN}}', "body.resources.accelerators"),
    ('{"name": "x", "command": ["true"], "resources": {"memory": Infinity}}', "body.resources.memory: must be a fin"),
    ('{"name": "x", "command": ["true"], "expected_runtime": NaN}', "body.expected_runtime: duration must be"),
])
def test_non_finite_numbers_name_the_field(client: TestClient, svc: Service, raw: str, fragment: str) -> None:  # noqa: F811
    h = admin_h(svc)
    r = client.post("/v1/jobs", content=raw.encode(), headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 422 and fragment in r.json()["detail"], r.text
    assert "less than or equal" not in r.json()["detail"]


@pytest.mark.parametrize(("text", "fragment"), [
    ('name: x\ncommand: [true]\nenv: {A: "\\ud800"}\n', "body:3: env.A: lone surrogate"),
    ("name: x\ncommand: [true]\nresources: {memory: true}\n", "body:3: resources.memory: must be a size"),
    ('name: x\ncommand: [true]\ngang: "yes"\n', "body:3: gang"),
    ("name: x\ncommand: [true]\nenv:\n  A: {b: 1}\n", "body:4: env.A: must be a string or a number"),
    ("name: x\ncommand: ['']\n", "body:2: command: the program"),
    ("name: x\ncommand: [true]\nresources: {memory: .inf}\n", "body:3: resources.memory: must be a finite"),
    ('name: "x\\n"\ncommand: [true]\n', "body:1: name"),
])
def test_hostile_yaml_is_422_with_line_and_field(client: TestClient, svc: Service, text: str,  # noqa: F811
                                                 fragment: str) -> None:
    h = admin_h(svc)
    r = client.post("/v1/jobs", content=text.encode(), headers={**h, **YAML})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"], r.json()["detail"]
    assert client.get("/v1/jobs", headers=h).json()["items"] == []


def test_other_content_types_are_415(client: TestClient, svc: Service) -> None:  # noqa: F811
    h = admin_h(svc)
    body = b'{"name": "x", "command": ["true"]}'
    for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = client.post("/v1/jobs", content=body, headers={**h, "Content-Type": ct})
        assert r.status_code == 415 and "application/json" in r.json()["detail"], (ct, r.text)
    assert client.get("/v1/jobs", headers=h).json()["items"] == []
    r = client.post("/v1/jobs", content=body, headers={**h, "Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201


def test_valid_specs_still_accepted() -> None:
    s = JobSpec.model_validate({"name": "ok", "command": ["echo", "é" * 1000], "env": {"N": 3, "F": 1.5, "B": True,
                                                                                      "E": None},
                                "resources": {"accelerators": 2, "cpu": 4, "memory": "16Gi"}, "gang": False,
                                "termination_grace": "30s"})
    assert s.env == {"N": "3", "F": "1.5", "B": "true", "E": ""}
    assert s.termination_grace == 30.0 and s.resources.cpu == 4.0
    s = parse_yaml("name: ok\ncommand: python train.py --lr 3e-4\ngang: yes\nenv: {EPOCHS: 3}\n", JobSpec)
    assert s.command == ["python", "train.py", "--lr", "3e-4"] and s.gang is True and s.env == {"EPOCHS": "3"}
    with pytest.raises(SpecError, match=r"x.yaml:1: name"):
        parse_yaml("name: 'a\\n'\n", JobSpec, "x.yaml")
