"""Every ``/v1`` request names its API key in ``Authorization: Bearer``; the rest stay open.

The middleware turns the key into a ``Principal`` (``request.user``) or answers 401
``unauthorized`` with ``WWW-Authenticate``; handlers then only ever see their owner's jobs.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.datastructures import Headers
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware

from service.auth.keys import INVALID_KEY, authenticate_fast
from service.core.errors import Unauthorized


class BearerKeyAuth(AbstractAuthenticationMiddleware):
    """Resolves ``Authorization: Bearer <key>`` to the key's principal, or refuses."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        """The principal of the request's key; ``Unauthorized`` when there is none."""
        key = bearer_key(connection.headers)
        principal = await authenticate_fast(connection.app.state.read_pool, key)
        if principal is None:
            raise Unauthorized(INVALID_KEY)
        return AuthenticationResult(user=principal, auth=key)


def bearer_key(headers: Headers) -> str:
    """The key of ``Authorization: Bearer <key>``; ``Unauthorized`` when there is none."""
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    return key.strip()


def bearer_auth() -> DefineMiddleware:
    """The middleware, for the router that holds every ``/v1`` route."""
    return DefineMiddleware(BearerKeyAuth)
