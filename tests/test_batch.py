"""Batch analysis of a collection: Analyzer.analyze_stream, `howold analyze --output x.jsonl`
(streamed lines, errors on their own lines, resume after kill -9) and the engine registry.

The Ray engine has its own file, test_engine_ray.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from face import Analyzer, HowoldError
from face.cli import main
from face.results import completed_sources

try:
    from photo_folder import AWKWARD, NOT_IMAGES, analyze_until_lines, assert_same_results, read_jsonl
except ImportError:  # run from the repository root as a package
    from tests.photo_folder import AWKWARD, NOT_IMAGES, analyze_until_lines, assert_same_results, read_jsonl

DETECTION = ["--detector", "hog", "--upsample", "0"]


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(detector="hog", upsample=0)


@pytest.fixture
def expected(photo_results) -> list[dict]:
    return photo_results


def test_stream_is_lazy_ordered_and_equals_analyze_many(analyzer, photos, expected):
    taken = []

    def sources():
        for path in photos:
            taken.append(path)
            yield str(path)

    stream = analyzer.analyze_stream(sources(), batch_size=4)
    first = next(stream)
    assert len(taken) == 4, "the first result needs the first batch only"
    results = [first, *stream]
    assert [r["source"] for r in results] == [str(p) for p in photos]
    assert_same_results(results, expected)
    faces = {Path(r["source"]).name: len(r.get("faces", [])) for r in results}
    assert faces["blank.png"] == 0 and faces["grey.png"] == 1
    assert sum(faces.values()) == len(photos) - 4  # every photo but blank and the three broken files


def test_stream_of_face_crops_is_analyze_with_crop(analyzer, photos):
    few = [str(p) for p in photos if p.name in ("blank.png", "fake.jpg", "photo_000.png", "photo_001.jpg")]
    streamed = list(analyzer.analyze_stream(few, batch_size=3, crop=True))
    assert "error" in streamed[1] and len(streamed[0]["faces"]) == 1  # blank: the whole image is the face
    one_by_one = [{"source": p, "model": analyzer.model_id, "faces": analyzer.analyze(p, crop=True)} for p in few if not p.endswith("fake.jpg")]
    assert_same_results([r for r in streamed if "faces" in r], one_by_one)


def test_mixed_folder_errors_on_their_own_lines(photos, expected, tmp_path, capsys):
    output = tmp_path / "out" / "results.jsonl"
    code = main(["analyze", str(photos[0].parent), "--output", str(output), "--batch-size", "8", *DETECTION])
    assert code == 1  # some images failed; the rest are done
    lines = read_jsonl(output)
    assert_same_results(lines, expected)
    by_name = {Path(r["source"]).name: r for r in lines}
    for name, kind in AWKWARD.items():
        assert ("error" in by_name[name]) == (kind == "error"), name
        if kind == "error":
            assert "faces" not in by_name[name] and by_name[name]["error"].startswith(by_name[name]["source"])
    assert not set(NOT_IMAGES) & set(by_name)
    err = capsys.readouterr().err
    assert "notes.txt: skipped" in err
    assert f"{len(photos)} images, {len(photos) - 4} faces, 3 errors," in err and "images/s" in err
    assert not (tmp_path / "howold_output").exists()  # annotated images only when asked


def test_annotated_images_with_output_dir(photos, tmp_path):
    few = [str(p) for p in photos if p.name.startswith("photo_")][:3] + [str(photos[0].parent / "fake.jpg")]
    code = main(["analyze", *few, "--output", str(tmp_path / "r.jsonl"), "--output-dir", str(tmp_path / "ann"), *DETECTION])
    assert code == 1
    lines = read_jsonl(tmp_path / "r.jsonl")
    annotated = [Path(r["annotated"]) for r in lines if "annotated" in r]
    assert len(annotated) == 3 and all(p.is_file() and p.parent == tmp_path / "ann" for p in annotated)


def test_resume_after_kill_9_gives_every_source_once(photos, expected, tmp_path):
    output = tmp_path / "results.jsonl"
    folder = str(photos[0].parent)
    process = analyze_until_lines(folder, output, 4, DETECTION)
    try:
        process.kill()  # SIGKILL: no clean-up of any kind
    finally:
        process.kill()
        process.wait()
    written = output.read_bytes().count(b"\n")
    assert 4 <= written < len(photos), "killed mid-run"
    with open(output, "a", encoding="utf-8") as file:  # as if killed in the middle of a line
        file.write(json.dumps(expected[-1])[:40])
    assert main(["analyze", folder, "--output", str(output), *DETECTION]) == 1
    lines = read_jsonl(output)
    assert_same_results(lines, expected)
    assert main(["analyze", folder, "--output", str(output), *DETECTION]) == 0  # nothing left to do
    assert len(read_jsonl(output)) == len(photos)


def test_completed_sources_cuts_a_torn_line_and_refuses_a_bad_one(tmp_path):
    path = tmp_path / "r.jsonl"
    assert completed_sources(path) == {}
    path.write_text('{"source": "a.jpg", "faces": []}\n{"source": "b.jpg", "error": "b.jpg: bad"}\n{"source": "c.jp')
    assert set(completed_sources(path)) == {"a.jpg", "b.jpg"}
    assert path.read_text().endswith('"b.jpg: bad"}\n')
    path.write_text('{"source": "a.jpg", "faces": []}\nnot json\n{"source": "c.jpg", "faces": []}\n')
    with pytest.raises(HowoldError, match=r"r\.jsonl:2: not a howold result line"):
        completed_sources(path)


def test_engine_options_need_output_and_ray(photos, tmp_path, monkeypatch, capsys):
    assert main(["analyze", str(photos[0]), "--engine", "ray"]) == 2
    assert "--output FILE.jsonl" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as where the extra is not installed
    assert main(["analyze", str(photos[0]), "--engine", "ray", "--output", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'howold: error: the ray engine needs Ray: pip install "howold[ray]"'
