"""How fast the dashboard's fleet page is ready with 10,000 devices (1,250 nodes x 8), in Debian's chromium.

    .venv/bin/python bench/dashboard_fleet.py [--nodes 1250] [--per-node 8] [--repeat 5] [--json]

Seeds a store with the same fleet as ``tests/test_dashboard_browser.py`` (40 racks, a third of the nodes busy with
jobs of three tenants, drained, lost and unhealthy devices), serves the app on 127.0.0.1, logs in, warms the page
once, then reloads it ``--repeat`` times and prints the time until the page says it is ready (data fetched and
every device drawn). The bar (issue 12): under 2 s. The test checks what is drawn; this script times it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_dashboard_browser import CHROMIUM, Server, _login, _seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1250)
    ap.add_argument("--per-node", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from suanli.api.app import create_app
    from suanli.control.db import sqlite_url
    from suanli.control.service import ensure_admin_token
    from suanli.control.store import Store

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store = Store.open(sqlite_url(tmp / "fleet.db"), sync="off")
        store.ensure_defaults()
        _seed(store, a.nodes, a.per_node)
        tok = ensure_admin_token(store, tmp).read_text().strip()
        srv = Server(create_app(store, data_dir=tmp))
        try:
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                page = b.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True).new_page()
                _login(page, srv.url, tok)
                page.wait_for_selector("body[data-ready='1']", timeout=60000)
                times = []
                for _ in range(a.repeat):
                    t0 = time.perf_counter()
                    page.reload()
                    page.wait_for_selector("body[data-ready='1']", timeout=60000)
                    times.append(time.perf_counter() - t0)
                b.close()
        finally:
            srv.stop()
            store.close()
    out = {"devices": a.nodes * a.per_node, "ready_s_best": round(min(times), 3),
           "ready_s_median": round(statistics.median(times), 3), "ready_s": [round(t, 3) for t in times]}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"fleet page, {out['devices']} devices: ready in best {out['ready_s_best']} s, "
              f"median {out['ready_s_median']} s (runs: {', '.join(f'{t:.2f}' for t in times)}); bar 2 s")


if __name__ == "__main__":
    main()
