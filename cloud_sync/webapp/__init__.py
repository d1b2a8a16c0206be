"""The homeowner web app: static HTML, CSS and JS served by the cloud itself (no CDN, no
build step), talking to the JSON API with the JWT from ``POST /api/v1/auth/token``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"

__all__ = ["STATIC", "mount_webapp"]


def mount_webapp(app: FastAPI) -> None:
    """Serve the app at ``/app/``; ``/`` redirects there."""
    app.mount("/app", StaticFiles(directory=STATIC, html=True), name="webapp")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/app/")
