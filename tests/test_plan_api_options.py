"""The planner's second-round options on /v1/plan: fp4 training, LoRA / full fine-tuning, image tokens; the same
figures as suanli.perf, bad values a 422 naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from suanli.api.app import create_app
from suanli.control import db
from suanli.control.store import Store
from suanli.perf.api import plan_serve, plan_train


@pytest.fixture
def client(tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    store = Store.open(db.sqlite_url(tmp_path / "p.db"))
    store.ensure_defaults()
    tok = store.create_token(admin=False, tenant="default")
    with TestClient(create_app(store)) as c:
        yield c, {"Authorization": f"Bearer {tok}"}
    store.close()


def test_train_fp4_and_lora(client: tuple[TestClient, dict[str, str]]) -> None:
    c, h = client
    q = {"model": "Llama-3.1-70B", "accelerator": "B200", "tokens": "1T"}
    r = c.get("/v1/plan/train", params={**q, "precision": "fp4"}, headers=h)
    assert r.status_code == 200, r.text
    want = plan_train("Llama-3.1-70B", ["B200"], 1e12, precision="fp4")[0].to_dict()
    assert r.json()[0]["precision"] == "fp4" and r.json()[0]["days"] == pytest.approx(want["days"])
    r = c.get("/v1/plan/train", params={**q, "method": "lora", "lora_rank": 64}, headers=h)
    assert r.status_code == 200, r.text
    lora = plan_train("Llama-3.1-70B", ["B200"], 1e12, method="lora", lora_rank=64)[0].to_dict()
    pre = plan_train("Llama-3.1-70B", ["B200"], 1e12)[0].to_dict()
    assert r.json()[0]["chip_hours"] == pytest.approx(lora["chip_hours"])
    assert lora["chip_hours"] != pytest.approx(pre["chip_hours"])  # the option reaches the planner
    r = c.get("/v1/plan/train", params={**q, "method": "qlora"}, headers=h)
    assert r.status_code == 422 and "method" in str(r.json()["detail"])
    r = c.get("/v1/plan/train", params={**q, "lora_rank": 0}, headers=h)
    assert r.status_code == 422 and "lora_rank" in str(r.json()["detail"])


def test_serve_image_tokens(client: tuple[TestClient, dict[str, str]]) -> None:
    c, h = client
    q = {"model": "Qwen2.5-VL-7B", "accelerator": "H100"}
    r = c.get("/v1/plan/serve", params={**q, "image_tokens": "1024"}, headers=h)
    assert r.status_code == 200, r.text
    want = plan_serve("Qwen2.5-VL-7B", ["H100"], image_tokens=1024)[0].to_dict()
    text = plan_serve("Qwen2.5-VL-7B", ["H100"])[0].to_dict()
    assert r.json()[0]["tokens_per_s"] == pytest.approx(want["tokens_per_s"])
    assert want["tokens_per_s"] != pytest.approx(text["tokens_per_s"])
    r = c.get("/v1/plan/serve", params={**q, "image_tokens": "many"}, headers=h)
    assert r.status_code == 422 and "image_tokens" in r.json()["detail"]
