"""Mutation testing (mutmut) of the modules where a silent bug costs users most. Not run by CI.

    pip install -e ".[test,mutation]"
    nice -n 10 python tools/mutation.py                 # every group
    nice -n 10 python tools/mutation.py heads images    # some groups

Each group mutates one module (or, for web.py, only its request-limit functions) and runs
only the fast tests that are about it, in a scratch copy of the repository (under
$TMPDIR), so the working tree is left alone. It prints, per group, mutants killed /
survived / timed out and the score (killed + timed out over all run), then the survivors'
names; `mutmut show NAME` in the printed folder shows one's diff.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: group -> (module, tests to run, mutant-name globs to run (all when empty))
GROUPS: dict[str, tuple[str, list[str], list[str]]] = {
    # test_fairface's unit tests too: the FairFace targets, losses and the 7-to-5 race merge live in heads.py
    "heads": ("face/heads.py", ["tests/test_heads.py", "tests/test_fairface.py", "-k", "not training_on"], []),
    "data": ("face/data.py", ["tests/test_data.py", "tests/test_heads.py"], []),
    "images": ("face/images.py", ["tests/test_images.py", "-k", "not cli and not video"], []),
    "analyzer": ("face/analyzer.py", ["tests/test_analyzer.py"], []),
    # the request limits: counting the body while it arrives, and parsing multipart in memory
    "web": ("face/web.py", ["tests/test_web_limits.py"], ["face.web.x__read_body*", "face.web.x__multipart_file*", "face.web.x__size*", "face.web.x__media_type*"]),
}


def scratch_copy(module: str, tests: list[str]) -> Path:
    """The tracked files of the repository (plus uncommitted changes) in a fresh folder, set up for mutmut."""
    folder = Path(tempfile.mkdtemp(prefix="howold-mutation-"))
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
        elif source.is_symlink():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).symlink_to(os.readlink(source))
    # mutmut reads [tool.mutmut] from pyproject.toml, else [mutmut] from setup.cfg: one per group
    selection = "\n".join(f"    {arg}" for arg in tests)
    (folder / "setup.cfg").write_text(
        f"[mutmut]\nsource_paths = face\nonly_mutate = {module}\nalso_copy =\n    weights\n"
        f"pytest_add_cli_args_test_selection =\n{selection}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n"
        "process_isolation = forkserver\n"
        # mutmut's limit is CPU time, (the tests' time + 1 s) x multiplier x 2: TensorFlow's threads
        # spend several CPU seconds a wall second, so its default of 15 times out honest mutants
        "timeout_multiplier = 40\n"
    )
    return folder


def run_group(name: str, max_children: int) -> dict:
    module, tests, patterns = GROUPS[name]
    folder = scratch_copy(module, tests)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run([*mutmut, "run", "--max-children", str(max_children), *patterns], cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=folder, env=env, capture_output=True, text=True).stdout
    statuses: dict[str, str] = {}
    for line in listing.splitlines():
        key, _, status = line.strip().rpartition(": ")
        if key and (not patterns or any(_matches(key, p) for p in patterns)):
            statuses[key] = status
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in sorted(set(statuses.values()))}
    ran = sum(n for s, n in counts.items() if s not in ("not checked", "skipped"))
    caught = counts.get("killed", 0) + counts.get("timeout", 0)
    return {
        "group": name,
        "module": module,
        "counts": counts,
        "score": round(caught / ran, 4) if ran else None,
        "survived": sorted(k for k, v in statuses.items() if v in ("survived", "no tests")),
        "folder": str(folder),
    }


def _matches(key: str, pattern: str) -> bool:
    from fnmatch import fnmatch

    return fnmatch(key, pattern)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="*", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    for name in args.groups:
        result = run_group(name, args.max_children)
        results.append(result)
        print(f"{name:9} {result['module']:18} score {result['score']}  {result['counts']}  ({result['folder']})", flush=True)
        for survivor in result["survived"]:
            print(f"    survived: {survivor}", flush=True)
    killed = sum(r["counts"].get("killed", 0) + r["counts"].get("timeout", 0) for r in results)
    ran = sum(sum(n for s, n in r["counts"].items() if s not in ("not checked", "skipped")) for r in results)
    print(f"all       {killed}/{ran} caught = {killed / ran:.1%}" if ran else "nothing ran")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
