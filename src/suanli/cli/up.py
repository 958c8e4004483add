"""``suanli up``: the controller and the API on this machine, with a SQLite (or PostgreSQL) store."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import typer

from suanli.cli.common import console, err_console

DEFAULT_PORT = 8470


def up(
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", min=1, max=65535, help="port of the API on 127.0.0.1"),
    data_dir: Path = typer.Option(Path(".suanli"), "--data-dir", help="database, logs, job directories, token"),
    db: str = typer.Option(None, "--db", envvar="SUANLI_DB", help="database URL (or env SUANLI_DB, which keeps a "
                           "password out of the command line every user can read; default: SQLite in the data "
                           "directory), e.g. postgresql://user:pw@host/suanli"),
    devices: str = typer.Option(None, "--devices", help="declare this node's accelerators by hand, e.g. 8xBR100 "
                                "(default: discover; NVIDIA via NVML; none: a CPU-only node)"),
    policy: str = typer.Option("fifo", "--policy", help="fifo, backfill, sjf, las, fair, gavel or gavel-events "
                                "(gavel's rounds run in the twin; live it fills free devices by its priorities)"),
    node: str = typer.Option(None, "--node", help="this node's name (default: the host name)"),
    partition: list[str] = typer.Option(None, "--partition", help="a partition this node belongs to (repeatable, "
                                        "or comma-separated); an admin can change it at run time (suanli nodes "
                                        "--update NODE --partition ...), which wins until cleared"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (anything but loopback: use TLS)"),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="serve HTTPS with this certificate (PEM, the chain "
                                  "after the server's own); with --tls-key"),
    tls_key: Path = typer.Option(None, "--tls-key", help="the certificate's private key (PEM)"),
    sync: str = typer.Option("normal", "--sync", help="SQLite synchronous level: normal (survives a crash of "
                             "the process) or full (also survives power loss)"),
    keep_jobs: bool = typer.Option(False, "--keep-jobs", help="on Ctrl-C leave running jobs running "
                                   "(the next `suanli up` re-adopts them); default: stop and requeue them"),
    retry_backoff: float = typer.Option(2.0, "--retry-backoff", min=0.0, help="first retry delay in seconds "
                                        "(doubles per failure, at most 300 s)"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn/controller log level"),
    virtual: str = typer.Option(None, "--virtual", help="a virtual fleet instead of this machine: a cluster file or "
                                "NODESxDEVICESxMODEL (1250x8xBR100; '+' joins pools); jobs run on a virtual clock"),
    speed: float = typer.Option(1.0, "--speed", min=1e-3, max=1e6, help="--virtual: virtual seconds per wall second "
                                "(runtimes, back-offs and timestamps alike)"),
    faults: float = typer.Option(None, "--faults", min=0.0, help="--virtual: random device/node failures per "
                                 "device-hour, the twin's failure model (e.g. 0.0002)"),
    fault_seed: int = typer.Option(0, "--fault-seed", help="--virtual: seed of the random faults"),
    ray: str = typer.Option(None, "--ray", help="cluster mode: run jobs on the nodes of a Ray cluster, 'auto' (the "
                            "cluster this machine belongs to) or HEAD:6379; see README 'Cluster mode'"),
    checkpoint_root: Path = typer.Option(None, "--checkpoint-root", help="directory mounted at the same path on "
                                         "every node; each job's SUANLI_CHECKPOINT_DIR is <root>/<job id>"),
    ray_work_dir: Path = typer.Option(Path("/tmp/suanli-ray"), "--ray-work-dir", help="with --ray: each node's "
                                      "local directory for job work directories, logs and exit files"),
    job_users: str = typer.Option("auto", "--job-users", help="which OS user runs each tenant's jobs: auto (create "
                                  "when running as root, else shared), create (a suanli-<tenant> user each), map "
                                  "(--user-map), shared (this server's user: tenants must trust each other)"),
    user_map: Path = typer.Option(None, "--user-map", help="--job-users map: YAML/JSON file {tenant: OS user}"),
    log_max_bytes: int = typer.Option(256 * 1024 * 1024, "--log-max-bytes", min=0, help="per rank and attempt: "
                                      "rotate a job's log past this size (0: no cap)"),
    log_keep: int = typer.Option(1, "--log-keep", min=0, max=9, help="rotated copies of a job log to keep"),
    rotate_admin_token: bool = typer.Option(False, "--rotate-admin-token", help="revoke every admin token and "
                                            "write a new admin.token before starting"),
    metrics_auth: str = typer.Option(None, "--metrics-auth", help="token (/metrics needs a bearer token) or open; "
                                     "default: open on loopback, token otherwise"),
) -> None:
    """Start the controller and the REST API on this machine (Ctrl-C stops cleanly)."""
    import uvicorn

    from suanli.api.server import open_service
    from suanli.control.service import SERVER_FILE
    from suanli.errors import SuanliError
    from suanli.sched import POLICIES

    if policy not in POLICIES:
        raise SuanliError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if sync not in ("normal", "full", "off"):
        raise SuanliError("--sync: choose normal or full")
    tls = check_tls(tls_cert, tls_key)
    import socket

    with socket.socket() as probe:  # fail before starting anything if the port is taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as e:
            raise SuanliError(f"cannot listen on {host}:{port}: {e.strerror or e} (use --port)") from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from suanli.control.isolation import JobUsers, load_user_map
    from suanli.control.logs import LogPolicy

    if (user_map is not None) != (job_users == "map"):
        raise SuanliError("--user-map goes with --job-users map")
    umap = load_user_map(user_map) if user_map is not None else {}
    node_users: tuple[str, dict[str, str]] | None = None
    if ray is not None:  # the controller runs no job itself: every node's agent applies the rule on its node
        users, node_users = JobUsers("shared"), (job_users, umap)
    else:
        users = JobUsers(job_users, umap)
    if metrics_auth not in (None, "token", "open"):
        raise SuanliError("--metrics-auth: choose token or open")
    metrics_token = (metrics_auth or ("open" if is_loopback(host) else "token")) == "token"
    os.umask(0o077)  # everything this server creates is private to it unless made otherwise
    from suanli.control.controller import limit_malloc_arenas

    limit_malloc_arenas(2)  # before any thread starts: RSS kept growing with jobs processed without it (issue 10)
    try:
        if virtual is not None and devices is not None:
            raise SuanliError("--virtual and --devices exclude each other")
        if virtual is not None and ray is not None:
            raise SuanliError("--virtual and --ray exclude each other")
        svc = open_service(data_dir, db=db, devices=devices, node=node, partitions=partition, policy=policy,
                           sync=sync, keep_jobs_on_stop=keep_jobs, retry_base_s=retry_backoff, lock=True,
                           virtual=virtual,
                           speed=speed, fault_rate=faults, fault_seed=fault_seed, ray=ray,
                           checkpoint_root=checkpoint_root, ray_work_dir=ray_work_dir, job_users=users,
                           node_users=node_users,
                           log_policy=LogPolicy(log_max_bytes, log_keep), rotate_admin_token=rotate_admin_token,
                           metrics_token=metrics_token)
    except SuanliError:
        raise
    except Exception as e:  # a database that cannot be reached, a data directory that cannot be written...
        detail = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise SuanliError(f"cannot start: {detail}") from None
    scheme = "https" if tls else "http"
    url_host = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        url_host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    url = f"{scheme}://{url_host}:{port}"
    server_info: dict[str, str] = {"url": url}
    if tls:
        server_info["ca"] = str(tls[0])  # the local CLI verifies against it (a self-signed certificate)
    (svc.data_dir / SERVER_FILE).write_text(json.dumps(server_info) + "\n")
    inv = (f"{len(svc.devices)}x {svc.devices[0].model}" + (" (declared)" if svc.devices[0].declared else
                                                            " (discovered)")) if svc.devices else "CPU only"
    describe = getattr(svc.executor, "describe", None)
    if callable(describe):
        v = describe()
        inv = (f"VIRTUAL fleet of {v['nodes']} nodes, {v['devices']} devices (names virt-*), clock x{v['speed']:g}"
               + (f", faults {faults:g}/device-hour" if faults else ""))
    store_desc = "PostgreSQL" if db and db.startswith("postgres") else f"SQLite {svc.data_dir / 'suanli.db'}"
    console.print(f"[bold]suanli[/] control plane on [cyan]{url}[/] (OpenAPI: {url}/docs)")
    if ray:
        console.print(f"  Ray cluster {ray}: nodes register as their agents report (suanli nodes); "
                      f"store: {store_desc}; policy {policy}")
        if checkpoint_root is None:
            err_console.print("[bold yellow]warning:[/] no --checkpoint-root: a job's checkpoints stay on the node "
                              "that wrote them and a job moved to another node starts over", highlight=False)
    else:
        console.print(f"  node {svc.node}: {inv}; store: {store_desc}; policy {policy}")
        if virtual is None:
            me = svc.store.get_node(svc.node)
            if me.get("partitions_override") is not None:  # an admin's choice outlives the restart
                console.print(f"  partitions: {','.join(me['partitions'] or []) or 'none'} (set by an admin; "
                              f"`suanli nodes --update {svc.node} --reset-partitions` returns to --partition)")
            elif me.get("partitions"):
                console.print(f"  partitions: {','.join(me['partitions'])}")
    console.print(f"  admin token: {svc.admin_token_path} (the CLI uses it from this directory)")
    console.print("  submit a first job:  suanli submit examples/hello-cpu.yaml && suanli jobs")
    console.print("  Ctrl-C stops" + (" (running jobs keep running)" if keep_jobs else " (running jobs are requeued)"))
    if rotate_admin_token:
        console.print("  admin token rotated: every earlier admin token is revoked")
    if ray is not None:
        console.print(f"  jobs: --job-users {job_users} applied by each node's agent (auto: one OS user per tenant "
                      "where Ray runs as root, else Ray's user; see docs/security.md)")
    elif virtual is None:
        warn = users.warning()
        if warn:
            err_console.print(f"[bold yellow]warning:[/] {warn}", highlight=False)
        else:
            how = "mapped by " + str(user_map) if users.mode == "map" else "suanli-<tenant>, created on first use"
            console.print(f"  jobs run as one OS user per tenant ({how})")
    if not is_loopback(host):
        if tls:
            console.print(f"  listening on {host} (all interfaces reach it) over HTTPS")
        else:
            err_console.print(f"[bold yellow]warning:[/] listening on {host} over plain HTTP: bearer tokens and job "
                              "specs (their env secrets) cross the network in clear text; use --tls-cert/--tls-key "
                              "or a TLS proxy", highlight=False)
    config = uvicorn.Config(svc.app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=3,
                            ssl_certfile=str(tls[0]) if tls else None, ssl_keyfile=str(tls[1]) if tls else None)
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


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_tls(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """Both or neither; both readable, and a certificate and key that go together (checked before starting)."""
    import ssl

    from suanli.errors import SuanliError

    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SuanliError("--tls-cert and --tls-key go together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as e:
        raise SuanliError(f"TLS: no such file: {e.filename}") from None
    except (OSError, ssl.SSLError) as e:
        raise SuanliError(f"TLS: cannot use --tls-cert {cert} with --tls-key {key}: {e}") from None
    return cert.resolve(), key.resolve()
