"""The model card's tables, rendered from `howold evaluate` reports, so the card cannot drift from the model.

    python tools/model_card.py              # render docs/reports/*.json into docs/model-card.md and README.md
    python tools/model_card.py --check      # exit 1 when the card's tables are not what the reports give
    python tools/model_card.py --evaluate   # evaluate the shipped model on the validation parts, then render

`--evaluate` runs `howold evaluate` on the validation part of each dataset (15%, seed 42, the split the
shipped models were trained beside: `--split validation` where `howold evaluate` has it, else a folder of
links to that part's files), keeps the report small (no plots, no paths of temporary folders), records the
sha256 of the heads file it evaluated, and writes docs/reports/<dataset>.json.

The renderer shows whichever metrics a report holds: age MAE, mean signed error (bias), interval coverage,
gender, race and age-bin accuracy, by race (5 and 7), gender and age band, and the gender confidence bins.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "docs" / "model-card.md"
README = ROOT / "README.md"
REPORTS = ROOT / "docs" / "reports"
SHIPPED_HEADS = ROOT / "weights" / "dlib-resnet-keras-finetuned.keras"
DATASETS = {"utkface": ROOT.parent / "shared" / "data" / "utkface", "fairface": ROOT.parent / "shared" / "data" / "fairface"}
START, END = "<!-- model-card-tables: start (python tools/model_card.py) -->", "<!-- model-card-tables: end -->"

#: (report key, column title, kind): "pct" rates in 0..1, "years" with one sign, "n" counts
METRICS = [
    ("n", "faces", "n"),
    ("age_mae", "age MAE", "years"),
    ("age_mean_signed_error", "age bias", "signed"),
    ("interval_coverage", "interval coverage", "pct"),
    ("age_cs5", "CS@5", "pct"),
    ("age_bin_accuracy", "age band", "pct"),
    ("gender_accuracy", "gender", "pct"),
    ("race_accuracy", "race (5)", "pct"),
    ("race7_accuracy", "race (7)", "pct"),
]
GROUPS = [("by_race", "race (UTKFace's 5 classes)"), ("by_race7", "race (FairFace's 7 classes)"), ("by_gender", "gender"), ("by_age_bin", "age band")]
TITLES = {"utkface": "UTKFace", "fairface": "FairFace"}
KEPT = {"n", "age_mae", "age_mean_signed_error", "interval_coverage", "age_cs5", "age_bin_accuracy", "gender_accuracy", "race_accuracy", "race7_accuracy",
        "by_race", "by_race7", "by_gender", "by_age_bin", "under_20", "gender_calibration", "faces", "backbone", "dataset", "skipped_names"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cell(value, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "n":
        return f"{int(value):,}"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "signed":
        return f"{value:+.2f}"
    return f"{value:.2f}"


def _columns(rows: list[dict]) -> list[tuple[str, str, str]]:
    """The metrics some row has a value for: a report shows what it measured, nothing more."""
    return [m for m in METRICS if any(row.get(m[0]) is not None for row in rows)]


def _table(first: str, named_rows: list[tuple[str, dict]]) -> list[str]:
    columns = _columns([row for _, row in named_rows])
    lines = ["| " + " | ".join([first] + [title for _, title, _ in columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, row in named_rows:
        lines.append("| " + " | ".join([name] + [_cell(row.get(key), kind) for key, _, kind in columns]) + " |")
    return lines


def render_report(name: str, report: dict) -> list[str]:
    """One dataset's tables: headline, then each grouping the report holds, then confidence against accuracy."""
    title = TITLES.get(name, name)
    lines = [f"### {title}", "", f"{report.get('split_description', 'validation part')}; heads sha256 `{report.get('heads_sha256', 'unknown')[:16]}…`.", ""]
    lines += _table("part", [("all", report)])
    for key, label in GROUPS:
        groups = {group: row for group, row in report.get(key, {}).items() if row.get("n")}
        if groups:
            lines += ["", f"By {label}:", ""] + _table(label.split(" (")[0], list(groups.items()))
    if report.get("under_20", {}).get("n"):
        lines += ["", f"Under 20 (exact ages): {_cell(report['under_20']['n'], 'n')} faces, age MAE {_cell(report['under_20'].get('age_mae'), 'years')}, bias {_cell(report['under_20'].get('age_mean_signed_error'), 'signed')} years."]
    calibration = [row for row in report.get("gender_calibration", []) if row.get("n")]
    if calibration:
        lines += ["", "Gender confidence against accuracy:", "", "| confidence bin | faces | mean confidence | accuracy |", "|---|---|---|---|"]
        for row in calibration:
            lines.append(f"| {row['confidence']} | {int(row['n']):,} | {_cell(row.get('mean_confidence'), 'pct')} | {_cell(row.get('accuracy'), 'pct')} |")
    return lines + [""]


#: README's one table: (report key, column title, kind) per dataset
README_COLUMNS = {
    "utkface": [("n", "faces", "n"), ("age_mae", "age MAE", "years"), ("age_mean_signed_error", "bias", "signed"), ("gender_accuracy", "gender", "pct"), ("race_accuracy", "race (5)", "pct")],
    "fairface": [("n", "faces", "n"), ("age_bin_accuracy", "age band", "pct"), ("gender_accuracy", "gender", "pct"), ("race_accuracy", "race (5)", "pct"), ("race7_accuracy", "race (7)", "pct")],
}


def readme_table(reports: dict[str, dict]) -> str:
    """README's table: both validation parts side by side, overall, by race (5) and by age band."""
    parts = [(name, report, [c for c in README_COLUMNS.get(name, METRICS) if report.get(c[0]) is not None]) for name, report in reports.items()]
    if not parts:
        return "\n".join([START, "", "No report yet: run `python tools/model_card.py --evaluate`.", "", END])
    header = ["group"] + [f"{TITLES.get(name, name)} {title}" for name, _, columns in parts for _, title, _ in columns]
    lines = [START, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label: str, rows: list[dict | None]) -> str:
        cells = [label]
        for (_, _, columns), values in zip(parts, rows):
            cells += [_cell(values.get(key), kind) if values and values.get("n") else "—" for key, _, kind in columns]
        return "| " + " | ".join(cells) + " |"

    lines.append(row("**all**", [report for _, report, _ in parts]))
    for key, prefix in (("by_race", "race: "), ("by_age_bin", "age ")):
        names = []
        for _, report, _ in parts:
            names += [group for group, values in report.get(key, {}).items() if values.get("n") and group not in names]
        lines += [row(prefix + group, [report.get(key, {}).get(group) for _, report, _ in parts]) for group in names]
    return "\n".join(lines + ["", END])


def load_reports(folder: Path = REPORTS) -> dict[str, dict]:
    order = {name: i for i, name in enumerate(TITLES)}
    paths = sorted(folder.glob("*.json"), key=lambda p: (order.get(p.stem, len(order)), p.stem))
    return {path.stem: json.loads(path.read_text()) for path in paths}


def render(reports: dict[str, dict]) -> str:
    """The tables block that goes between the card's markers."""
    lines = [START, ""]
    if not reports:
        lines += ["No report yet: run `python tools/model_card.py --evaluate`.", ""]
    for name, report in reports.items():
        lines += render_report(name, report)
    return "\n".join(lines + [END])


def replace_tables(card: str, block: str, path: Path = CARD) -> str:
    before, start, rest = card.partition(START)
    _, end, after = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{path}: the markers {START!r} and {END!r} are missing")
    return before + block + after


# ---- evaluation -------------------------------------------------------------------------------


def _split_supported() -> bool:
    """Whether `howold evaluate` has `--split` (then it picks the validation part itself)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
    from cli_reference import _parser, subcommands

    return any("--split" in action.option_strings for action in subcommands(_parser())["evaluate"]._actions)


def validation_folder(kind: str, root: Path, into: Path) -> tuple[Path, int]:
    """A folder of links to the validation part of `root` (split_dataset's 15%, seed 42), in `kind`'s layout."""
    sys.path.insert(0, str(ROOT))
    from face.data import load_named, split_dataset

    dataset = load_named(kind, root)
    _, validation = split_dataset(dataset)
    into.mkdir(parents=True)
    if kind == "utkface":
        for face in validation.faces:
            (into / face.path.name).symlink_to(face.path.resolve())
        return into, len(validation)
    from face.data import fairface_csv

    table = fairface_csv(root)
    wanted = {face.path.resolve() for face in validation.faces}
    with table.open(newline="", encoding="utf-8") as source, (into / table.name).open("w", newline="", encoding="utf-8") as target:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(target, reader.fieldnames)
        writer.writeheader()
        for row in reader:
            path = (table.parent / row["file"].strip()).resolve()
            if path in wanted:
                link = into / row["file"].strip()
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
                writer.writerow(row)
    return into, len(validation)


def evaluate(names: list[str], heads: Path = SHIPPED_HEADS) -> None:
    sys.path.insert(0, str(ROOT))
    from face.cli import main as howold

    REPORTS.mkdir(parents=True, exist_ok=True)
    split = _split_supported()
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            root = DATASETS[name]
            output = Path(scratch) / f"{name}.json"
            if split:
                data, count = f"{name}={root}", None
                argv = ["evaluate", "--data", data, "--split", "validation"]
            else:
                folder, count = validation_folder(name, root, Path(scratch) / f"{name}-validation")
                argv = ["evaluate", "--data", f"{name}={folder}"]
            argv += ["--heads", str(heads), "--output", str(output), "--plots", str(Path(scratch) / f"{name}-plots")]
            print("howold " + " ".join(argv), file=sys.stderr)
            if howold(argv) != 0:
                raise SystemExit(f"howold evaluate failed on {name}")
            report = {key: value for key, value in json.loads(output.read_text()).items() if key in KEPT}
            report["data"] = f"{name}=../shared/data/{name}"
            report["split_description"] = f"validation part of `../shared/data/{name}` (15%, seed 42: {report['n']:,} faces, never trained on)"
            report["heads"] = str(heads.relative_to(ROOT)) if heads.is_relative_to(ROOT) else str(heads)
            report["heads_sha256"] = sha256(heads)
            (REPORTS / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
            print(f"wrote {REPORTS / f'{name}.json'}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the card's tables differ from what the reports give")
    parser.add_argument("--evaluate", action="store_true", help="evaluate the shipped heads on the validation parts first")
    parser.add_argument("--datasets", default="utkface,fairface", help="with --evaluate: which datasets (comma-separated)")
    args = parser.parse_args(argv)
    if args.evaluate:
        evaluate([name for name in args.datasets.split(",") if name])
    reports = load_reports()
    stale = []
    for path, block in ((CARD, render(reports)), (README, readme_table(reports))):
        text = path.read_text()
        updated = replace_tables(text, block, path)
        if updated != text:
            stale.append(path)
            if not args.check:
                path.write_text(updated)
    if args.check and stale:
        print(f"{', '.join(map(str, stale))}: tables differ from docs/reports; run python tools/model_card.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
