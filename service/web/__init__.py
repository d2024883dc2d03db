"""The single web page at ``/``: plain HTML and JavaScript, no build step."""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router, get
from litestar.handlers import HTTPRouteHandler
from litestar.static_files import create_static_files_router

HERE = Path(__file__).resolve().parent
# Only what the page loads is served: the package's Python files stay out of reach.
STATIC = HERE / "static"


@get("/", include_in_schema=False, sync_to_thread=False)
def index() -> Response[bytes]:
    """The page: upload or URL, live stage/progress/segments, transcript downloads."""
    return Response((STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8")


def web_routes() -> list[HTTPRouteHandler | Router]:
    """The page and its static files (``/static/...``)."""
    return [index, create_static_files_router(path="/static", directories=[STATIC])]
