"""Every route has a typed answer in the OpenAPI schema, and real answers match it (and the store's rows have no
key the response models would silently drop)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from suanli.api import models
from suanli.api.server import Service, open_service
from suanli.workload.spec import JobSpec


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = open_service(tmp_path_factory.mktemp("schema") / "data", devices="4xBR100", node="n1", tick_s=0.02,
                     retry_base_s=0.05, grace_s=1.0)
    s.controller.start()
    assert s.controller.ready.wait(10)
    yield s
    s.controller.stop()
    s.store.close()


@pytest.fixture(scope="module")
def client(svc: Service) -> TestClient:
    return TestClient(svc.app)


@pytest.fixture(scope="module")
def h(svc: Service) -> dict[str, str]:
    return {"Authorization": f"Bearer {svc.admin_token_path.read_text().strip()}"}


def test_every_operation_documents_a_typed_success_answer(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    untyped = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = [r for code, r in op["responses"].items() if code.startswith("2")]
            content = ok[0].get("content", {}) if ok else {}
            schemas = [c.get("schema", {}) for c in content.values()]
            if not schemas or any(s in ({}, {"type": "object"}, {"additionalProperties": True}) for s in schemas):
                untyped.append(f"{method.upper()} {path}")
    assert not untyped, untyped
    # and the ref'd JSON models are real objects with their properties
    assert set(spec["components"]["schemas"]["JobDetail"]["properties"]) >= {"id", "state", "spec", "attempt_list"}
    assert "ErrorOut" in spec["components"]["schemas"]


def _check(spec: dict[str, Any], method: str, path: str, r: Any) -> Any:
    """Validate answer ``r`` of ``method path`` (a templated path) against its documented schema."""
    op = spec["paths"][path][method]
    doc = op["responses"].get(str(r.status_code))
    assert doc is not None, f"{method} {path}: answer {r.status_code} is not documented"
    schema = doc["content"]["application/json"]["schema"]
    body = r.json()
    Draft202012Validator({**schema, "components": spec["components"]}).validate(body)
    return body


def test_real_answers_match_the_documented_schemas(client: TestClient, h: dict[str, str], svc: Service) -> None:
    spec = client.get("/openapi.json").json()
    post, get, patch = "post", "get", "patch"
    job = _check(spec, post, "/v1/jobs", client.post("/v1/jobs", json={"name": "s", "command": ["sh", "-c", "echo hi"]},
                                                      headers=h))
    jid = job["id"]
    end = time.monotonic() + 15
    while client.get(f"/v1/jobs/{jid}", headers=h).json()["state"] != "succeeded" and time.monotonic() < end:
        time.sleep(0.03)
    detail = _check(spec, get, "/v1/jobs/{job_id}", client.get(f"/v1/jobs/{jid}", headers=h))
    assert detail["state"] == "succeeded" and detail["attempt_list"][0]["outcome"] == "succeeded"
    page = _check(spec, get, "/v1/jobs", client.get("/v1/jobs", headers=h))
    assert [j["id"] for j in page["items"]] == [jid] and "spec" not in page["items"][0]  # list items stay short
    events = _check(spec, get, "/v1/jobs/{job_id}/events", client.get(f"/v1/jobs/{jid}/events", headers=h))
    assert events[0]["kind"] == "submitted" and events[-1]["kind"] == "succeeded"
    _check(spec, post, "/v1/jobs/{job_id}/cancel", client.post(f"/v1/jobs/{jid}/cancel", headers=h))  # 409: ended
    _check(spec, get, "/v1/jobs/{job_id}", client.get("/v1/jobs/999", headers=h))  # 404
    _check(spec, get, "/v1/jobs", client.get("/v1/jobs", params={"limit": 0}, headers=h))  # 422 with errors
    _check(spec, get, "/v1/jobs", client.get("/v1/jobs"))  # 401
    _check(spec, get, "/v1/nodes", client.get("/v1/nodes", headers=h))
    _check(spec, get, "/v1/devices", client.get("/v1/devices", headers=h))
    _check(spec, post, "/v1/nodes/{name}/drain", client.post("/v1/nodes/n1/drain", headers=h))
    _check(spec, post, "/v1/nodes/{name}/undrain", client.post("/v1/nodes/n1/undrain", headers=h))
    _check(spec, post, "/v1/queues", client.post("/v1/queues", json={"name": "q1", "quota": {"BR100": 2}}, headers=h))
    _check(spec, patch, "/v1/queues/{name}", client.patch("/v1/queues/q1", json={"weight": 2}, headers=h))
    _check(spec, get, "/v1/queues", client.get("/v1/queues", headers=h))
    t = _check(spec, post, "/v1/tenants", client.post("/v1/tenants", json={"name": "ta"}, headers=h))
    _check(spec, get, "/v1/tenants", client.get("/v1/tenants", headers={"Authorization": f"Bearer {t['token']}"}))
    _check(spec, get, "/v1/tenants", client.get("/v1/tenants", headers=h))
    _check(spec, post, "/v1/tenants/{name}/tokens", client.post("/v1/tenants/ta/tokens", headers=h))
    health = _check(spec, get, "/healthz", client.get("/healthz"))
    assert health["ok"] is True and health["controller"] == "ready"


def test_response_models_keep_every_key_the_store_returns(client: TestClient, h: dict[str, str],
                                                          svc: Service) -> None:
    """A key the store returns but a model lacks would vanish from the API: the models list them all."""
    st = svc.store
    jid = st.submit(JobSpec(name="k", command=["true"]))["id"]
    end = time.monotonic() + 15
    while not st.get_job(jid)["attempt_list"] and time.monotonic() < end:
        time.sleep(0.03)
    j = st.get_job(jid)
    api_only = {"reason_detail"}  # added by the API (the scheduler's sentence for a waiting job)
    assert set(j) | api_only == set(models.JobDetail.model_fields)
    assert set(j["attempt_list"][0]) == set(models.Attempt.model_fields)
    assert set(st.list_jobs()[0][0]) | api_only == set(models.JobSummary.model_fields)
    assert set(st.events(jid)[0]) == set(models.JobEvent.model_fields)
    assert set(st.list_nodes()[0]) == set(models.Node.model_fields)
    assert set(st.list_devices()[0]) == set(models.Device.model_fields)
    assert set(st.list_queues()[0]) == set(models.Queue.model_fields)
    assert set(st.list_tenants()[0]) == set(models.Tenant.model_fields)
    # and the API passes them all through
    assert set(client.get(f"/v1/jobs/{jid}", headers=h).json()) == set(j) | api_only


def test_control_can_be_opened_without_the_api(tmp_path: Path) -> None:
    from suanli.control.service import open_service as open_control

    s = open_control(tmp_path / "d", devices="1xBR100", node="n1")
    try:
        assert s.app is None and s.controller is not None
    finally:
        s.store.close()
