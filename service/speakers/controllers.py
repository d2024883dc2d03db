"""HTTP endpoints of ``/v1/speakers``: enrol, list, read and delete an owner's known speakers."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.keys import Principal
from service.core.errors import PayloadTooLarge, UnsupportedMediaType
from service.core.settings import Settings
from service.speakers import services
from service.speakers.schemas import SpeakerList, SpeakerView

# Room for the form fields beside the clip when refusing a body by its announced length.
_FIELDS_ALLOWANCE = 64 * 1024


class SpeakerController(Controller):
    """Known speakers: a name and a short clip of the voice, used by ``known_speakers``."""

    path = "/v1/speakers"
    tags = ["speakers"]  # noqa: RUF012 - declared by Litestar as an instance attribute

    @post(
        "/",
        status_code=201,
        request_max_body_size=None,
        summary="Enrol a known speaker",
        description=(
            "`multipart/form-data` with `name` (1-64 letters, digits, spaces and `_ - . '`, "
            "not `SPEAKER_<n>`) and `file`: 2 to 60 s of that one voice, in any format an "
            "upload may have. Jobs then name it in `known_speakers`."
        ),
    )
    async def enroll(
        self,
        request: Request[Any, Any, Any],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        settings: NamedDependency[Settings],
        principal: NamedDependency[Principal],
    ) -> Response[SpeakerView]:
        """Store the clip and the speaker; 409 ``speaker_exists`` when the name is taken."""
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
            raise UnsupportedMediaType("send multipart/form-data with 'name' and a 'file' part")
        length = request.content_length
        if length is not None and length > services.MAX_CLIP_BYTES + _FIELDS_ALLOWANCE:
            raise PayloadTooLarge(
                f"a speaker's clip may be at most {services.MAX_CLIP_BYTES} bytes"
            )
        speaker = await services.enroll_speaker(
            sessions, settings, request.stream(), content_type, owner=principal.owner
        )
        return Response(
            SpeakerView.from_row(speaker),
            status_code=201,
            headers={"Location": f"/v1/speakers/{quote(speaker.name)}"},
        )

    @get("/", summary="List known speakers")
    async def list_speakers(
        self,
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        principal: NamedDependency[Principal],
    ) -> SpeakerList:
        """The key owner's speakers, by name."""
        async with sessions() as session:
            speakers = await services.list_speakers(session, owner=principal.owner)
        return SpeakerList(items=[SpeakerView.from_row(s) for s in speakers])

    @get("/{name:str}", summary="Get a known speaker")
    async def get_speaker(
        self,
        name: FromPath[str],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        principal: NamedDependency[Principal],
    ) -> SpeakerView:
        """The owner's speaker; 404 for another owner's exactly as for none."""
        async with sessions() as session:
            speaker = await services.get_speaker(session, name, owner=principal.owner)
        return SpeakerView.from_row(speaker)

    @delete("/{name:str}", status_code=204, summary="Delete a known speaker and its clip")
    async def remove(
        self,
        name: FromPath[str],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        principal: NamedDependency[Principal],
    ) -> None:
        """Delete the owner's speaker, its voice print and its clip."""
        await services.delete_speaker(sessions, name, owner=principal.owner)
