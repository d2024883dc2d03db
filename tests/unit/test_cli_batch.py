"""The multi-source ``steno submit``: where transcripts go, how lines read, JSON options."""

from __future__ import annotations

import io
from pathlib import Path

from service.cli.batch import Board, Entry, output_path
from service.cli.client import json_options


def test_a_transcript_goes_beside_its_file_or_into_the_output_dir(tmp_path: Path) -> None:
    audio = Entry(str(tmp_path / "talks" / "keynote.mp3"), job_id="3f0c1234")
    url = Entry("https://media.example.com/a/b/panel.ogg?sig=x", job_id="77aa0000")

    assert output_path(audio, "text", None) == tmp_path / "talks" / "keynote.txt"
    assert output_path(audio, "srt", tmp_path / "out") == tmp_path / "out" / "keynote.srt"
    assert output_path(url, "verbose_json", tmp_path / "out") == tmp_path / "out" / "panel.json"
    assert output_path(url, "vtt", None) == Path.cwd() / "panel.vtt"


def test_off_a_terminal_a_line_is_printed_per_job_when_it_changes() -> None:
    # given two jobs on a board that writes to a file
    out = io.StringIO()
    entries = [Entry("a.wav", job_id="aaaaaaaa-1", status="queued"), Entry("b.wav")]
    board = Board(entries, out)

    # when it draws twice with one change in between
    board.draw()
    entries[0].status, entries[0].stage, entries[0].percent = "running", "transcribing", 40.0
    board.draw()
    board.draw()

    # then each change is one line, and the total counts how they ended
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[2].startswith("[1/2] a.wav") and "running" in lines[2] and "40.0%" in lines[2]
    entries[0].status, entries[1].status = "completed", "refused"
    assert board.total(1.25) == (
        "steno: 1 of 2 completed, 0 failed, 0 cancelled, 1 refused, in 1.2 s"
    )


def test_flags_become_booleans_in_a_json_body() -> None:
    options = {"word_timestamps": "true", "dedupe": "true", "language": "en"}
    assert json_options(options) == {"word_timestamps": True, "dedupe": True, "language": "en"}
