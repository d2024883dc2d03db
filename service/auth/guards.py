"""Route guards: operator endpoints need an admin key; a plain key gets 403."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.auth.keys import Principal
from service.core.errors import Forbidden


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Let admin keys through; refuse every other key with ``Forbidden``.

    ``OPTIONS`` (which the key middleware lets through without a key, as it does on every
    route) only lists the methods, so it passes too.
    """
    if isinstance(connection, Request) and connection.method == "OPTIONS":
        return
    principal = connection.user
    if not isinstance(principal, Principal) or not principal.admin:
        raise Forbidden("this needs an admin key (steno keys create --admin)")


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The authenticated caller (the middleware guarantees one under ``/v1``)."""
    principal = connection.user
    if not isinstance(principal, Principal):  # pragma: no cover - a route outside /v1
        raise TypeError("no authenticated principal on this connection")
    return principal


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """Dependency provider of ``principal`` for route handlers."""
    return principal_of(request)
