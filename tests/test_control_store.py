"""The durable store on SQLite and PostgreSQL: migrations, transactions, the state machine, hashed tokens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from suanli.control import db
from suanli.control.pgtest import fresh_database, server_url_for_tests
from suanli.control.store import Conflict, NotFound, Store, hash_token
from suanli.workload.spec import JobSpec
from suanli.workload.states import InvalidTransition, JobState


def pg_url_or_skip() -> str:
    url, why = server_url_for_tests()
    if url is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL tests must run in CI: {why}")
        pytest.skip(why)
    return fresh_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    url = db.sqlite_url(tmp_path / "s.db") if request.param == "sqlite" else pg_url_or_skip()
    s = Store.open(url)
    s.ensure_defaults()
    yield s
    s.close()


def spec(name: str = "j", **kw: object) -> JobSpec:
    return JobSpec.model_validate({"name": name, "command": ["true"], **kw})


def test_migrations_create_every_table_and_are_idempotent(store: Store) -> None:
    names = set(sa.inspect(store.engine).get_table_names())
    assert {"tenants", "tokens", "queues", "nodes", "devices", "jobs", "job_attempts", "job_events",
            "services", "service_replicas", "alembic_version"} <= names
    db.migrate(store.engine)  # at head already: a no-op
    with store.read() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == db.HEAD


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    s = Store.open(db.sqlite_url(tmp_path / "w.db"))
    with s.read() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_submit_stores_job_and_event_in_one_transaction(store: Store) -> None:
    j = store.submit(spec("a", resources={"accelerators": 2, "model": "BR100"}, priority=5))
    assert j["state"] == "pending" and j["id"] >= 1
    got = store.get_job(j["id"])
    assert got["spec"]["resources"]["model"] == ["BR100"] and got["priority"] == 5
    assert [e["kind"] for e in store.events(j["id"])] == ["submitted"]


def test_list_filters_and_keyset_pagination(store: Store) -> None:
    store.create_tenant("nlp")
    store.create_queue("research", 2.0, {"BR100": 8}, True)
    ids = [store.submit(spec(f"j{i}", tenant="nlp" if i % 2 else "default",
                             queue="research" if i % 3 == 0 else "default"))["id"] for i in range(25)]
    page, nxt = store.list_jobs(limit=10)
    assert [j["id"] for j in page] == sorted(ids, reverse=True)[:10] and nxt == page[-1]["id"]
    seen = [j["id"] for j in page]
    while nxt is not None:
        page, nxt = store.list_jobs(limit=10, after=nxt)
        seen += [j["id"] for j in page]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 25
    nlp, _ = store.list_jobs(tenant="nlp", limit=100)
    assert len(nlp) == 12 and all(j["tenant"] == "nlp" for j in nlp)
    res, _ = store.list_jobs(queue="research", limit=100)
    assert len(res) == 9
    assert store.list_jobs(state=["running"])[0] == []


def test_transitions_follow_the_state_machine_and_compare_and_set(store: Store) -> None:
    jid = store.submit(spec())["id"]
    with store.write() as c:
        Store.transition(c, jid, JobState.PENDING, JobState.RUNNING, 1.0, "go")
    with pytest.raises(InvalidTransition), store.write() as c:
        Store.transition(c, jid, JobState.RUNNING, JobState.PENDING, 2.0)
    with pytest.raises(Conflict), store.write() as c:  # the row is not PENDING any more: nothing changes
        Store.transition(c, jid, JobState.PENDING, JobState.CANCELLED, 2.0)
    assert store.get_job(jid)["state"] == "running"
    assert [e["kind"] for e in store.events(jid)] == ["submitted", "running"]


def test_a_failed_transaction_writes_nothing(store: Store) -> None:
    jid = store.submit(spec())["id"]
    with pytest.raises(RuntimeError), store.write() as c:
        Store.transition(c, jid, JobState.PENDING, JobState.RUNNING, 1.0)
        raise RuntimeError("crash inside the transaction")
    assert store.get_job(jid)["state"] == "pending"
    assert [e["kind"] for e in store.events(jid)] == ["submitted"]


def test_tokens_are_stored_hashed_and_scoped(store: Store) -> None:
    _, tok = store.create_tenant("vision")
    admin = store.create_token(admin=True, tenant=None)
    with store.read() as c:
        stored = [r.hash for r in c.execute(sa.select(db.tokens.c.hash)).all()]
    assert tok not in stored and admin not in stored and hash_token(tok) in stored
    p = store.authenticate(tok)
    assert p is not None and not p.admin and p.tenant == "vision"
    assert store.authenticate(admin).admin
    assert store.authenticate("sl_wrong") is None


def test_tenant_sees_only_its_jobs(store: Store) -> None:
    store.create_tenant("a")
    jid = store.submit(spec(tenant="a"))["id"]
    with pytest.raises(NotFound):
        store.get_job(jid, tenant="default")
    with pytest.raises(NotFound):
        store.request_cancel(jid, tenant="default")
    assert store.get_job(jid, tenant="a")["id"] == jid


def test_cancel_request_is_a_flag_for_the_loop_and_refused_when_final(store: Store) -> None:
    jid = store.submit(spec())["id"]
    j = store.request_cancel(jid)
    assert j["cancel_requested"] and j["state"] == "pending"  # the reconcile loop changes the state
    with store.write() as c:
        Store.transition(c, jid, JobState.PENDING, JobState.CANCELLED, 1.0)
    with pytest.raises(Conflict):
        store.request_cancel(jid)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_one_controller_per_database(kind: str, tmp_path: Path) -> None:
    from suanli.control.service import DataDirLocked, open_service

    db = None if kind == "sqlite" else pg_url_or_skip()
    a = open_service(tmp_path / "a", db=db, devices="1xBR100", node="n1", lock=True)
    shared = db or db_url_of(a.store)
    with pytest.raises(DataDirLocked):  # another data directory, the same database
        open_service(tmp_path / "b", db=shared, devices="1xBR100", node="n2", lock=True)
    with pytest.raises(DataDirLocked):  # the same data directory
        open_service(tmp_path / "a", db=db, devices="1xBR100", node="n1", lock=True)


def db_url_of(s: Store) -> str:
    return f"sqlite:///{s.engine.url.database}"


def test_head_constant_matches_the_migrations() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == db.HEAD


def test_without_postgresql_tests_skip_with_a_reason_but_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from suanli.control import pgtest

    monkeypatch.delenv("SUANLI_TEST_PG_URL", raising=False)
    monkeypatch.setattr(pgtest, "_server_url", None)
    monkeypatch.setattr(pgtest, "pg_bin", lambda name: None)
    url, why = pgtest.server_url_for_tests()
    assert url is None and "initdb" in why
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        pg_url_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        pg_url_or_skip()
