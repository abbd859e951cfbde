"""The app in a real headless Chromium: ask a question, wait for every system's answer, take a screenshot.

Chromium is Debian's package (installed by tests/browser_setup.sh, which `make test` runs via
`make browser`); the test skips where it cannot be installed.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(REPO / "tests" / "browser_setup.sh")], check=False, timeout=900)
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (tests/browser_setup.sh could not install it)")
    pytest.importorskip("playwright.sync_api")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, chromium, app_lm_dir, tiny_embedder_dir):
    """`streamlit run streamlit_app.py` on localhost over a tiny project (index, adapter, run)."""
    from app_project import build_tiny_project

    base = tmp_path_factory.mktemp("browser")
    lm = app_lm_dir
    project = build_tiny_project(base / "project", lm, tiny_embedder_dir)
    port = _free_port()
    env = dict(os.environ, WORKBENCH_HOME=str(project), WORKBENCH_BASE_MODEL=str(lm),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = open(base / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "streamlit_app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read().strip() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"streamlit did not start:\n{(base / 'streamlit.log').read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _ask(page, question: str) -> None:
    box = page.locator("[data-testid='stChatInput'] textarea")
    box.wait_for(timeout=60_000)
    box.fill(question)
    box.press("Enter")


def _wait_for_answers(page, n: int, timeout_s: float = 180) -> None:
    """Wait until ``n`` answers show their metrics line ("latency ...", the last line a column writes
    under an answer) and the script run has ended (Streamlit's running/stop widget is gone)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        done = page.get_by_text("latency").count()
        if done >= n and page.locator("[data-testid='stStatusWidget']").count() == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"only {page.get_by_text('latency').count()} of {n} answers appeared")


def test_browser_chat_side_by_side_with_sources(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1300})
            page.goto(server, wait_until="domcontentloaded")
            _ask(page, "How do I grease the seals with silicone?")
            _check_page(page, tmp_path)
        finally:
            browser.close()


def _check_page(page, tmp_path) -> None:
    """The answered page: four columns with answers, rag sources, escaped document HTML; a screenshot."""
    from playwright.sync_api import expect

    try:
        _wait_for_answers(page, 4)
        # every system answered in its own column, under its name
        for name in ("base", "rag", "ft", "ft_rag"):
            assert page.get_by_role("heading", name=name, exact=True).count() == 1
        assert page.get_by_text("tokens/s").count() == 4
        # rag columns list their sources (written just after the metrics line); open them so the
        # screenshot shows the passages
        sources = page.get_by_text("Sources (")
        expect(sources).to_have_count(2, timeout=30_000)
        for i in range(sources.count()):
            sources.nth(i).click()
        page.wait_for_timeout(800)
        # document HTML is shown as text, never run or rendered
        assert page.evaluate("window.__pwned") is None
        assert page.get_by_text("<script>", exact=False).count() >= 1
    except AssertionError:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_browser_concurrent_sessions_get_their_own_answers(server):
    """Three browser sessions ask different questions at once; each shows its own question and answers."""
    from playwright.sync_api import sync_playwright

    questions = ["Who leads Kestrelmark Instruments?", "How much does the Tern-3 weigh?",
                 "When must the anode be replaced?"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            pages = [browser.new_context().new_page() for _ in questions]
            for p in pages:
                p.goto(server, wait_until="domcontentloaded")
            for p, q in zip(pages, questions):
                _ask(p, q)
            for p in pages:
                _wait_for_answers(p, 4, timeout_s=240)
            for p, q in zip(pages, questions):
                body = p.inner_text("section[data-testid='stMain']") if p.locator(
                    "section[data-testid='stMain']").count() else p.inner_text("body")
                assert body.count(q) == 4, f"{q!r} not shown once per column"
                for other in questions:
                    if other != q:
                        assert other not in body
        finally:
            browser.close()


def _choose(page, label: str) -> None:
    """Click a radio option by its label (the sidebar's page list or the Inside page's view list)."""
    page.get_by_text(label, exact=True).first.click()


def test_browser_inside_page_draws_a_heatmap_and_a_projection(server, tmp_path):
    """The Inside page: the attention view draws its heatmap (an image), the semantic space its projection
    (a Vega chart drawn in the browser); a screenshot of each."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1300})
            page.goto(server, wait_until="domcontentloaded")
            page.locator("[data-testid='stSidebar']").get_by_text("Inside", exact=True).click()
            expect(page.get_by_role("heading", name="Inside the model")).to_be_visible(timeout=60_000)
            try:
                _choose(page, "Attention")
                heatmap = page.locator("[data-testid='stMain'] [data-testid='stImage'] img")
                expect(heatmap).to_have_count(1, timeout=120_000)
                page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stImage] img')]"
                                       ".every(i => i.complete && i.naturalWidth > 300)", timeout=60_000)
                expect(page.get_by_text("Where the answer's first token looks")).to_be_visible()
                shot = tmp_path / "inside_attention.png"
                page.screenshot(path=str(shot), full_page=True)
                _choose(page, "Semantic space")
                chart = page.locator("[data-testid='stVegaLiteChart']").first
                expect(chart).to_be_visible(timeout=120_000)
                expect(chart.locator("canvas, svg").first).to_be_visible(timeout=60_000)
                expect(page.get_by_text("red diamond: the query", exact=False)).to_be_visible()
                page.wait_for_timeout(1000)  # let Vega finish drawing before the screenshot
            except AssertionError:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                raise
            projection = tmp_path / "inside_space.png"
            page.screenshot(path=str(projection), full_page=True)
            assert shot.stat().st_size > 20_000 and projection.stat().st_size > 20_000
        finally:
            browser.close()
