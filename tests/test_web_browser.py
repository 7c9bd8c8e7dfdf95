"""The how-old page in a real browser: Debian's chromium driven by Playwright.

Needs `apt-get install chromium` and `pip install playwright` (never `playwright install`:
the system chromium is used). Skipped when either is missing. Screenshots go to artifacts/.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
httpx = pytest.importorskip("httpx")

try:
    from test_web import acquire_server, astronaut_jpeg, stop_shared_servers  # noqa: F401  (fixture)
except ImportError:  # run from the repository root as a package
    from tests.test_web import acquire_server, astronaut_jpeg, stop_shared_servers  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server():
    return acquire_server()  # the one test_web.py started, if it ran first


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(browser, server):
    pages = []

    def open_(width: int, height: int):
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.problems = []
        page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))
        page.on("console", lambda message: message.type == "error" and page.problems.append(f"console: {message.text}"))
        page.goto(server.url + "/")
        pages.append((context, page))
        return page

    yield open_
    for context, _ in pages:
        context.close()


def _check_png(path: Path, width: int) -> None:
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size[0] == width and image.size[1] > 100


@pytest.mark.parametrize("width, height", [(1280, 900), (375, 700)])
def test_page_draws_a_box_and_a_row_per_face(open_page, server, width, height):
    api = httpx.post(server.url + "/api/analyze", content=astronaut_jpeg(), headers={"content-type": "image/jpeg"}, timeout=60)
    expected = len(api.json()["faces"])
    assert expected >= 1

    page = open_page(width, height)
    page.set_input_files("#file-input", files=[{"name": "astronaut.jpg", "mimeType": "image/jpeg", "buffer": astronaut_jpeg()}])
    page.wait_for_selector("#photo[data-faces]", timeout=60_000)

    assert page.get_attribute("#photo", "data-faces") == str(expected)
    rows = page.locator("#results tbody tr")
    assert rows.count() == expected
    first = api.json()["faces"][0]
    assert rows.nth(0).locator('[data-field="gender"]').inner_text().startswith(first["gender"])
    assert rows.nth(0).locator('[data-field="race"]').inner_text().startswith(first["race"])
    assert page.locator("#error").is_hidden()
    assert page.get_attribute("body", "data-state") == "done"
    # the canvas holds the photo at its own size, and something was drawn on it
    canvas = page.evaluate(
        """() => {
            const c = document.getElementById('photo');
            const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let min = 255, max = 0;
            for (let i = 0; i < pixels.length; i += 4 * 97) { min = Math.min(min, pixels[i]); max = Math.max(max, pixels[i]); }
            const box = c.getBoundingClientRect();
            return {width: c.width, height: c.height, shown: box.width, spread: max - min};
        }"""
    )
    assert (canvas["width"], canvas["height"]) == (512, 512)
    assert canvas["spread"] > 100
    assert 0 < canvas["shown"] <= width
    # nothing sticks out sideways, not even at 375 px
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.problems == []

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"web_page_{width}x{height}.png"
    page.screenshot(path=str(shot), full_page=True)
    _check_png(shot, width)


@pytest.mark.parametrize("width, height", [(1280, 900), (390, 844)])
def test_page_offers_the_models_and_reads_with_the_chosen_one(open_page, server, width, height):
    api = httpx.post(server.url + "/api/analyze", params={"model": "dlib-resnet"}, content=astronaut_jpeg(), headers={"content-type": "image/jpeg"}, timeout=120)
    assert api.status_code == 200, api.text

    page = open_page(width, height)
    page.wait_for_selector("#model[data-loaded]", timeout=30_000)
    options = page.eval_on_selector_all("#model option", "options => options.map(o => [o.value, o.selected, o.textContent])")
    assert {"dlib-resnet-keras-finetuned", "dlib-resnet"} <= {value for value, _, _ in options}
    assert [value for value, selected, _ in options if selected] == ["dlib-resnet-keras-finetuned"]
    assert all("gender" in text and "age" in text for _, _, text in options)  # each with its figures

    page.select_option("#model", "dlib-resnet")
    with page.expect_request(lambda request: "/api/analyze" in request.url) as sent:
        page.set_input_files("#file-input", files=[{"name": "astronaut.jpg", "mimeType": "image/jpeg", "buffer": astronaut_jpeg()}])
    assert "model=dlib-resnet" in sent.value.url
    page.wait_for_selector("#photo[data-faces]", timeout=60_000)
    assert page.get_attribute("#model-used", "data-model") == "dlib-resnet"
    assert "dlib-resnet" in page.inner_text("#model-used")
    first = api.json()["faces"][0]
    assert page.locator("#results tbody tr").nth(0).locator('[data-field="age"]').inner_text().startswith(str(int(first["age"] + 0.5)))  # Math.round
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.problems == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"web_page_model_{width}x{height}.png"), full_page=True)


def test_page_shows_the_api_error(open_page):
    page = open_page(375, 700)
    page.set_input_files("#file-input", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}])
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "not an image" in page.inner_text("#error")
    assert page.get_attribute("body", "data-state") == "error"
    assert page.get_attribute("#photo", "data-faces") is None
    assert page.locator("#results tbody tr").count() == 0


STS106 = ROOT.parent / "shared" / "demo" / "nasa_sts106_crew_on_iss_2000.jpg"


@pytest.mark.skipif(not STS106.is_file(), reason="needs ../shared/demo")
def test_phone_width_crowd_gets_numbers_on_the_photo(open_page):
    """Seven crew members on a 390-px-wide page: full labels would cover each other and the
    faces, so the photo carries numbers and the table the rest; the astronaut alone keeps
    her full label."""
    page = open_page(390, 844)
    page.set_input_files("#file-input", files=[{"name": "sts106.jpg", "mimeType": "image/jpeg", "buffer": STS106.read_bytes()}])
    page.wait_for_selector("#photo[data-faces]", timeout=120_000)
    assert page.get_attribute("#photo", "data-faces") == "7"
    assert page.get_attribute("#photo", "data-labels") == "numbers"
    assert page.locator("#results tbody tr").count() == 7
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_page_sts106_390.png"), full_page=True)

    page = open_page(390, 844)
    page.set_input_files("#file-input", files=[{"name": "astronaut.jpg", "mimeType": "image/jpeg", "buffer": astronaut_jpeg()}])
    page.wait_for_selector("#photo[data-faces]", timeout=60_000)
    assert page.get_attribute("#photo", "data-labels") == "full"
    assert page.problems == []
