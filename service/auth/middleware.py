"""Every ``/v1`` request names its API key in ``Authorization: Bearer``; the rest stay open.

The middleware turns the key into a ``Principal`` (``request.user``) or answers 401
``unauthorized`` with ``WWW-Authenticate``; handlers then only ever see their owner's jobs.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware

from service.auth.keys import authenticate
from service.core.errors import Unauthorized


class BearerKeyAuth(AbstractAuthenticationMiddleware):
    """Resolves ``Authorization: Bearer <key>`` to the key's principal, or refuses."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        """The principal of the request's key; ``Unauthorized`` when there is none."""
        scheme, _, key = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
        async with connection.app.state.sessions() as session:
            principal = await authenticate(session, key.strip())
        if principal is None:
            raise Unauthorized("this API key is not valid (unknown or revoked)")
        return AuthenticationResult(user=principal, auth=key.strip())


def bearer_auth() -> DefineMiddleware:
    """The middleware, for the router that holds every ``/v1`` route."""
    return DefineMiddleware(BearerKeyAuth)
