"""Reading a ``text/event-stream`` line by line: the ``steno`` CLI's (and the tests') parser."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """One Server-Sent Event (``comment`` for a comment line such as the heartbeat)."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    comment: str | None = None


class MessageParser:
    """Feed lines (without their line ending); complete messages come out, per the spec."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> Iterator[Message]:
        """The messages (and comments) that ``line`` completes."""
        if line == "":
            if self._data or self._event:
                yield Message(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            yield Message(event="", comment=line[1:].strip())
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
