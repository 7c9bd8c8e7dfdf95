"""`howold report` on a results file that `howold analyze --output` writes here, over a made-up
collection with two folders; its page in a real browser (Debian's chromium via Playwright)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from face.quantification import DEFAULT_METHOD

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_folder import make_photo_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")


def howold(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "face.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """photos/2019 and photos/2020, each a few faces and awkward files, analysed into results.jsonl."""
    folder = tmp_path_factory.mktemp("report")
    make_photo_folder(folder / "photos" / "2019", good=4, seed=1)
    make_photo_folder(folder / "photos" / "2020", good=3, seed=2)
    run = howold("analyze", "photos", "--recursive", "--output", "results.jsonl", cwd=folder)
    assert run.returncode == 1 and "6 errors" in run.stderr, run.stderr  # 1: some images failed
    return folder


def test_summary_has_the_documented_shape(collection):
    run = howold("report", "results.jsonl", "--by", "folder", "--json", "summary.json", cwd=collection)
    assert run.returncode == 0, run.stderr
    summary = json.loads((collection / "summary.json").read_text())
    lines = [json.loads(line) for line in (collection / "results.jsonl").read_text().splitlines()]
    assert summary["images"] == len(lines) == 4 + 3 + 2 * 5
    assert summary["images_failed"] == sum("error" in line for line in lines) == 6
    assert summary["faces"] == sum(len(line.get("faces", [])) for line in lines) == 4 + 3 + 2  # the grey copies too
    assert summary["faces_left_out"] == 0 and summary["method"] == DEFAULT_METHOD
    assert summary["model"] == lines[0]["model"] and len(summary["model"]) == 16
    assert list(summary["age"]) == ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]
    assert list(summary["gender"]) == ["male", "female"]
    assert list(summary["race"]) == ["White", "Black", "Asian", "Indian", "Others"]
    assert len(summary["race_fairface"]) == 7
    assert sorted(summary["groups"]) == ["2019", "2020"]
    assert summary["groups"]["2019"]["faces"] + summary["groups"]["2020"]["faces"] == summary["faces"]
    for part in (summary, *summary["groups"].values()):
        for attribute in ("gender", "age", "race", "race_fairface"):
            entries = part[attribute].values()
            assert sum(e["share"] for e in entries) == pytest.approx(1, abs=1e-3)
            assert sum(e["counted"] for e in entries) == pytest.approx(1, abs=1e-3)
            for e in entries:
                assert 0 <= e["low"] <= e["share"] + 1e-4 and e["share"] <= e["high"] + 1e-4 <= 1 + 1e-4
    # the astronaut reads as a woman in her thirties: every face is counted so
    assert summary["gender"]["female"]["counted"] == 1.0


def test_bands_confidence_and_printed_summary(collection):
    lines = [json.loads(line) for line in (collection / "results.jsonl").read_text().splitlines()]
    confidences = sorted(face["detection_confidence"] for line in lines for face in line.get("faces", []))
    threshold = confidences[len(confidences) // 2]
    run = howold("report", "results.jsonl", "--age-bands", "0,20,60", "--min-confidence", str(threshold), cwd=collection)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert list(summary["age"]) == ["0-19", "20-59", "60+"]
    assert summary["faces_left_out"] == sum(c < threshold for c in confidences) > 0
    assert summary["faces"] == len(confidences) - summary["faces_left_out"]
    assert "groups" not in summary


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--age-bands", "5,10"], "age bands"),
        (["--min-confidence", "2"], "--min-confidence"),
        (["--method", "magic"], "unknown method"),
        (["--min-confidence", "1"], "no faces to report on"),
    ],
)
def test_bad_options_get_one_line(collection, arguments, message):
    run = howold("report", "results.jsonl", *arguments, cwd=collection)
    assert run.returncode == 2 and message in run.stderr
    assert run.stderr.startswith("howold: error:") and run.stderr.count("\n") == 1


def _variants(lines: list[str]) -> dict[str, tuple[str, str]]:
    good = [line for line in lines if '"faces": [{' in line]
    other = json.loads(good[0])
    other["model"] = "0123456789abcdef"
    old = json.loads(good[0])
    del old["model"]
    return {
        "empty": ("", "empty, no results"),
        "torn": ("\n".join(lines[:3]) + "\n" + lines[3][:40], "torn last line"),
        "garbage": ("\n".join(lines[:2] + ["not json at all"] + lines[2:]) + "\n", ":3: not a howold result line"),
        "mixed": ("\n".join(lines + [json.dumps(other)]) + "\n", "more than one model"),
        "another": ("\n".join(json.dumps({**json.loads(line), "model": "0123456789abcdef"}) for line in lines) + "\n", "statistics are of model"),
        "old": (json.dumps(old) + "\n", "older howold"),
        "errors only": ("\n".join(line for line in lines if '"error"' in line) + "\n", "no faces to report on"),
    }


def test_bad_results_files_get_one_line_and_stay_as_they_were(collection):
    lines = (collection / "results.jsonl").read_text().splitlines()
    for name, (text, message) in _variants(lines).items():
        path = collection / f"bad-{name.replace(' ', '-')}.jsonl"
        path.write_text(text)
        run = howold("report", path.name, "--json", "out.json", cwd=collection)
        assert run.returncode == 2, name
        assert run.stderr.startswith("howold: error:") and run.stderr.count("\n") == 1 and message in run.stderr, (name, run.stderr)
        assert path.read_text() == text, f"{name}: the results file changed"
    assert not (collection / "out.json").exists()
    run = howold("report", "missing.jsonl", cwd=collection)
    assert run.returncode == 2 and "missing.jsonl" in run.stderr


def test_an_old_results_file_still_resumes(collection):
    """A file from before `model` and `age_distribution` existed: analysing goes on in it, and the
    report names the problem instead of mixing in faces it cannot read."""
    lines = (collection / "results.jsonl").read_text().splitlines()
    old = []
    for line in lines[:-2]:
        entry = json.loads(line)
        entry.pop("model")
        for face in entry.get("faces", []):
            face.pop("age_distribution")
        old.append(json.dumps(entry))
    (collection / "old.jsonl").write_text("\n".join(old) + "\n")
    run = howold("analyze", "photos", "--recursive", "--output", "old.jsonl", cwd=collection)
    assert run.returncode in (0, 1) and "results in old.jsonl" in run.stderr, run.stderr
    resumed = (collection / "old.jsonl").read_text().splitlines()
    assert resumed[: len(old)] == old and len(resumed) == len(lines)
    run = howold("report", "old.jsonl", cwd=collection)
    assert run.returncode == 2 and "older howold" in run.stderr


def test_page_in_chromium(collection):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    run = howold("report", "results.jsonl", "--by", "folder", "--html", "report.html", cwd=collection)
    assert run.returncode == 0, run.stderr
    run = howold("report", "results.jsonl", "--html", "private.html", "--no-crops", cwd=collection)
    assert run.returncode == 0, run.stderr
    assert "<img" not in (collection / "private.html").read_text()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            for width in (1280, 390):
                context = browser.new_context(viewport={"width": width, "height": 900})
                page = context.new_page()
                requests, problems = [], []
                page.on("request", lambda request: requests.append(request.url))
                page.on("pageerror", lambda error: problems.append(str(error)))
                page.goto((collection / "report.html").as_uri())
                page.wait_for_load_state("load")
                assert page.evaluate("document.documentElement.scrollWidth") <= width, f"horizontal overflow at {width} px"
                assert page.locator("svg").count() >= 1 + 4 + 2 * 2  # the age histogram, 4 share charts, 2 per folder
                assert page.locator("svg rect").count() > 20
                assert page.locator("img").count() >= 1 and page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth == 64)")
                assert "2019" in page.inner_text("body") and "Caveats" in page.inner_text("body")
                assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
                assert problems == []
                page.screenshot(path=str(ARTIFACTS / f"report-{width}.png"), full_page=True)
                context.close()
        finally:
            browser.close()


def test_a_person_tracked_across_video_frames_is_counted_once(tmp_path):
    from test_demo_photos import write_translating_video

    frames = write_translating_video(tmp_path / "clip.mp4", frames=12)
    run = howold("video", "clip.mp4", "--every", "2", "--output-json", "clip.jsonl", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in (tmp_path / "clip.jsonl").read_text().splitlines()]
    assert len(lines) == frames // 2
    sightings = [face for line in lines for face in line["faces"]]
    assert len(sightings) >= frames // 2 - 1 and {face["track"] for face in sightings} == {1}
    run = howold("report", "clip.jsonl", "--html", "clip.html", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads(howold("report", "clip.jsonl", cwd=tmp_path).stdout)
    assert summary["faces"] == 1 and summary["tracked"] == 1 and summary["images"] == frames // 2
    assert "tracked across frames counted once" in (tmp_path / "clip.html").read_text()


def test_groups_are_folders_under_what_was_analysed():
    from face.collection import _common_root, _group_key

    sources = ["archive/1990/party/a.jpg", "archive/1990/b.jpg", "archive/1991/trip/day1/c.jpg", "archive/d.jpg"]
    root = _common_root(sources)
    assert root == ("archive",)
    assert [_group_key(s, root, "folder") for s in sources] == ["1990", "1990", "1991", "."]
    assert [_group_key(s, root, "2") for s in sources] == ["1990/party", "1990", "1991/trip", "."]
    assert _group_key("archive/1990/b.jpg", root, None) == ""
