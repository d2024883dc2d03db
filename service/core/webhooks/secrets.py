"""Webhook signing secrets: one per API key, sealed at rest, rotated with a grace period.

A secret reads ``whsec_<base64 of 32 random bytes>`` (the Standard Webhooks form). It is
made the first time its key needs one (a submit with a ``webhook_url``, a ``GET`` of the
secret, a delivery). PostgreSQL holds it sealed with Fernet under
``STENO_WEBHOOK_SECRETS_KEY`` (several keys: the first seals, any opens, so that key can be
rotated too); without that setting it is stored as is, marked ``plain:``. Either way no
secret is logged: ``SecretBox`` never shows one, and errors name no secret.

Rotating keeps the replaced secret for ``STENO_WEBHOOK_SECRET_GRACE_SECONDS``; deliveries
in that window carry both signatures, so a receiver can switch at its own pace.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import WebhookSecret
from service.core.settings import Settings

PREFIX = "whsec_"
_SEALED = "fernet:"
_PLAIN = "plain:"


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class SecretBox:
    """Seals secrets for PostgreSQL and opens them again; shows none in its repr."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._fernet = MultiFernet([Fernet(key.encode("ascii")) for key in keys]) if keys else None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box ``STENO_WEBHOOK_SECRETS_KEY`` describes."""
        return cls(settings.webhook_secrets_key)

    @property
    def sealing(self) -> bool:
        """Whether new secrets are stored encrypted."""
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        """The stored form of ``secret``."""
        if self._fernet is None:
            return _PLAIN + secret
        return _SEALED + self._fernet.encrypt(secret.encode("ascii")).decode("ascii")

    def open(self, stored: str) -> str:
        """The secret a stored value holds; raises ``RuntimeError`` (naming no secret) when
        no configured key opens it."""
        if stored.startswith(_PLAIN):
            return stored.removeprefix(_PLAIN)
        if self._fernet is None:
            raise RuntimeError("a webhook secret is sealed but STENO_WEBHOOK_SECRETS_KEY is unset")
        try:
            return self._fernet.decrypt(stored.removeprefix(_SEALED).encode("ascii")).decode()
        except InvalidToken:
            raise RuntimeError(
                "no key in STENO_WEBHOOK_SECRETS_KEY opens a stored webhook secret"
            ) from None

    def __repr__(self) -> str:
        return f"SecretBox(sealing={self.sealing})"


@dataclass(frozen=True, slots=True)
class Rotation:
    """A new secret, and until when the replaced one still signs deliveries."""

    secret: str
    previous_valid_until: datetime


async def current_secret(session: AsyncSession, key_id: uuid.UUID, box: SecretBox) -> str:
    """The key's signing secret, made (in the caller's transaction) on first use."""
    stored = await session.scalar(
        insert(WebhookSecret)
        .values(key_id=key_id, secret=box.seal(new_secret()))
        .on_conflict_do_nothing(index_elements=["key_id"])
        .returning(WebhookSecret.secret)
    )
    if stored is None:
        stored = await session.scalar(
            select(WebhookSecret.secret).where(WebhookSecret.key_id == key_id)
        )
    assert stored is not None  # inserted, or there already
    return box.open(stored)


async def rotate_secret(
    session: AsyncSession, key_id: uuid.UUID, box: SecretBox, *, grace_seconds: float
) -> Rotation:
    """Replace the key's secret; the old one keeps signing for ``grace_seconds``."""
    await current_secret(session, key_id, box)
    secret = new_secret()
    rotated_at = await session.scalar(
        update(WebhookSecret)
        .where(WebhookSecret.key_id == key_id)
        .values(
            previous_secret=WebhookSecret.secret, secret=box.seal(secret), rotated_at=func.now()
        )
        .returning(WebhookSecret.rotated_at)
    )
    assert rotated_at is not None
    return Rotation(secret, rotated_at + timedelta(seconds=grace_seconds))


async def signing_secrets(
    session: AsyncSession, key_id: uuid.UUID, box: SecretBox, *, grace_seconds: float
) -> list[str]:
    """What a delivery is signed with now: the key's secret, then the one it replaced while
    that is within its grace period."""
    current = await current_secret(session, key_id, box)
    previous = await session.scalar(
        select(WebhookSecret.previous_secret).where(
            WebhookSecret.key_id == key_id,
            WebhookSecret.rotated_at > func.now() - timedelta(seconds=grace_seconds),
        )
    )
    return [current] if previous is None else [current, box.open(previous)]
