"""Event positions, the event schema and the SSE line parser."""

from __future__ import annotations

import json

import msgspec
import pytest

from service.cli.sse import Message, MessageParser
from service.core.events import schemas as events
from service.core.events.stream import Frame, Position


def test_positions_parse_and_order_like_redis_stream_ids() -> None:
    assert Position.parse("1700000000000-3") == Position(1700000000000, 3)
    assert Position.parse(b"1700000000000-3") == Position(1700000000000, 3)
    assert Position.parse("1700000000000") == Position(1700000000000, 0)
    assert Position(5, 10) > Position(5, 9) > Position(4, 99)
    assert str(Position(5, 10).next()) == "5-11"
    # Only what the API sends is read back: no signs, underscores, spaces or non-ASCII digits,
    # nor numbers past PostgreSQL's bigint, where positions are stored.
    junk = ("", "abc", "1-x", "-1-2", "1--2", "+1", "1_000", " 1", "1-2\n", "\u0661", "9" * 19)
    for text in junk:
        with pytest.raises(ValueError):
            Position.parse(text)


def test_an_event_round_trips_with_its_kind_tag() -> None:
    event = events.Progress(
        job_id="j", stage="transcribing", percent=42.0, audio_seconds_done=4.2, audio_seconds=10.0
    )
    data = json.loads(events.encode_event(event))
    assert data["kind"] == "progress" and data["percent"] == 42.0 and "at" in data
    assert msgspec.json.decode(events.encode_event(event), type=events.Event) == event
    assert events.event_kind(events.Failed(job_id="j", code="c", detail="d")) == "failed"
    assert events.TERMINAL == {"completed", "failed", "cancelled"}


def test_a_frame_is_one_sse_message() -> None:
    frame = Frame(Position(7, 1), "segment", b'{"text":"hi"}')
    assert frame.sse == b'id: 7-1\nevent: segment\ndata: {"text":"hi"}\n\n'
    assert not frame.terminal and Frame(Position(7, 2), "failed", b"{}").terminal


def test_the_parser_yields_messages_comments_and_keeps_the_last_id() -> None:
    parser = MessageParser()
    lines = [
        "retry: 2000",
        ": connected",
        "",
        "id: 1-0",
        "event: queued",
        'data: {"a":1}',
        "",
        ": heartbeat",
        "event: progress",
        "data: x",
        "data: y",
        "",
    ]
    out = [message for line in lines for message in parser.feed(line)]
    assert out == [
        Message(event="", comment="connected"),
        Message("queued", '{"a":1}', "1-0"),
        Message(event="", comment="heartbeat"),
        Message("progress", "x\ny", "1-0"),
    ]
