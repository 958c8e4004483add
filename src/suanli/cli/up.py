"""``suanli up``: the controller and the API on this machine, with a SQLite (or PostgreSQL) store."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import typer

from suanli.cli.common import console

DEFAULT_PORT = 8470


def up(
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", min=1, max=65535, help="port of the API on 127.0.0.1"),
    data_dir: Path = typer.Option(Path(".suanli"), "--data-dir", help="database, logs, job directories, token"),
    db: str = typer.Option(None, "--db", help="database URL (default: SQLite in the data directory), "
                           "e.g. postgresql://user:pw@host/suanli"),
    devices: str = typer.Option(None, "--devices", help="declare this node's accelerators by hand, e.g. 8xBR100 "
                                "(default: discover; NVIDIA via NVML; none: a CPU-only node)"),
    policy: str = typer.Option("fifo", "--policy", help="fifo, backfill, sjf, las or fair"),
    node: str = typer.Option(None, "--node", help="this node's name (default: the host name)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    sync: str = typer.Option("normal", "--sync", help="SQLite synchronous level: normal (survives a crash of "
                             "the process) or full (also survives power loss)"),
    keep_jobs: bool = typer.Option(False, "--keep-jobs", help="on Ctrl-C leave running jobs running "
                                   "(the next `suanli up` re-adopts them); default: stop and requeue them"),
    retry_backoff: float = typer.Option(2.0, "--retry-backoff", min=0.0, help="first retry delay in seconds "
                                        "(doubles per failure, at most 300 s)"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn/controller log level"),
) -> None:
    """Start the controller and the REST API on this machine (Ctrl-C stops cleanly)."""
    import uvicorn

    from suanli.control.service import SERVER_FILE, open_service
    from suanli.errors import SuanliError
    from suanli.sched import POLICIES

    if policy not in POLICIES:
        raise SuanliError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if sync not in ("normal", "full", "off"):
        raise SuanliError("--sync: choose normal or full")
    import socket

    with socket.socket() as probe:  # fail before starting anything if the port is taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as e:
            raise SuanliError(f"cannot listen on {host}:{port}: {e.strerror or e} (use --port)") from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        svc = open_service(data_dir, db=db, devices=devices, node=node, policy=policy, sync=sync,
                           keep_jobs_on_stop=keep_jobs, retry_base_s=retry_backoff, lock=True)
    except SuanliError:
        raise
    except Exception as e:  # a database that cannot be reached, a data directory that cannot be written...
        detail = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise SuanliError(f"cannot start: {detail}") from None
    url = f"http://{host}:{port}"
    (svc.data_dir / SERVER_FILE).write_text(json.dumps({"url": url}) + "\n")
    inv = (f"{len(svc.devices)}x {svc.devices[0].model}" + (" (declared)" if svc.devices[0].declared else
                                                            " (discovered)")) if svc.devices else "CPU only"
    store_desc = "PostgreSQL" if db and db.startswith("postgres") else f"SQLite {svc.data_dir / 'suanli.db'}"
    console.print(f"[bold]suanli[/] control plane on [cyan]{url}[/] (OpenAPI: {url}/docs)")
    console.print(f"  node {svc.node}: {inv}; store: {store_desc}; policy {policy}")
    console.print(f"  admin token: {svc.admin_token_path} (the CLI uses it from this directory)")
    console.print("  submit a first job:  suanli submit examples/hello-cpu.yaml && suanli jobs")
    console.print("  Ctrl-C stops" + (" (running jobs keep running)" if keep_jobs else " (running jobs are requeued)"))
    config = uvicorn.Config(svc.app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)

    def start_controller() -> None:  # once the API answers: rebuilding a big scheduler state must not delay it
        end = time.monotonic() + 10
        while not server.started and time.monotonic() < end and not server.should_exit:
            time.sleep(0.01)
        if not server.should_exit:
            svc.controller.start()

    threading.Thread(target=start_controller, name="suanli-controller-start", daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: we have stopped, that is the point
        pass
    finally:
        svc.controller.stop()
        svc.store.close()
        console.print("suanli stopped")
