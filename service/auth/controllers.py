"""``/v1/keys``: operators make, list and revoke API keys over HTTP (admin keys only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.guards import admin_only
from service.auth.keys import create_key, list_keys, revoke_key
from service.core.db.models import ApiKey
from service.core.errors import KeyNotFound

# PostgreSQL text can't hold NUL; a name must not be blank either.
_NO_NUL = r"^[^\x00]*$"
_NOT_BLANK = r"^[^\x00]*[^\x00\s][^\x00]*$"


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/keys``: who the key is for, whether it is an admin, whose jobs it sees."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_NOT_BLANK)]
    admin: bool = False
    owner: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_NUL)] | None = None


class KeyView(msgspec.Struct):
    """A key as operators see it: never its secret."""

    prefix: str
    name: str
    owner: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiKey) -> KeyView:
        """The view of a stored key."""
        return cls(row.prefix, row.name, row.owner, row.admin, row.created_at, row.revoked_at)


class CreatedKey(msgspec.Struct):
    """A new key: ``key`` is shown in this answer only."""

    key: str
    prefix: str
    name: str
    owner: str
    admin: bool


class KeyPage(msgspec.Struct):
    """Every key, newest first."""

    items: list[KeyView]


class KeyController(Controller):
    """API keys (operators only)."""

    path = "/v1/keys"
    tags = ["keys"]  # noqa: RUF012 - declared by Litestar as an instance attribute
    guards = [admin_only]  # noqa: RUF012 - declared by Litestar as an instance attribute

    @post("/", status_code=201, summary="Make an API key (admin)")
    async def create(
        self, data: JSONBody[NewKey], sessions: NamedDependency[async_sessionmaker[AsyncSession]]
    ) -> CreatedKey:
        """A new key; its secret is in this answer and nowhere else."""
        async with sessions() as session, session.begin():
            key, row = await create_key(
                session, name=data.name.strip(), admin=data.admin, owner=data.owner
            )
        return CreatedKey(key, row.prefix, row.name, row.owner, row.admin)

    @get("/", summary="List API keys (admin)")
    async def list(self, sessions: NamedDependency[async_sessionmaker[AsyncSession]]) -> KeyPage:
        """Every key, revoked ones included; never a secret."""
        async with sessions() as session:
            return KeyPage([KeyView.from_row(row) for row in await list_keys(session)])

    @delete("/{prefix:str}", status_code=204, summary="Revoke an API key (admin)")
    async def revoke(
        self, prefix: FromPath[str], sessions: NamedDependency[async_sessionmaker[AsyncSession]]
    ) -> None:
        """Revoke the live key with this prefix; it stops working at once."""
        async with sessions() as session, session.begin():
            revoked = await revoke_key(session, prefix, by_name=False)
        if not revoked:
            raise KeyNotFound(f"no live key with prefix {prefix!r}")
