"""docs/cli.md, generated from `face.cli.build_parser()` so that it says what `howold --help` says.

    python tools/cli_reference.py --write   # rewrite docs/cli.md after changing the command line
    python tools/cli_reference.py           # print it

tests/test_docs.py fails when docs/cli.md is not what this script makes from the current parser.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH = "100"  # argparse wraps help to $COLUMNS: a fixed width keeps the page the same on every machine

INTRO = """# CLI reference

Every `howold` command and option, generated from the command's own argument parser by
`python tools/cli_reference.py --write` (a test checks that this page is what the parser gives):
the blocks below are exactly what `howold --help` and `howold COMMAND --help` print.
Options shared by all commands: `--verbose` / `-v` lets TensorFlow's, absl's, oneDNN's, ONNX Runtime's and OpenCV's own log lines
through. Errors in what you pass (a missing file, an unknown dataset, a corrupt image) end the command
with one line, `howold: error: ...`, and exit status 2; `howold analyze --output` exits 1 when any image failed.
"""


def _parser() -> argparse.ArgumentParser:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from face.cli import build_parser

    return build_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices.items())


def help_text(parser: argparse.ArgumentParser) -> str:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return parser.format_help()
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}` (positional{', one or more' if action.nargs == '+' else ''})"
        meaning = (action.help or "").replace("%%", "%")  # as argparse prints it
        if action.choices:
            meaning = (meaning + "; " if meaning else "") + "one of " + ", ".join(f"`{c}`" for c in action.choices)
        if isinstance(action, argparse._AppendAction):
            meaning += " (repeatable)"
        default = action.default
        hidden = default is None or default is False or default == [] or default == argparse.SUPPRESS
        shown = "" if hidden or not action.option_strings else f"`{default}`"
        if action.required and action.option_strings:
            shown = "required"
        rows.append(f"| {name} | {shown} | {_escape(meaning)} |")
    return rows


def reference_markdown() -> str:
    parser = _parser()
    lines = [INTRO, "```text", "$ howold --help", help_text(parser).rstrip(), "```", ""]
    for name, sub in subcommands(parser).items():
        lines += [f"## howold {name}", "", (sub.description or _summary(parser, name) or "").strip(), ""]
        lines += _options_table(sub)
        lines += ["", "```text", f"$ howold {name} --help", help_text(sub).rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _summary(parser: argparse.ArgumentParser, name: str) -> str:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for choice in action._choices_actions:
        if choice.dest == name:
            text = choice.help or ""
            return text[:1].upper() + text[1:] + "."
    return ""


PAGE = ROOT / "docs" / "cli.md"

if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PAGE.write_text(reference_markdown())
    else:
        print(reference_markdown(), end="")
