"""API keys: making, storing (a hash only), listing, revoking and checking them.

A key reads ``stn_<prefix>_<secret>``: the prefix (10 hex digits) finds the row, the secret
(256 random bits) proves possession; PostgreSQL keeps only the SHA-256 of the whole key.
Revocation is a column on the row every request reads, so it takes effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import ApiKey

SCHEME = "stn"
# Compared against when a prefix is unknown, so a miss costs what a wrong secret costs.
_NO_KEY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a valid key: whose jobs it sees and whether it may operate Steno."""

    key_id: uuid.UUID
    prefix: str
    name: str
    owner: str
    admin: bool


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    scheme, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or len(prefix) != 10 or not secret:
        return None
    try:
        int(prefix, 16)
    except ValueError:
        return None
    return prefix


async def create_key(
    session: AsyncSession, *, name: str, admin: bool = False, owner: str | None = None
) -> tuple[str, ApiKey]:
    """A new key and its row (in the caller's transaction); the key is shown only now.

    Without ``owner`` the key is the first of a new owner; with it, the key sees that
    owner's jobs (to rotate a key without losing them).
    """
    key_id = uuid.uuid4()
    prefix = secrets.token_hex(5)
    key = f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        id=key_id,
        prefix=prefix,
        key_hash=hash_key(key),
        name=name,
        owner=owner or key_id.hex,
        admin=admin,
    )
    session.add(row)
    await session.flush()
    return key, row


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, newest first (revoked ones too, marked)."""
    return list((await session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc()))).all())


async def revoke_key(session: AsyncSession, ident: str, *, by_name: bool = True) -> list[ApiKey]:
    """Revoke the live keys whose prefix, id or (``by_name``) name is ``ident``; returns them."""
    match = [ApiKey.prefix == ident]
    if by_name:
        match.append(ApiKey.name == ident)
    try:
        match.append(ApiKey.id == uuid.UUID(ident))
    except ValueError:
        pass
    rows = await session.scalars(
        update(ApiKey)
        .where(or_(*match), ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey)
    )
    return list(rows.all())


async def authenticate(session: AsyncSession, key: str) -> Principal | None:
    """The principal of a live key, or None for a malformed, unknown or revoked one.

    The CLI's check (in a session); requests use ``authenticate_fast``. Both end in
    ``check_key``, so the comparison is written once.
    """
    prefix = key_prefix(key)
    row = None
    if prefix is not None:
        row = (
            await session.execute(
                select(
                    ApiKey.id,
                    ApiKey.prefix,
                    ApiKey.name,
                    ApiKey.owner,
                    ApiKey.admin,
                    ApiKey.key_hash,
                ).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
            )
        ).first()
    return check_key(row, key)


INVALID_KEY = "this API key is not valid (unknown or revoked)"

# The live key of a prefix, read by every request (its columns first, in this order, in any
# query that checks a key along the way: see ``check_key``).
KEY_COLUMNS = "k.id, k.prefix, k.name, k.owner, k.admin, k.key_hash"
_LIVE_KEY = f"SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.prefix = $1 AND k.revoked_at IS NULL"


def check_key(row: Any, key: str) -> Principal | None:
    """The principal of ``key`` given its live row (``KEY_COLUMNS`` first) or None for none.

    Costs the same hash compare whether or not a row was found.
    """
    stored = row[5] if row is not None else _NO_KEY_HASH
    if not hmac.compare_digest(stored, hash_key(key)) or row is None:
        return None
    return Principal(row[0], row[1], row[2], row[3], row[4])


async def authenticate_fast(pool: asyncpg.Pool, key: str) -> Principal | None:
    """``authenticate`` as one plain query on the read pool (no ORM session or transaction).

    The row is read on every request, so a revocation takes effect at once.
    """
    prefix = key_prefix(key)
    row = await pool.fetchrow(_LIVE_KEY, prefix) if prefix is not None else None
    return check_key(row, key)
