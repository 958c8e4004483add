"""Tokens can be revoked and rotated (API, CLI, admin token at start); /metrics can ask for a token; the API
documentation pages load nothing from a CDN (issue 9: 7, 14). On SQLite and PostgreSQL."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from suanli.api.app import create_app
from suanli.api.routers.meta import DOCS_ASSETS
from suanli.cli.main import app as cli_app
from suanli.control.service import Service, ensure_admin_token
from test_api_jobs import admin_h, client, svc  # noqa: F401 (fixtures)
from test_security_api import server  # noqa: F401 (fixture)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def test_tokens_revoke_and_rotate(client: TestClient, svc: Service) -> None:  # noqa: F811
    h = admin_h(svc)
    t1 = client.post("/v1/tenants", json={"name": "team-a"}, headers=h).json()["token"]
    t2 = client.post("/v1/tenants/team-a/tokens", headers=h).json()["token"]
    assert client.get("/v1/jobs", headers=bearer(t1)).status_code == 200  # (and now in the auth cache)
    listed = client.get("/v1/tokens", params={"tenant": "team-a"}, headers=h).json()
    assert [t["label"] for t in listed] == ["created", "api"] and all(t["tenant"] == "team-a" for t in listed)
    assert not any(t1 in str(v) or t2 in str(v) for t in listed for v in t.values())  # never the value
    assert client.get("/v1/tokens", headers=bearer(t1)).status_code == 403  # admin only
    r = client.delete(f"/v1/tokens/{listed[0]['id']}", headers=h)
    assert r.status_code == 200 and r.json()["id"] == listed[0]["id"]
    assert client.get("/v1/jobs", headers=bearer(t1)).status_code == 401  # at once, despite the cache
    assert client.get("/v1/jobs", headers=bearer(t2)).status_code == 200
    assert client.delete(f"/v1/tokens/{listed[0]['id']}", headers=h).status_code == 404
    r = client.post("/v1/tenants/team-a/tokens/rotate", headers=h)
    assert r.status_code == 201
    t3 = r.json()["token"]
    assert client.get("/v1/jobs", headers=bearer(t2)).status_code == 401
    assert client.get("/v1/jobs", headers=bearer(t3)).status_code == 200
    assert client.post("/v1/tenants/nobody/tokens/rotate", headers=h).status_code == 404
    # a holder revokes its own token (it leaked)
    assert client.delete("/v1/tokens/self", headers=bearer(t3)).status_code == 200
    assert client.get("/v1/jobs", headers=bearer(t3)).status_code == 401
    assert client.get("/v1/tokens", params={"tenant": "team-a"}, headers=h).json() == []
    # a revoked token's id is never given to a later token (a stale "revoke ID" cannot hit a new token)
    t4 = client.post("/v1/tenants/team-a/tokens", headers=h).json()["token"]
    newest = client.get("/v1/tokens", params={"tenant": "team-a"}, headers=h).json()[0]
    assert client.delete(f"/v1/tokens/{newest['id']}", headers=h).status_code == 200
    t5 = client.post("/v1/tenants/team-a/tokens", headers=h).json()["token"]
    [again] = client.get("/v1/tokens", params={"tenant": "team-a"}, headers=h).json()
    assert again["id"] > newest["id"]
    assert client.delete(f"/v1/tokens/{newest['id']}", headers=h).status_code == 404
    assert client.get("/v1/jobs", headers=bearer(t4)).status_code == 401
    assert client.get("/v1/jobs", headers=bearer(t5)).status_code == 200


def test_admin_token_rotation_at_start(client: TestClient, svc: Service) -> None:  # noqa: F811
    old = svc.admin_token_path.read_text().strip()
    other = svc.store.create_token(admin=True, tenant=None, label="second admin")
    assert client.get("/v1/tenants", headers=bearer(old)).status_code == 200
    # replacing the file alone does not revoke anything: rotation does
    path = ensure_admin_token(svc.store, svc.data_dir, rotate=True)
    new = path.read_text().strip()
    assert new != old and oct(path.stat().st_mode & 0o777) == "0o600"
    assert client.get("/v1/tenants", headers=bearer(old)).status_code == 401
    assert client.get("/v1/tenants", headers=bearer(other)).status_code == 401
    assert client.get("/v1/tenants", headers=bearer(new)).status_code == 200
    assert ensure_admin_token(svc.store, svc.data_dir).read_text().strip() == new  # kept when not asked


def test_tokens_cli(server: tuple[str, Service]) -> None:  # noqa: F811
    url, s = server
    adm = s.admin_token_path.read_text().strip()
    env = {"SUANLI_SERVER": url, "SUANLI_TOKEN": adm}
    run = CliRunner()
    r = run.invoke(cli_app, ["tenants", "--create", "team-c"], env=env)
    assert r.exit_code == 0, r.output
    tok = re.search(r"sl_\S+", r.output).group()  # type: ignore[union-attr]
    r = run.invoke(cli_app, ["tokens", "--tenant", "team-c", "--json"], env=env)
    assert r.exit_code == 0 and tok not in r.output
    import json

    tid = json.loads(r.output)[0]["id"]
    r = run.invoke(cli_app, ["tokens", "--rotate", "team-c"], env=env)
    assert r.exit_code == 0 and "revoked" in r.output
    new = re.search(r"sl_\S+", r.output).group()  # type: ignore[union-attr]
    r = run.invoke(cli_app, ["jobs"], env={"SUANLI_SERVER": url, "SUANLI_TOKEN": tok})
    assert r.exit_code != 0 and "401" in str(r.exception)
    r = run.invoke(cli_app, ["jobs"], env={"SUANLI_SERVER": url, "SUANLI_TOKEN": new})
    assert r.exit_code == 0, r.output
    new_id = json.loads(run.invoke(cli_app, ["tokens", "--tenant", "team-c", "--json"], env=env).output)[0]["id"]
    assert new_id > tid  # the rotated token's id is never reused for the new one
    r = run.invoke(cli_app, ["tokens", "--revoke", str(new_id)], env=env)
    assert r.exit_code == 0 and f"token {new_id} (team-c" in r.output
    r = run.invoke(cli_app, ["jobs"], env={"SUANLI_SERVER": url, "SUANLI_TOKEN": new})
    assert r.exit_code != 0 and "401" in str(r.exception)
    r = run.invoke(cli_app, ["tokens", "--revoke", str(new_id)], env=env)
    assert r.exit_code != 0 and "404" in str(r.exception)


def test_metrics_token_and_local_docs(svc: Service) -> None:  # noqa: F811
    app = create_app(svc.store, data_dir=svc.data_dir, controller=svc.controller, metrics=svc.metrics,
                     metrics_token=True)
    c = TestClient(app)
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers=bearer("nope")).status_code == 401
    r = c.get("/metrics", headers=admin_h(svc))
    assert r.status_code == 200 and "suanli_jobs" in r.text
    # the default (loopback) stays open
    assert TestClient(svc.app).get("/metrics").status_code == 200
    for page in ("/docs", "/redoc"):
        html = c.get(page).text
        srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert srcs and all(u.startswith(DOCS_ASSETS) or u.startswith("/") for u in srcs), srcs
        assert "cdn." not in html and "jsdelivr" not in html and "unpkg" not in html and "fonts.googleapis" not in html
        for u in srcs:
            if u.startswith(DOCS_ASSETS):
                assert c.get(u).status_code == 200, u
