"""`howold analyze DIR --recursive`: photo collections nested by year and event."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from face.cli import main
from face.cli_tasks import DEMO_IMAGE, expand_inputs


@pytest.fixture()
def collection(tmp_path) -> Path:
    """photos/ with a photo at the top, two years of events, a corrupt photo and a note."""
    root = tmp_path / "photos"
    for relative in ("top.png", "2019/party/astronaut.png", "2020/trip/day1/astronaut.png"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO_IMAGE, root / relative)
    (root / "2020/trip/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "2019/notes.txt").write_text("who was there\n")
    (root / "2021").mkdir()  # an empty event
    return root


def test_expand_inputs_descends_depth_first_with_paths_under_the_folder_given(collection):
    files, skipped = expand_inputs([collection], recursive=True)
    assert [f.relative_to(collection).as_posix() for f in files] == ["2019/party/astronaut.png", "2020/trip/broken.jpg", "2020/trip/day1/astronaut.png", "top.png"]
    assert all(str(f).startswith(str(collection)) for f in files)
    assert [(p.relative_to(collection).as_posix(), reason.split(" (")[0]) for p, reason in skipped] == [("2019/notes.txt", "skipped, not an image file by its suffix")]
    flat, skipped_flat = expand_inputs([collection])
    assert [f.name for f in flat] == ["top.png"]
    assert {p.name for p, _ in skipped_flat} == {"2019", "2020", "2021"}
    assert all("--recursive" in reason for _, reason in skipped_flat)


def test_a_folder_link_loop_is_searched_once(collection):
    (collection / "2019/party/again").symlink_to(collection / "2019", target_is_directory=True)
    files, skipped = expand_inputs([collection], recursive=True)
    assert len(files) == len(set(f.resolve() for f in files)) == 4
    assert any("link loop" in reason for _, reason in skipped)


def test_jsonl_sources_are_relative_to_what_was_given_errors_have_lines_and_a_rerun_resumes(collection, monkeypatch, capsys):
    monkeypatch.chdir(collection.parent)
    output = Path("results.jsonl")
    assert main(["analyze", "photos", "--recursive", "--output", str(output)]) == 1  # one corrupt photo
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    by_source = {line["source"]: line for line in lines}
    assert set(by_source) == {"photos/top.png", "photos/2019/party/astronaut.png", "photos/2020/trip/day1/astronaut.png", "photos/2020/trip/broken.jpg"}
    assert "error" in by_source["photos/2020/trip/broken.jpg"] and "faces" not in by_source["photos/2020/trip/broken.jpg"]
    assert all(len(by_source[s]["faces"]) == 1 for s in by_source if not s.endswith("broken.jpg"))
    err = capsys.readouterr().err
    assert "photos/2020/trip/broken.jpg:" in err and "Traceback" not in err

    new = collection / "2021" / "later.png"
    shutil.copy(DEMO_IMAGE, new)
    main(["analyze", "photos", "--recursive", "--output", str(output)])
    again = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["source"] for line in again[: len(lines)]] == [line["source"] for line in lines]  # kept, not redone
    assert [line["source"] for line in again[len(lines):]] == ["photos/2021/later.png"]
    assert "(4 already in results.jsonl)" in capsys.readouterr().err


def test_json_output_recursive(collection, tmp_path):
    result = tmp_path / "all.json"
    assert main(["analyze", str(collection), "-r", "--json", str(result), "--output-dir", str(tmp_path / "annotated")]) == 1
    entries = json.loads(result.read_text())
    assert [Path(e["source"]).relative_to(collection).as_posix() for e in entries] == ["2019/party/astronaut.png", "2020/trip/broken.jpg", "2020/trip/day1/astronaut.png", "top.png"]
    assert sorted(p.name for p in (tmp_path / "annotated").iterdir()) == ["astronaut.png", "astronaut_2.png", "top.png"]
