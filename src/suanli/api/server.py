"""One machine's control plane with its API: :func:`suanli.control.service.open_service` (store, this node,
controller) plus :func:`suanli.api.app.create_app`. ``control`` does not import ``api``: they meet here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from suanli.api.app import create_app
from suanli.control import service as control_service
from suanli.control.service import Service


def open_service(data_dir: str | Path = ".suanli", *, with_app: bool = True, metrics_token: bool = False,
                 **kw: Any) -> Service:
    """:func:`suanli.control.service.open_service` (same arguments), with the API in ``service.app``. Nothing
    runs yet: call ``service.controller.start()`` and serve ``service.app``."""
    svc = control_service.open_service(data_dir, **kw)
    if with_app:
        svc.app = create_app(svc.store, data_dir=svc.data_dir, controller=svc.controller, metrics=svc.metrics,
                             services=svc.services, metrics_token=metrics_token)
    return svc


__all__ = ["Service", "open_service"]
