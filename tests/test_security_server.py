"""`suanli up` on the network (issue 9): a warning for plain HTTP on anything but loopback, HTTPS with
--tls-cert/--tls-key (the local CLI verifies the certificate it was given)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from suanli.cli.up import check_tls, is_loopback
from suanli.errors import SuanliError
from test_control_cli import cli

# jobs run as the test's own user here (as root, `suanli up` would create per-tenant users: test_security_isolation)
UP = [sys.executable, "-m", "suanli.cli.main", "up", "--job-users", "shared"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_up(cwd: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    p = subprocess.Popen([*UP, "--port", str(port), "--devices", "1xBR100",
                          *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return p, port


def wait_ready(p: subprocess.Popen[bytes], url: str, verify: object = True) -> None:
    end = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1, verify=verify).status_code == 200:  # type: ignore[arg-type]
                return
        except httpx.HTTPError:
            pass
        assert p.poll() is None and time.monotonic() < end, p.stdout.read().decode() if p.stdout else ""
        time.sleep(0.05)


def stop(p: subprocess.Popen[bytes]) -> str:
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=30)[0].decode()
    assert p.returncode == 0, out
    return out


def self_signed(d: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


def test_loopback_and_tls_option_checks(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    assert check_tls(None, None) is None
    with pytest.raises(SuanliError, match="go together"):
        check_tls(tmp_path / "c.pem", None)
    with pytest.raises(SuanliError, match="no such file"):
        check_tls(tmp_path / "c.pem", tmp_path / "k.pem")
    cert, key = self_signed(tmp_path)
    with pytest.raises(SuanliError, match="cannot use"):
        check_tls(key, cert)  # swapped
    assert check_tls(cert, key) == (cert.resolve(), key.resolve())


def test_plain_http_on_all_interfaces_warns(tmp_path: Path) -> None:
    p, port = start_up(tmp_path, "--host", "0.0.0.0")
    wait_ready(p, f"http://127.0.0.1:{port}")
    out = stop(p)
    assert "warning:" in out and "plain HTTP" in out and "--tls-cert" in out, out
    assert "tenants must trust each other" in " ".join(out.split())  # --job-users shared: said at start
    p, port = start_up(tmp_path)  # loopback: no warning
    wait_ready(p, f"http://127.0.0.1:{port}")
    assert "plain HTTP" not in stop(p)


def test_https_with_tls_cert_and_key(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    p, port = start_up(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        url = f"https://127.0.0.1:{port}"
        ctx = ssl.create_default_context(cafile=str(cert))
        wait_ready(p, url, verify=ctx)
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        with pytest.raises(httpx.HTTPError):  # and an unknown certificate is refused by a verifying client
            httpx.get(url + "/healthz", timeout=2)
        info = json.loads((tmp_path / ".suanli" / "server.json").read_text())
        assert info == {"url": url, "ca": str(cert.resolve())}
        code, out = cli(tmp_path, "jobs", "--json")  # the local CLI: URL and certificate from server.json
        assert code == 0 and json.loads(out)["items"] == [], out
    finally:
        out = stop(p)
    assert "plain HTTP" not in out and f"control plane on {url}" in out
