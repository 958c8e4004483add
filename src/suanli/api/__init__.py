"""The REST API of the control plane (FastAPI; OpenAPI at /docs)."""

from suanli.api.app import create_app

__all__ = ["create_app"]
