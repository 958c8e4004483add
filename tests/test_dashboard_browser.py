"""The dashboard in a real browser (Playwright driving Debian's chromium): log in with a token, the fleet, a job
submitted from the CLI appearing and finishing with its logs followed live, an admin draining a node, tenant
isolation (page and API), HTML/JS in user data shown as text, and the fleet page at 10,000 devices (its speed:
``bench/dashboard_fleet.py``).

Screenshots of each page go to ``$SUANLI_SCREENSHOTS`` (default: a pytest temporary folder); the run prints the path.
Without chromium (``/usr/bin/chromium``, or ``$SUANLI_CHROMIUM``) these tests skip, except in CI (``CI`` set), where
they fail: ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from suanli.api.server import Service, open_service

CHROMIUM = os.environ.get("SUANLI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _need_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """An app on a real port (uvicorn in a thread), stopped at the end."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        end = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < end, "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    d = Path(os.environ["SUANLI_SCREENSHOTS"]) if os.environ.get("SUANLI_SCREENSHOTS") else \
        tmp_path_factory.mktemp("screenshots")
    d.mkdir(parents=True, exist_ok=True)
    request.config.stash.setdefault(SHOTS_KEY, set()).add(str(d))
    return d


SHOTS_KEY = pytest.StashKey[set[str]]()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[tuple[Service, Server]]:
    s = open_service(tmp_path_factory.mktemp("dash") / "data", devices="8xBR100", node="n1", tick_s=0.02,
                     retry_base_s=0.05, grace_s=1.0, sample_s=0.2)
    s.controller.start()
    assert s.controller.ready.wait(10)
    srv = Server(s.app)
    yield s, srv
    srv.stop()
    s.controller.stop()
    s.store.close()


def _token(s: Service) -> str:
    return s.admin_token_path.read_text().strip()


def _login(page: Any, url: str, token: str) -> None:
    page.goto(url + "/login")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(url + "/")


def _cli(*args: str) -> str:
    from typer.testing import CliRunner

    from suanli.cli.main import app

    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.output


# the pages' Content-Security-Policy would stop injected scripts anyway: the tests bypass it (and the waits need
# eval), so that what they check is that user data is never interpreted as markup at all
XSS_LOG = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"><b>bold?</b>'


def test_login_fleet_cli_job_appears_finishes_and_logs_follow(live: tuple[Service, Server], browser: Any,
                                                               shots: Path, tmp_path: Path) -> None:
    s, srv = live
    tok = _token(s)
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = ctx.new_page()
    resp = page.goto(srv.url + "/")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    page.wait_for_url("**/login**")  # no token yet: sent to the login page
    page.fill("#token", "sl_wrong")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    _login(page, srv.url, tok)
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#heatmap i.c").count() == 8
    assert "Biren" in page.inner_text("#totals") and "BR100" in page.inner_text("#totals")
    assert page.inner_text("#who") == "admin"
    page.screenshot(path=str(shots / "fleet.png"), full_page=True)

    # a job from the CLI (its log has HTML/JS in it), watched on the jobs page and the job page
    job = tmp_path / "job.yaml"
    job.write_text("name: web-demo\nresources: {accelerators: 2}\ncommand:\n  - sh\n  - -c\n"
                   f"  - |\n    for i in 1 2 3 4 5 6; do echo \"line $i\"; sleep 0.3; done\n    echo '{XSS_LOG}'\n",
                   encoding="utf-8")
    out = _cli("submit", str(job), "--server", srv.url, "--token", tok, "--json")
    jid = int(json.loads(out)["id"])
    page.goto(srv.url + "/ui/jobs")
    page.wait_for_selector(f"#jobs a[href='/ui/jobs/{jid}']")
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)
    page.click(f"#jobs a[href='/ui/jobs/{jid}'] >> nth=0")
    page.wait_for_url(f"**/ui/jobs/{jid}")
    page.wait_for_function("document.querySelector('#logs').textContent.includes('line 2')", timeout=15000)
    assert page.inner_text("#job-state") == "running"  # logs arrive while it runs (followed live)
    page.wait_for_function("document.querySelector('#job-state').textContent === 'succeeded'", timeout=20000)
    page.wait_for_function("document.querySelector('#logs').textContent.includes('bold?')", timeout=10000)
    logs = page.inner_text("#logs")
    assert "line 1" in logs and "line 6" in logs and XSS_LOG in logs  # the markup is shown as text
    assert page.evaluate("window.__xss") is None and page.locator("#logs b").count() == 0
    assert "web-demo" in page.inner_text("#job-name")
    assert page.locator("#attempts tbody tr").count() == 1
    page.screenshot(path=str(shots / "job.png"), full_page=True)

    # a job that waits: the queues page shows why
    h = {"Authorization": f"Bearer {tok}"}
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        hog = c.post("/v1/jobs", json={"name": "hog", "command": ["sleep", "60"], "resources": {"accelerators": 6}},
                     headers=h).json()["id"]
        waiter = c.post("/v1/jobs", json={"name": "waiter", "command": ["true"],
                                          "resources": {"accelerators": 4}}, headers=h).json()["id"]
    page.goto(srv.url + "/ui/queues")
    page.wait_for_function(f"document.querySelector('#waiting').textContent.includes('{waiter}') && "
                           "document.querySelector('#waiting').textContent.includes('needs 4 BR100; 2 free')",
                           timeout=15000)
    assert "capacity" in page.inner_text("#waiting")
    page.screenshot(path=str(shots / "queues-waiting.png"), full_page=True)
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        for j in (waiter, hog):
            c.post(f"/v1/jobs/{j}/cancel", headers=h)

    for name in ("queues", "history", "plan"):
        page.goto(f"{srv.url}/ui/{name}")
        if name == "history":
            page.wait_for_selector("body[data-ready='1']")
            page.wait_for_selector("#chart-alloc canvas")
        if name == "plan":
            page.click("#serve-form button[type=submit]")
            page.wait_for_selector("#plan tbody tr")
            assert "H100" in page.inner_text("#plan")
        if name == "queues":
            page.wait_for_selector("#queues tbody tr")
            assert "default" in page.inner_text("#queues")
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    ctx.close()


def test_admin_drains_a_node_from_the_page(live: tuple[Service, Server], browser: Any, shots: Path) -> None:
    s, srv = live
    ctx = browser.new_context(viewport={"width": 1280, "height": 700}, bypass_csp=True)
    page = ctx.new_page()
    _login(page, srv.url, _token(s))
    page.goto(srv.url + "/ui/nodes")
    page.click("button[data-node='n1']")
    page.wait_for_function("document.querySelector(\"button[data-node='n1']\").textContent === 'undrain'")
    assert s.store.list_nodes()[0]["drained"] is True
    page.screenshot(path=str(shots / "nodes.png"), full_page=True)
    page.goto(srv.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#heatmap i.s-drained").count() + page.locator("#heatmap i.s-busy").count() == 8
    page.goto(srv.url + "/ui/nodes")
    page.click("button[data-node='n1']")
    page.wait_for_function("document.querySelector(\"button[data-node='n1']\").textContent === 'drain'")
    assert s.store.list_nodes()[0]["drained"] is False
    ctx.close()


def test_a_tenant_sees_only_its_own_jobs_page_and_api(live: tuple[Service, Server], browser: Any) -> None:
    s, srv = live
    h = {"Authorization": f"Bearer {_token(s)}"}
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        ta = c.post("/v1/tenants", json={"name": "web-a"}, headers=h).json()["token"]
        tb = c.post("/v1/tenants", json={"name": "web-b"}, headers=h).json()["token"]
        ha, hb = {"Authorization": f"Bearer {ta}"}, {"Authorization": f"Bearer {tb}"}
        jid = c.post("/v1/jobs", json={"name": "secret-a", "command": ["sleep", "20"],
                                       "resources": {"accelerators": 1}}, headers=ha).json()["id"]
        assert c.get(f"/v1/jobs/{jid}", headers=hb).status_code == 404
        assert c.get("/v1/jobs", headers=hb).json()["items"] == []
        end = time.monotonic() + 15
        while c.get(f"/v1/jobs/{jid}", headers=ha).json()["state"] != "running":
            assert time.monotonic() < end
            time.sleep(0.05)
        fleet_b = c.get("/v1/fleet", headers=hb).json()
        assert fleet_b["jobs"] == {} and any(d[2] == "busy" and d[3] == [] for d in fleet_b["nodes"][0]["devices"])
        assert str(jid) in c.get("/v1/fleet", headers=ha).json()["jobs"]
    ctx = browser.new_context(bypass_csp=True)
    page = ctx.new_page()
    _login(page, srv.url, tb)
    page.goto(f"{srv.url}/ui/jobs/{jid}")
    page.wait_for_selector("#job .error")
    assert f"No job {jid}" in page.inner_text("#job .error")
    assert "secret-a" not in page.content()
    page.goto(srv.url + "/ui/jobs")
    page.wait_for_timeout(500)
    assert "secret-a" not in page.inner_text("#jobs")
    page.goto(srv.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.hover("#heatmap i.s-busy >> nth=0")
    assert "another tenant" in page.inner_text("#cell-info") and "secret-a" not in page.content()
    assert page.locator("#nodes button, button[data-node]").count() == 0  # no drain buttons for a tenant
    ctx.close()
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        c.post(f"/v1/jobs/{jid}/cancel", headers=h)


def test_job_names_with_markup_are_refused() -> None:
    from pydantic import ValidationError

    from suanli.workload.spec import JobSpec

    with pytest.raises(ValidationError):
        JobSpec(name="<script>x</script>", command=["true"])


def _seed(store: Any, nodes: int, per_node: int) -> dict[str, int]:
    """A fleet of ``nodes`` x ``per_node`` devices in 40 racks (one node with markup in its name): every third node
    busy with a job of one of three tenants, 20 nodes drained, 5 lost, 15 devices unhealthy. Returns the expected
    device counts by state."""
    from suanli.control.types import DeviceHealth, NodeStatus
    from suanli.workload.spec import JobSpec

    now = time.time()
    names = []
    for i in range(nodes):
        name = f"r{i % 40:02d}-n{i:05d}" if i else '<img src=x onerror="window.__xss=3">'
        names.append(name)
        store.upsert_node({"name": name, "accelerator": "H100", "devices": per_node, "cpu_milli": 96000,
                           "memory_mib": 1 << 20, "domain": f"d{i // 4}", "rack": f"rack-{i % 40:02d}",
                           "declared": True},
                          [{"local_index": k, "model": "H100", "uuid": None, "memory_mib": 81920, "declared": True}
                           for k in range(per_node)], now=now)
    busy = names[1::3]
    tenants = ("nlp", "vision", "speech")
    jobs = store.submit_many([JobSpec(name=f"train-{k}", tenant=tenants[k % 3], command=["true"])
                              for k in range(len(busy))])
    for name, j in zip(busy, jobs, strict=True):
        store.begin_attempt(j["id"], now, {"nodes": [name], "local": [list(range(per_node))], "milli": 1000,
                                           "cpu_milli": [1000], "mem_mib": [1024], "model": "H100"}, name)
    idle = [n for n in names if n not in set(busy)]
    for n in idle[:20]:
        store.set_drained(n, True)
    for n in idle[20:25]:
        store.set_node_status(n, NodeStatus.LOST, "no heartbeat", now)
    for n in idle[25:40]:
        store.set_device_health(n, 3, DeviceHealth.UNHEALTHY, "XID 79", now)
    return {"total": nodes * per_node, "busy": len(busy) * per_node, "drained": 20 * per_node, "lost": 5 * per_node,
            "unhealthy": 15, "free": (len(idle) - 25) * per_node - 15}


def test_fleet_page_with_10000_devices_renders(tmp_path: Path, browser: Any, shots: Path) -> None:
    from suanli.api.app import create_app
    from suanli.control.db import sqlite_url
    from suanli.control.service import ensure_admin_token
    from suanli.control.store import Store

    store = Store.open(sqlite_url(tmp_path / "fleet.db"), sync="off")
    store.ensure_defaults()
    want = _seed(store, 1250, 8)
    total = want["total"]
    tok = ensure_admin_token(store, tmp_path).read_text().strip()
    srv = Server(create_app(store, data_dir=tmp_path))
    try:
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
        page = ctx.new_page()
        _login(page, srv.url, tok)
        page.wait_for_selector("body[data-ready='1']", timeout=30000)  # warm: the first load compiles templates
        times = []
        for _ in range(3):  # the best of three loads: a shared CI machine's noise is not the page's
            t0 = time.perf_counter()
            page.reload()
            page.wait_for_selector("body[data-ready='1']", timeout=30000)
            times.append(time.perf_counter() - t0)
        took = min(times)
        assert page.locator("#heatmap i.c").count() == total
        assert page.locator("#heatmap section.rack").count() == 40
        assert page.evaluate("window.__xss") is None
        # the node named with markup: its name is the node's tooltip, as text (escaped once, not interpreted)
        assert page.get_attribute("#heatmap .node[data-n='0']", "title") == '<img src=x onerror="window.__xss=3">'
        assert page.locator("#heatmap img").count() == 0
        for st in ("busy", "free", "drained", "lost", "unhealthy"):
            assert page.locator(f"#heatmap i.s-{st}").count() == want[st], st
        page.screenshot(path=str(shots / "fleet-10k.png"))
        page.select_option("#colour", "tenant")
        assert page.locator("#legend").inner_text().count("nlp") == 1
        page.screenshot(path=str(shots / "fleet-10k-tenants.png"))
        render_ms = page.evaluate("document.body.dataset.renderMs")
        print(f"fleet page with {total} devices: ready in {', '.join(f'{t:.2f}' for t in times)} s "
              f"(last fetch + render {render_ms} ms)")
        # how fast it is ready (bar: 2 s) is measured by bench/dashboard_fleet.py on a quiet machine, not asserted
        # here: a timed assertion fails on a loaded CI machine for reasons that are not the page's
        assert took < 30.0, f"fleet page with {total} devices took {took:.2f} s"
        ctx.close()
    finally:
        srv.stop()
        store.close()
