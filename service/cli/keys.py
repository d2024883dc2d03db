"""``steno keys create|ls|revoke``: manage API keys straight in PostgreSQL (an operator tool).

``create`` prints the new key alone on the last line of stdout, so a script can take it with
``| tail -1``; nothing else it prints is secret. ``demo`` and ``dev`` use ``local_key`` to
make (or reuse) a key of their own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.auth.keys import authenticate, create_key, list_keys, revoke_key
from service.core.db.engine import make_engine, make_sessionmaker
from service.core.settings import Settings

__all__ = ["create", "list_all", "local_key", "revoke"]


async def _create(settings: Settings, name: str, admin: bool, owner: str | None) -> tuple[str, str]:
    engine = make_engine(settings, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            key, row = await create_key(session, name=name, admin=admin, owner=owner)
            return key, f"{row.prefix} {row.name!r} owner {row.owner}" + (" admin" if admin else "")
    finally:
        await engine.dispose()


def create(settings: Settings, *, name: str, admin: bool, owner: str | None) -> int:
    """Make a key and print it alone on the last line."""
    key, described = asyncio.run(_create(settings, name, admin, owner))
    print(f"steno: created key {described}; it is shown once, below", flush=True)
    print(key, flush=True)
    return 0


def list_all(settings: Settings) -> int:
    """Print every key (prefix, name, owner, role, created, revoked); never a secret."""

    async def rows() -> list[tuple[str, ...]]:
        engine = make_engine(settings, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                return [
                    (
                        k.prefix,
                        k.name,
                        k.owner,
                        "admin" if k.admin else "user",
                        k.created_at.isoformat(timespec="seconds"),
                        k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-",
                    )
                    for k in await list_keys(session)
                ]
        finally:
            await engine.dispose()

    print(f"{'PREFIX':<10}  {'NAME':<20}  {'OWNER':<32}  {'ROLE':<5}  {'CREATED':<25}  REVOKED")
    for prefix, name, owner, role, created, revoked in asyncio.run(rows()):
        print(f"{prefix:<10}  {name:<20}  {owner:<32}  {role:<5}  {created:<25}  {revoked}")
    return 0


def revoke(settings: Settings, ident: str) -> int:
    """Revoke the live keys whose prefix, id or name is ``ident``; 1 when none matched."""

    async def run() -> list[str]:
        engine = make_engine(settings, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return [f"{k.prefix} {k.name!r}" for k in await revoke_key(session, ident)]
        finally:
            await engine.dispose()

    revoked = asyncio.run(run())
    if not revoked:
        print(f"steno: no live key matches {ident!r} (prefix, id or name)")
        return 1
    for described in revoked:
        print(f"steno: revoked key {described}")
    return 0


def local_key(settings: Settings, path: Path) -> str:
    """A key for a local stack: ``STENO_API_KEY`` or the one kept in ``path`` while it is
    still valid, else a new admin key written there (readable by this user only)."""

    async def valid(key: str) -> bool:
        engine = make_engine(settings, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                return await authenticate(session, key) is not None
        finally:
            await engine.dispose()

    for candidate in (settings.api_key, path.read_text().strip() if path.is_file() else ""):
        if candidate and asyncio.run(valid(candidate)):
            return candidate
    key, _ = asyncio.run(_create(settings, "local", True, None))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key
