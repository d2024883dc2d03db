"""The page at ``/`` in a real headless Chromium (Debian's ``chromium``, driven by Playwright)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from service.core.settings import Settings
from tests.audio import SENTENCES, speak, word_error_rate
from tests.conftest import make_key

if TYPE_CHECKING:
    from playwright.sync_api import Request

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SPOKEN = " ".join(SENTENCES[3:5])
# Well formed, but no such key exists.
WRONG_KEY = "stn_0123456789_" + "A" * 43


@pytest.fixture(scope="module")
def page_key(settings: Settings) -> str:
    """A key (its own owner) that the user types into the page."""
    return make_key(settings, "web-page")


@pytest.fixture
def _keep_screenshot(tmp_path: Path) -> None:
    """Tell where the screenshot is when the test runs with -s."""
    print(f"screenshot: {tmp_path / 'page.png'}")


@pytest.mark.usefixtures("_keep_screenshot")
def test_upload_asks_for_a_key_then_shows_live_progress_segments_and_downloads(
    live_api: str, page_key: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is installed by `just setup` (deploy/bootstrap.sh)"
    clip = speak(SPOKEN, tmp_path / "spoken.ogg")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            requests: list[Request] = []
            page.on("request", lambda request: requests.append(request))

            # Given the page, which asks for an API key before anything else
            page.goto(live_api + "/")
            assert page.title().startswith("Steno")
            expect(page.locator("#key-form")).to_be_visible()
            assert not page.is_visible("#submit")

            # when a wrong key is saved and a clip uploaded
            page.fill("#key", WRONG_KEY)
            page.click("#key-save")
            expect(page.locator("#submit")).to_be_visible()
            page.set_input_files("#file", str(clip))

            # then the server's 401 reason shows, the key is forgotten and the page asks again
            expect(page.locator("#key-message")).to_contain_text("not valid")
            expect(page.locator("#key-form")).to_be_visible()
            assert not page.is_visible("#submit")
            assert page.evaluate("localStorage.getItem('steno.apiKey')") is None

            # when the right key is saved and the page reloaded
            page.fill("#key", page_key)
            page.click("#key-save")
            page.reload()

            # then the page kept the key and does not ask again
            expect(page.locator("#submit")).to_be_visible()
            assert not page.is_visible("#key-form")
            assert page.evaluate("localStorage.getItem('steno.apiKey')") == page_key
            assert page.text_content("#key-prefix") == page_key[:15] + "…"

            # and records every stage and percent it shows
            page.evaluate(
                """() => {
                  window.seen = [];
                  const note = () => window.seen.push(
                    [document.getElementById('stage').textContent,
                     document.getElementById('percent').textContent]);
                  for (const id of ['stage', 'percent']) {
                    new MutationObserver(note).observe(
                      document.getElementById(id), {childList: true, characterData: true,
                                                    subtree: true});
                  }
                }"""
            )

            # when a user picks a spoken clip
            page.set_input_files("#file", str(clip))

            # then the stage and bar move, segments appear, and the job completes at 100 %
            page.wait_for_selector("#status.completed", timeout=180_000)
            assert page.text_content("#percent") == "100 %"
            assert page.get_attribute(".bar", "aria-valuenow") == "100"
            seen = page.evaluate("window.seen")
            stages = {stage for stage, _ in seen}
            assert "transcribing" in stages, seen
            segments = page.locator("#segments li .text").all_inner_texts()
            assert segments
            shown = " ".join(segments)
            assert word_error_rate(SPOKEN, shown) <= 0.25, shown

            # and each format is offered as a fetched blob named after the job
            page.wait_for_selector("#downloads", state="visible", timeout=30_000)
            job_id = page.text_content("#job-id")
            links = page.locator("#downloads a")
            offered = {
                links.nth(i).get_attribute("data-format"): (
                    links.nth(i).get_attribute("href") or "",
                    links.nth(i).get_attribute("download"),
                )
                for i in range(links.count())
            }
            assert set(offered) == {"text", "srt", "vtt", "json", "verbose_json"}
            assert all(href.startswith("blob:") for href, _ in offered.values()), offered
            assert {name for _, name in offered.values()} == {
                f"{job_id}.{ext}" for ext in ("txt", "srt", "vtt", "json", "verbose.json")
            }
            with page.expect_download() as download_info:
                page.click("#downloads a[data-format=srt]")
            assert download_info.value.suggested_filename == f"{job_id}.srt"
            saved = tmp_path / "transcript.srt"
            download_info.value.save_as(saved)
            assert "-->" in saved.read_text()
            text = page.evaluate("href => fetch(href).then(r => r.text())", offered["text"][0])
            assert word_error_rate(SPOKEN, text) <= 0.25, text

            # and the key only ever travelled in the Authorization header, never in a URL
            leaked = [r.url for r in requests if page_key in r.url or WRONG_KEY in r.url]
            assert leaked == []
            streams = [r for r in requests if r.url.endswith(f"/v1/jobs/{job_id}/events")]
            assert streams
            for stream in streams:
                assert stream.all_headers().get("authorization") == f"Bearer {page_key}"

            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            assert (tmp_path / "page.png").stat().st_size > 10_000
            assert errors == []
        finally:
            browser.close()


# A stream with every line ending, comments, an unknown field, a retry, multi-line data, data
# with no space after the colon, an event with no data, and an event the stream cuts off.
STREAM = (
    ": connected\r\nretry: 1500\r\n\r\n"
    'id: 1-0\r\nevent: progress\r\ndata: {"a":\r\ndata:1}\r\nfoo: bar\r\n\r\n'
    ": heartbeat\n\n"
    "id: 2-0\revent: segment\rdata: é\r\rdata\n\n"
    "event: no-data\n\n"
    "id: 3-0\nevent: completed\ndata: cut off"
)


def test_the_page_parses_an_event_stream_however_it_is_split(live_api: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.goto(live_api + "/")

            # Given the page's parser
            # when it is fed the stream whole, a character at a time, and cut at every point
            outcomes = page.evaluate(
                """(text) => {
                  const run = (chunks) => {
                    const events = [], retries = [];
                    const parser = sseParser((e) => events.push(e), (ms) => retries.push(ms));
                    for (const chunk of chunks) parser.feed(chunk);
                    parser.end();
                    return JSON.stringify({events, retries, last: parser.lastEventId});
                  };
                  const outcomes = new Set([run([text]), run([...text])]);
                  for (let i = 1; i < text.length; i++) {
                    outcomes.add(run([text.slice(0, i), text.slice(i)]));
                  }
                  return [...outcomes];
                }""",
                STREAM,
            )
        finally:
            browser.close()

    # then every split gives the same events, as the HTML standard reads them
    assert len(outcomes) == 1, outcomes
    assert json.loads(outcomes[0]) == {
        "events": [
            {"type": "progress", "data": '{"a":\n1}', "id": "1-0"},
            {"type": "segment", "data": "é", "id": "2-0"},
            {"type": "message", "data": "", "id": "2-0"},
        ],
        "retries": [1500],
        "last": "2-0",
    }


# Swaps the page's fetch for a stand-in API that gives `replies` in order (the last one from
# then on), each a stream body, a status, a mid-stream drop or a refused connection, and
# has the page follow job-1 there; window.calls records each request's URL and headers.
FLAKY_API = """(replies) => {
  window.calls = [];
  const bytes = new TextEncoder();
  const body = (text, drop) => {
    let sent = false;
    return new ReadableStream({ pull(stream) {
      if (!sent) { sent = true; stream.enqueue(bytes.encode(text)); }
      else if (drop) stream.error(new TypeError('connection reset'));
      else stream.close();
    } });
  };
  window.fetch = async (url, options) => {
    window.calls.push([url, options.headers['Last-Event-ID'] || null,
                       options.headers.Authorization]);
    const reply = replies[Math.min(window.calls.length, replies.length) - 1];
    if (reply.refuse) throw new TypeError('connection refused');
    return new Response(body(reply.text, reply.drop), { status: reply.status || 200 });
  };
  localStorage.setItem('steno.apiKey', 'stn_0123456789_abc');
  follow('job-1');
}"""


def segment(n: int, text: str) -> str:
    """One ``segment`` event on the wire, with id ``<n>-0``."""
    data = json.dumps({"id": n, "start": 0, "end": 1, "text": text})
    return f"id: {n}-0\nevent: segment\ndata: {data}\n\n"


def test_the_page_resumes_a_dropped_stream_from_the_last_event_it_saw(live_api: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.goto(live_api + "/")

            # Given an API whose stream drops mid-event and then refuses one connection
            # when the page follows a job there
            page.evaluate(
                FLAKY_API,
                [
                    {
                        "text": "retry: 10\n\n" + segment(1, "one") + "id: 2-0\nevent: seg",
                        "drop": True,
                    },
                    {"refuse": True},
                    {"text": segment(2, "two") + "id: 3-0\nevent: cancelled\ndata: {}\n\n"},
                ],
            )

            # then it reconnects with the last event id it got and stops at the terminal event
            expect(page.locator("#status")).to_have_text("cancelled")
            assert page.locator("#segments li .text").all_inner_texts() == ["one", "two"]
            page.wait_for_timeout(200)  # time for a reconnect that must not happen
            events, key = "/v1/jobs/job-1/events", "Bearer stn_0123456789_abc"
            assert page.evaluate("window.calls") == [
                [events, None, key],
                [events, "1-0", key],
                [events, "1-0", key],
            ]
        finally:
            browser.close()


def test_the_page_says_why_it_cannot_follow_a_job(live_api: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.goto(live_api + "/")

            # Given an API that answers 404 for the job
            # when the page follows it
            page.evaluate(
                FLAKY_API,
                [{"status": 404, "text": '{"code": "not_found", "detail": "no job job-1"}'}],
            )
            # then it says so and does not retry
            expect(page.locator("#error")).to_have_text(
                "Cannot follow this job (404): no job job-1"
            )
            page.wait_for_timeout(200)
            assert len(page.evaluate("window.calls")) == 1

            # Given an API that, after one stream, is unreachable
            # when the page follows a job there
            page.evaluate(FLAKY_API, [{"text": "retry: 1\n\n"}, {"refuse": True}])
            # then it gives up after a bounded number of tries, and says so
            expect(page.locator("#error")).to_contain_text("Lost the connection")
            assert len(page.evaluate("window.calls")) == 6
        finally:
            browser.close()
