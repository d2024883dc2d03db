"""The page at ``/`` in a real headless Chromium (Debian's ``chromium``, driven by Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.audio import SENTENCES, speak, word_error_rate

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SPOKEN = " ".join(SENTENCES[3:5])


def test_upload_shows_live_progress_segments_and_downloads(live_api: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is installed by `just setup` (deploy/bootstrap.sh)"
    clip = speak(SPOKEN, tmp_path / "spoken.ogg")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Given the page
            page.goto(live_api + "/")
            assert page.title().startswith("Steno")
            # which records every stage and percent it shows
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

            # and each format can be downloaded
            links = page.locator("#downloads a")
            assert page.is_visible("#downloads")
            formats = {links.nth(i).get_attribute("data-format") for i in range(links.count())}
            assert formats == {"text", "srt", "vtt", "json", "verbose_json"}
            with page.expect_download() as download_info:
                page.click("#downloads a[data-format=srt]")
            saved = tmp_path / "transcript.srt"
            download_info.value.save_as(saved)
            assert "-->" in saved.read_text()
            text = page.request.get(
                live_api + (page.get_attribute("a[data-format=text]", "href") or "")
            )
            assert text.ok and word_error_rate(SPOKEN, text.text()) <= 0.25

            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            assert (tmp_path / "page.png").stat().st_size > 10_000
            assert errors == []
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def _keep_screenshot(tmp_path: Path) -> None:
    """Tell where the screenshot is when the test runs with -s."""
    print(f"screenshot: {tmp_path / 'page.png'}")
