"""Mutation testing (mutmut) of the modules where a silent bug costs users most. Not run by CI.

    pip install -e ".[test,mutation]"
    nice -n 10 python tools/mutation.py                 # every group
    nice -n 10 python tools/mutation.py heads images    # some groups
    nice -n 10 python tools/mutation.py analyzer --in-process   # tests that load models: one process

Each group mutates one module (or, for web/uploads.py and analyzer.py, only the functions it names) and runs
only the fast tests that are about it, in a scratch copy of the repository (under
$TMPDIR), so the working tree is left alone. It prints, per group, mutants killed /
survived / timed out and the score (killed, timed out or crashed over all run), then the
survivors' names; `mutmut show NAME` in the printed folder shows one's diff.
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
    # test_fairface's unit tests too: the FairFace targets and losses live in heads.py
    "heads": ("face/heads.py", ["tests/test_heads.py", "tests/test_fairface.py", "-k", "not training_on"], []),
    # the answers read from the distributions, the 7-to-5 race merge
    "readout": ("face/readout.py", ["tests/test_heads.py", "tests/test_fairface.py", "-k", "not training_on"], []),
    # test_fairface's loader tests too: FairFace's CSV, its bins and 7 races are read in data.py
    "data": ("face/data.py", ["tests/test_data.py", "tests/test_heads.py", "tests/test_fairface.py", "-k", "not training_on and not loose_crops"], []),
    # the landmark fit and its weights, the warp, dlib's chips
    "alignment": ("face/alignment.py", ["tests/test_alignment.py"], []),
    # the results file: refused paths, one-line write errors, resuming, batches written whole
    "results": (
        "face/results.py",
        ["tests/test_results.py", "tests/test_faults.py::test_retry_lines_are_dropped_and_done_again", "tests/test_faults.py::test_an_interrupted_batch_write_leaves_no_part_of_it",
         "tests/test_batch.py::test_completed_sources_cuts_a_torn_line_and_refuses_a_bad_one"],
        [],
    ),
    "images": ("face/images.py", ["tests/test_images.py", "-k", "not cli and not video"], []),
    # the functions where a silent bug gives users wrong answers: TTA and per-face averaging of
    # the probabilities, the oversampled crops, the chips, the checks of given boxes. Each mutant
    # reloads the models (~10 s), so only these are run: not __init__ (argument checks), warm_up,
    # nor the batching and ordering in _analyze_loaded / analyze_stream (run those by name).
    "analyzer": (
        "face/analyzer.py",
        ["tests/test_analyzer.py"],
        [f"face.analyzer.xǁAnalyzerǁ{name}__mutmut_*" for name in ("predict_probabilities", "predict_chips")]
        + ["face.analyzer.x_oversample*", "face.analyzer.x__check_boxes*", "face.analyzer.xǁAnalyzerǁchips__mutmut_*"],
    ),
    # the engines: a failed batch's retry lines, batching and flattening, the local engine, the
    # Ray engine's batch function and how it names a failure (test_engines, --in-process: one
    # Analyzer). Not RayEngine's own methods (_connect, pool_size, run_batches): their tests
    # start a Ray cluster and kill actors (test_engine_ray), minutes a mutant.
    "engines": (
        "face/engines/*",
        ["tests/test_engines.py"],
        ["face.engines.x_*", "face.engines.base.*", "face.engines.local.*", "face.engines.ray.x_*", "face.engines.ray.xǁAnalyzeBatchǁ*"],
    ),
    # the request limits: counting the body while it arrives, and parsing multipart in memory
    "web": ("face/web/uploads.py", ["tests/test_web_limits.py"], ["face.web.uploads.x__read_body*", "face.web.uploads.x__multipart_file*", "face.web.uploads.x__size*", "face.web.uploads.x__media_type*"]),
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


#: mutmut's statuses of a mutant the tests noticed: they failed, ran past the time limit, or crashed
CAUGHT = ("killed", "timeout", "segfault")


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
    caught = sum(counts.get(s, 0) for s in CAUGHT)
    return {
        "group": name,
        "module": module,
        "counts": counts,
        "score": round(caught / ran, 4) if ran else None,
        "survived": sorted(k for k, v in statuses.items() if v in ("survived", "no tests")),
        "folder": str(folder),
    }


#: Runs in the scratch copy's mutants/ folder: argv[1] a JSON [mutant names, pytest args, output
#: path]. Each mutant is switched on through mutmut's own variable, and the tests run by pytest in
#: this one process; `Analyzer(...)` of the same arguments gives the same instance each time
#: (its constructor is not mutated; the class stays the class, so tests may patch it), so the
#: models load once instead of once per mutant; a local Ray, once started, stays up too. A
#: mutant is killed when pytest fails (exit 1), survives when it passes (0); a hang past
#: TIMEOUT_S fails the running test and counts as caught (timeout).
IN_PROCESS = """
import json, os, signal, sys, time
sys.path.insert(0, os.getcwd())
import pytest
import face, face.analyzer

names, tests, output = json.loads(sys.argv[1])
Analyzer, built = face.analyzer.Analyzer, {}
real_init = Analyzer.__init__

def new(cls, *args, **kwargs):
    key = repr((cls, args, sorted(kwargs.items())))
    if key not in built:
        built[key] = object.__new__(cls)
    return built[key]

def init(self, *args, **kwargs):
    if not getattr(self, "_built_once", False):  # one that failed to build tries again
        real_init(self, *args, **kwargs)
        self._built_once = True

Analyzer.__new__, Analyzer.__init__ = new, init

def too_long(*_):
    raise TimeoutError("mutant ran past its time")

signal.signal(signal.SIGALRM, too_long)
results = {}
for name in ["", *names]:  # "": no mutant, the tests must pass
    os.environ["MUTANT_UNDER_TEST"] = name
    started = time.monotonic()
    signal.alarm(%d if name else 600)  # the run without a mutant builds the models too
    code = int(pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]))
    signal.alarm(0)
    seconds = time.monotonic() - started
    results[name] = {0: "survived", 1: "killed"}.get(code, f"error {code}") if seconds < %d or not name else "timeout"
    if name == "" and code != 0:
        sys.exit(f"the tests fail without a mutant (pytest exit {code})")
    with open(output, "w") as handle:
        json.dump(results, handle)
"""
TIMEOUT_S = 600


def run_group_in_process(name: str, folder: Path | None = None, only: list[str] | None = None, timeout: int = TIMEOUT_S, tests: list[str] | None = None) -> dict:
    """Like run_group, with the tests run in one process (IN_PROCESS) instead of mutmut's runner:
    for groups whose tests load models. `folder`: a scratch copy where mutmut has made the
    mutants (its tests/ are refreshed from the working tree); `only`: mutant-name globs to run."""
    module, group_tests, patterns = GROUPS[name]
    patterns, tests = only or patterns, tests or group_tests
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if folder is None:
        folder = scratch_copy(module, tests)
        # mutmut makes the mutants (and times the tests once); a name that matches none runs none
        subprocess.run([sys.executable, "-m", "mutmut", "run", "face.none_at_all*"], cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:  # the tests as they are now
        shutil.copytree(ROOT / "tests", folder / "mutants" / "tests", dirs_exist_ok=True)
    keys = sorted(key for meta in (folder / "mutants").glob(module + ".meta") for key in json.loads(meta.read_text())["exit_code_by_key"])
    # in the order of the patterns (the most telling first), so that a run cut short says the most
    names = [key for p in patterns or ["*"] for key in keys if _matches(key, p)]
    output = folder / "in_process.json"
    harness = IN_PROCESS % (timeout, timeout)
    subprocess.run([sys.executable, "-c", harness, json.dumps([names, tests, str(output)])], cwd=folder / "mutants", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    statuses = json.loads(output.read_text()) if output.exists() else {}
    statuses.pop("", None)
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in sorted(set(statuses.values()))}
    ran = sum(counts.values())
    caught = counts.get("killed", 0) + counts.get("timeout", 0)
    return {
        "group": name,
        "module": module,
        "counts": {**counts, "not run": len(names) - ran},
        "score": round(caught / ran, 4) if ran else None,
        "survived": sorted(k for k, v in statuses.items() if v == "survived"),
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
    parser.add_argument("--in-process", action="store_true", help="run the tests in one process, the models loaded once (see IN_PROCESS); for analyzer")
    parser.add_argument("--folder", type=Path, help="with --in-process: a scratch copy where mutmut already made the mutants")
    parser.add_argument("--timeout", type=int, default=TIMEOUT_S, help=f"with --in-process: seconds a mutant's tests may run before it counts as caught (default {TIMEOUT_S}: room to load models)")
    parser.add_argument("--tests", nargs="+", metavar="ARG", help="with --in-process: these pytest arguments instead of the group's tests (a subset can only catch fewer mutants)")
    parser.add_argument("--only", nargs="+", metavar="GLOB", help="with --in-process: run only the mutants named so (the survivors of an earlier run, say)")
    args = parser.parse_args()
    results = []
    for name in args.groups:
        result = run_group_in_process(name, args.folder, args.only, args.timeout, args.tests) if args.in_process else run_group(name, args.max_children)
        results.append(result)
        print(f"{name:9} {result['module']:18} score {result['score']}  {result['counts']}  ({result['folder']})", flush=True)
        for survivor in result["survived"]:
            print(f"    survived: {survivor}", flush=True)
    killed = sum(r["counts"].get(s, 0) for r in results for s in CAUGHT)
    ran = sum(sum(n for s, n in r["counts"].items() if s not in ("not checked", "skipped")) for r in results)
    print(f"all       {killed}/{ran} caught = {killed / ran:.1%}" if ran else "nothing ran")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
