"""The page end to end: the real `lookalike serve` (uvicorn) driven by headless Chromium through Playwright."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lookalike.demo import make_query

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
TOKEN = "browser-test-token"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install playwright")
pytest.importorskip("uvicorn", reason="the server needs the [server] extra")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(index: Path) -> Iterator[str]:
    """`lookalike serve` on 127.0.0.1 and a free port, with a token; yields its base URL."""
    port = free_port()
    environment = dict(os.environ, LOOKALIKE_TOKEN=TOKEN)
    process = subprocess.Popen(
        [sys.executable, "-m", "lookalike.cli", "serve", "--index", str(index), "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"lookalike serve exited with {process.returncode}: {process.stdout.read()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("lookalike serve did not answer within 120 s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


@pytest.fixture
def server(built_index: Path) -> Iterator[str]:
    with serving(built_index) as base:
        yield base


def wait_for_thumbnails(page: object) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"
    )


def test_upload_then_search_by_a_result(server: str, originals: Path, tmp_path: Path) -> None:
    query = make_query(tmp_path / "queries", "chelsea")  # cropped, colour-shifted, recompressed: never indexed
    expected = next(originals.rglob("chelsea.*")).name
    requested: list[str] = []
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))

            page.goto(f"{server}/?token={TOKEN}")
            sync_api.expect(page.locator("#stats")).to_contain_text("14 images")
            assert "token" not in page.url  # taken into the tab's storage, out of the address bar

            page.set_input_files("#file", str(query))
            cards = page.locator("#grid > li.card")
            sync_api.expect(page.locator("#summary")).to_contain_text("14 results")
            sync_api.expect(cards).to_have_count(14)
            sync_api.expect(cards.first.locator(".name")).to_have_text(expected)
            sync_api.expect(page.locator("#preview-caption")).to_have_text(query.name)
            assert page.locator("#grid").get_attribute("data-query") == f"upload:{query.name}"
            wait_for_thumbnails(page)

            # Why the first hit is a copy: the matched region on the query and the verified matches, drawn.
            why = cards.first.locator("button.why")
            sync_api.expect(why).to_have_attribute("aria-expanded", "false")
            why.click()
            drawing = page.locator("#grid > li.evidence svg")
            sync_api.expect(drawing.locator("rect.region")).to_have_count(1)
            lines = drawing.locator("line.match")
            assert 4 <= lines.count() <= 40
            ends = lines.evaluate_all("ls => ls.map(l => [l.x1, l.x2].map(a => a.baseVal.value))")
            assert all(x1 <= 240 < x2 for x1, x2 in ends)  # each joins a point of the query to one of the hit
            sync_api.expect(page.locator("#grid > li.evidence figcaption")).to_contain_text("verified by")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser.png"), full_page=True)
            why.click()
            sync_api.expect(page.locator("#grid > li.evidence")).to_have_count(0)

            second = cards.nth(1)
            picked_id = second.get_attribute("data-id")
            picked_name = second.locator(".name").inner_text()
            second.locator("button.thumb").click()
            sync_api.expect(page.locator("#grid")).to_have_attribute("data-query", f"id:{picked_id}")
            assert page.url.endswith(f"#id={picked_id}")
            sync_api.expect(cards.first).to_have_attribute("data-id", picked_id)
            sync_api.expect(cards.first.locator(".rank")).to_have_text("query")
            sync_api.expect(cards.first.locator(".score")).to_have_text("1.000")
            sync_api.expect(cards.first.locator(".name")).to_have_text(picked_name)
            sync_api.expect(page.locator("#preview-caption")).to_have_text(f"{picked_name} (#{picked_id})")
            original = cards.first.locator("a.open")
            assert original.get_attribute("href") == f"/api/images/{picked_id}?token={TOKEN}"
            wait_for_thumbnails(page)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(ARTIFACTS / "browser-phone.png"), full_page=True)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
        finally:
            browser.close()
    assert problems == []
    foreign = [url for url in requested if not url.startswith((server, "blob:", "data:"))]
    assert foreign == [], "the page loaded something from elsewhere"
    assert (ARTIFACTS / "browser.png").stat().st_size > 10_000


def test_duplicates_view_steps_through_groups_and_stores_a_decision(tmp_path: Path) -> None:
    from lookalike import Collection
    from test_dedupe import make_photos

    make_photos(tmp_path / "photos")
    with Collection.create(tmp_path / "idx", embedder="colour-layout") as collection:
        collection.add_folder(tmp_path / "photos")
    problems: list[str] = []
    with serving(tmp_path / "idx") as base, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(f"{base}/duplicates?token={TOKEN}")
            groups = page.locator("#dup-groups > li")
            sync_api.expect(groups).to_have_count(2)
            sync_api.expect(page.locator("#dup-summary")).to_have_text("Groups 1–2 of 2")
            sync_api.expect(groups.first.locator("figure.keep")).to_have_count(1)
            page.keyboard.press("j")
            sync_api.expect(groups.nth(1)).to_have_class("dup-group current")
            kept = groups.nth(1).locator("h2").inner_text()
            page.keyboard.press("a")  # keep all: the group is not reported again
            sync_api.expect(groups).to_have_count(1)
            assert groups.first.locator("h2").inner_text().split(" · ")[1] != kept.split(" · ")[1]
        finally:
            browser.close()
    assert problems == []
    with Collection.open(tmp_path / "idx", read_only=True) as collection:
        assert len(collection.duplicates()) == 1
