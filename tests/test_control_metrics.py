"""/metrics at scale: API latency by route template, store write latency, pending by reason, reconcile lag."""

from __future__ import annotations

import re
import time
from pathlib import Path

from fastapi.testclient import TestClient

from suanli.api.server import open_service


def sample(text: str, name: str, **labels: str) -> float:
    sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}{{{re.escape(sel)}}} (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$",
                  text, re.M)
    assert m, f"{name}{{{sel}}} not in /metrics"
    return float(m.group(1))


def test_metrics_by_route_store_writes_pending_and_lag(tmp_path: Path) -> None:
    svc = open_service(tmp_path / "d", devices="2xBR100", node="n1", tick_s=0.02)
    svc.controller.start()
    try:
        assert svc.controller.ready.wait(10)
        c = TestClient(svc.app)
        h = {"Authorization": f"Bearer {svc.admin_token_path.read_text().strip()}"}
        ids = [c.post("/v1/jobs", json={"name": f"j{i}", "command": ["sleep", "30"],
                                        "resources": {"accelerators": 2}}, headers=h).json()["id"] for i in range(3)]
        for i in ids:
            assert c.get(f"/v1/jobs/{i}", headers=h).status_code == 200
        assert c.get("/v1/jobs/999999", headers=h).status_code == 404
        end = time.monotonic() + 10
        while True:
            text = c.get("/metrics").text
            if sample(text, "suanli_pending_jobs", reason="queued") == 2 or time.monotonic() > end:
                break
            time.sleep(0.05)
        assert sample(text, "suanli_api_request_seconds_count", method="POST", route="/v1/jobs") == 3
        assert sample(text, "suanli_api_request_seconds_count", method="GET", route="/v1/jobs/{job_id}") == 4
        assert "/v1/jobs/999999" not in text  # raw paths never become label values
        assert sample(text, "suanli_store_write_seconds_count") >= 3  # the submissions at least
        assert sample(text, "suanli_pending_jobs", reason="queued") == 2  # one runs, two wait for its devices
        assert sample(text, "suanli_pending_jobs", reason="backoff") == 0
        assert 0 <= sample(text, "suanli_reconcile_lag_seconds") < 5
        assert sample(text, "suanli_reconcile_interval_seconds_count") > 0
        for i in ids:
            c.post(f"/v1/jobs/{i}/cancel", headers=h)
    finally:
        svc.controller.stop()
        svc.store.close()
