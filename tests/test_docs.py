"""The documentation: README's size and top, words about how the work was organised, the CLI reference
against the parser, the model card against its reports and the shipped heads, and the site's strict build."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model_card = _tool("model_card")
cli_reference = _tool("cli_reference")


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


# ---- README ------------------------------------------------------------------------------------


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; keep it to 200 and move the rest into docs/"
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert block == ['python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && howold demo', "python -m pytest -q"]
    assert lines.index("```bash") < 12, "the install-and-demo and test commands come first"


def test_readme_picture_is_committed_and_small():
    image = DOCS / "images" / "astronaut_howold.jpg"
    assert "docs/images/astronaut_howold.jpg" in README.read_text()
    assert image.read_bytes()[:3] == b"\xff\xd8\xff" and image.stat().st_size < 300_000


# ---- words about how the work was organised ------------------------------------------------------

ORGANISATION = [
    r"\blast session\b", r"\bthis session\b", r"\bprevious session\b", r"\bsession'?s\b", r"\bthis stop\b", r"\blast stop\b",
    r"\bthe team\b", r"\bour team\b", r"\bhelpers?\b", r"\bthe issue\b", r"\bthis issue\b", r"\bissue'?s (goal|bar)", r"\bearlier runs? of (ours|the team)\b",
    r"\bthis run of ours\b", r"\bcoordinator\b", r"\bjobs? (were )?paused\b", r"\bgoals? set for\b", r"\bworktree\b",
]


def organisation_phrases(text: str) -> list[str]:
    return [match.group(0) for pattern in ORGANISATION for match in re.finditer(pattern, text, re.IGNORECASE)]


def test_the_phrase_check_finds_such_sentences():
    text = "In the last session the team paused jobs; this stop met the issue's goals, as a helper said."
    assert {p.lower() for p in organisation_phrases(text)} >= {"last session", "the team", "this stop", "issue's goal", "helper"}
    assert organisation_phrases("A session cookie is not sent; report bugs on the tracker; the stop sign has an issue number.") == []


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_sentence_about_how_the_work_was_organised(page):
    found = organisation_phrases(page.read_text())
    assert not found, f"{page.relative_to(ROOT)}: {found}: speak to users about the project"


# ---- the CLI reference -------------------------------------------------------------------------------


def test_cli_reference_is_what_the_parser_gives():
    assert (DOCS / "cli.md").read_text() == cli_reference.reference_markdown(), "docs/cli.md is stale: run python tools/cli_reference.py --write"


def test_cli_reference_holds_every_command_and_option_and_agrees_with_howold_help():
    page = (DOCS / "cli.md").read_text()
    parser = cli_reference._parser()
    commands = cli_reference.subcommands(parser)
    env = {**os.environ, "COLUMNS": cli_reference.WIDTH, "PYTHONPATH": str(ROOT)}
    for argv in [[]] + [[name] for name in commands]:
        shown = subprocess.run([sys.executable, "-m", "face.cli", *argv, "--help"], capture_output=True, text=True, env=env, check=True).stdout
        assert shown.rstrip().replace("__main__.py", "howold") in page, f"`howold {' '.join(argv)} --help` differs from docs/cli.md"
    for name, sub in commands.items():
        assert f"## howold {name}" in page
        for action in sub._actions:
            for option in [] if action.dest == "help" else action.option_strings:
                assert f"`{option}`" in page, f"howold {name} {option} is missing from docs/cli.md"


# ---- the model card ------------------------------------------------------------------------------------


def _group(n, **metrics):
    return {"n": n, **metrics}


def _report(with_new_keys: bool) -> dict:
    extra = {"age_mean_signed_error": 0.8123, "interval_coverage": 0.7712} if with_new_keys else {}
    report = {
        **_group(100, age_mae=4.5678, age_cs5=0.68, age_bin_accuracy=0.61, gender_accuracy=0.945, race_accuracy=0.875, race7_accuracy=0.7, **extra),
        "by_race": {"White": _group(60, age_mae=4.9, gender_accuracy=0.95, race_accuracy=0.9, **extra), "Others": _group(0, age_mae=None)},
        "by_gender": {"male": _group(50, gender_accuracy=0.96), "female": _group(50, gender_accuracy=0.93)},
        "by_age_bin": {"0-2": _group(5, age_mae=2.0, **extra)},
        "under_20": {"n": 12, "age_mae": 2.66, "age_mean_signed_error": 1.85},
        "heads_sha256": "ab" * 32,
    }
    if with_new_keys:
        report["gender_calibration"] = [{"confidence": "0.5-0.6", "n": 10, "mean_confidence": 0.55, "accuracy": 0.5}, {"confidence": "0.9-1.0", "n": 0, "mean_confidence": None, "accuracy": None}]
    return report


def test_card_renders_the_metrics_a_report_holds_and_no_others():
    old = "\n".join(model_card.render_report("utkface", _report(False)))
    assert "| all | 100 | 4.57 | 68.0% | 61.0% | 94.5% | 87.5% | 70.0% |" in old
    headers = [line for line in old.splitlines() if line.startswith("| part |") or line.startswith("| race |")]
    assert headers and all("bias" not in h and "coverage" not in h for h in headers)
    assert "confidence bin" not in old
    assert "| Others |" not in old, "a group without faces gets no row"
    assert "Under 20 (exact ages): 12 faces, age MAE 2.66, bias +1.85 years." in old

    new = "\n".join(model_card.render_report("utkface", _report(True)))
    assert "| part | faces | age MAE | age bias | interval coverage | CS@5 |" in new
    assert "| all | 100 | 4.57 | +0.81 | 77.1% | 68.0% |" in new
    assert "| 0.5-0.6 | 10 | 55.0% | 50.0% |" in new and "0.9-1.0" not in new, "empty confidence bins are left out"


def test_readme_table_puts_both_parts_side_by_side():
    fairface = {**_report(False), "age_mae": None, "by_race": {"White": _group(30, gender_accuracy=0.9, race_accuracy=0.8)}}
    table = model_card.readme_table({"utkface": _report(True), "fairface": fairface})
    assert "| group | UTKFace faces | UTKFace age MAE | UTKFace bias | UTKFace gender | UTKFace race (5) | FairFace faces | FairFace age band |" in table
    assert "| race: White | 60 | 4.90 | +0.81 | 95.0% | 90.0% | 30 | — | 90.0% | 80.0% | — |" in table


def test_card_and_readme_tables_are_what_the_committed_reports_give():
    reports = model_card.load_reports()
    assert set(reports) == {"utkface", "fairface"}, "docs/reports holds one report per validation part"
    assert model_card.main(["--check"]) == 0, "run python tools/model_card.py"


def test_reports_were_made_from_the_shipped_heads():
    shipped = hashlib.sha256(model_card.SHIPPED_HEADS.read_bytes()).hexdigest()
    for name, report in model_card.load_reports().items():
        assert report["heads_sha256"] == shipped, f"docs/reports/{name}.json is of other heads: run python tools/model_card.py --evaluate"
        assert report["by_race"] and report["by_gender"] and report["by_age_bin"]


# ---- the site -----------------------------------------------------------------------------------------------


def _mkdocs_config(target: Path, docs_dir: Path) -> Path:
    """mkdocs.yml with absolute paths, so that a copy of docs/ builds from anywhere."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs_dir)
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            plugin["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    path = target / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)], capture_output=True, text=True, env=env, timeout=600)


def test_site_builds_strictly_offline(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    result = _build(_mkdocs_config(tmp_path, DOCS), tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    html = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "site").rglob("*.html"))
    assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for field in ("age_interval", "race_fairface_confidences", "analyze_stream", "WeightsError"):
        assert field in api, f"the API reference lacks {field}"


BREAKAGES = {
    "a broken link": ("getting-started.md", "\nSee [the missing page](no-such-page.md).\n", "no-such-page.md"),
    "a broken anchor": ("index.md", "\nSee [nothing](model-card.md#no-such-section).\n", "no-such-section"),
    "a missing API reference": ("api.md", "\n::: face.NoSuchThing\n", "NoSuchThing"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_site_build_fails_on(breakage, tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    page_name, text, named = BREAKAGES[breakage]
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    page = docs / page_name
    page.write_text(page.read_text() + text)
    result = _build(_mkdocs_config(tmp_path, docs), tmp_path / "site")
    assert result.returncode != 0 and named in result.stderr + result.stdout, result.stderr[-2000:]


# ---- the validation part the card is evaluated on -------------------------------------------------------------


def test_validation_folder_links_the_held_out_part_in_each_layout(tmp_path):
    from face.data import load_named, split_dataset

    utk = tmp_path / "utk"
    utk.mkdir()
    for i in range(40):
        (utk / f"{20 + i}_{i % 2}_{i % 5}_2017011617452{i:04d}.jpg.chip.jpg").write_bytes(f"image {i}".encode())
    folder, count = model_card.validation_folder("utkface", utk, tmp_path / "utk-validation")
    expected = {f.path.name for f in split_dataset(load_named("utkface", utk))[1].faces}
    assert count == 6 and {p.name for p in folder.iterdir()} == expected
    assert all(p.is_symlink() and p.resolve().parent == utk.resolve() for p in folder.iterdir())

    fair = tmp_path / "fair"
    (fair / "train").mkdir(parents=True)
    rows = ["file,age,gender,race,service_test"]
    for i in range(20):
        (fair / "train" / f"{i}.jpg").write_bytes(f"face {i}".encode())
        rows.append(f"train/{i}.jpg,20-29,{'Male' if i % 2 else 'Female'},East Asian,True")
    (fair / "fairface_label_train.csv").write_text("\n".join(rows) + "\n")
    folder, count = model_card.validation_folder("fairface", fair, tmp_path / "fair-validation")
    linked = load_named("fairface", folder)
    expected = {f.path.resolve() for f in split_dataset(load_named("fairface", fair))[1].faces}
    assert count == 3 == len(linked) and {f.path.resolve() for f in linked.faces} == expected
