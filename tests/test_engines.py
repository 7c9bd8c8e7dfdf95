"""The batch engines' own parts, without starting Ray: a failed batch's lines, batching and
flattening, the local engine over a few real images, the Ray engine's batch function
(`AnalyzeBatch`, called here as an actor would call it) and how it names a Ray failure."""
from __future__ import annotations

import json
from importlib.util import find_spec

import numpy as np
import pytest
from PIL import Image

from face.engines import create_engine, list_engines
from face.engines.base import Engine, failed_batch
from face.errors import HowoldError, WeightsError

from conftest import astronaut_face

OPTIONS = {"detector": "hog", "upsample": 0}
#: `pip install -e ".[ray]"` was run: the Ray engine can be built (README's install leaves Ray out).
RAY_INSTALLED = find_spec("ray") is not None


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[str]:
    """Five images: three faces, a file that is not an image, a missing one."""
    folder = tmp_path_factory.mktemp("engine_images")
    face = astronaut_face()
    paths = []
    for index in range(3):
        path = folder / f"face{index}.png"
        Image.fromarray(np.ascontiguousarray(face[:, ::-1] if index % 2 else face)).resize((200 + 20 * index, 200 + 20 * index)).save(path)
        paths.append(str(path))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return paths[:2] + [str(folder / "broken.jpg"), paths[2], str(folder / "missing.jpg")]


@pytest.fixture(scope="module")
def expected(sources) -> list[dict]:
    from face import Analyzer

    return list(Analyzer(**OPTIONS).analyze_stream(sources, 2))


def test_a_failed_batch_gives_each_image_a_retry_line_naming_the_cause():
    lines = failed_batch(["a.jpg", "dir/b.jpg"], RuntimeError("worker\n   lost  its  GPU "))
    assert lines == [
        {"source": "a.jpg", "error": "a.jpg: its batch failed (RuntimeError: worker lost its GPU); a rerun retries it", "retry": True},
        {"source": "dir/b.jpg", "error": "dir/b.jpg: its batch failed (RuntimeError: worker lost its GPU); a rerun retries it", "retry": True},
    ]
    assert failed_batch(["c.jpg"], MemoryError())[0]["error"] == "c.jpg: its batch failed (MemoryError: MemoryError); a rerun retries it"
    assert failed_batch(["c.jpg"], ValueError("  "))[0]["error"] == "c.jpg: its batch failed (ValueError: ValueError); a rerun retries it"
    assert failed_batch([], RuntimeError("x")) == []


def test_engines_are_created_by_name_with_their_options_and_new_ones_registered(monkeypatch):
    from face.engines import ENGINES, register_engine
    from face.engines.ray import RayEngine, RayOptions
    from face.errors import ConfigError

    if RAY_INSTALLED:
        engine = create_engine("ray", options=RayOptions(actors=3))  # builds it; starts no Ray
        assert isinstance(engine, RayEngine) and engine.options.actors == 3
    else:  # the engine is registered all the same, and says what to install
        with pytest.raises(ConfigError, match=r'the ray engine needs Ray: pip install "howold\[ray\]"'):
            create_engine("ray", options=RayOptions(actors=3))
    assert create_engine().name == "local"
    with pytest.raises(ConfigError, match="unknown engine 'spark'; choose one of local, ray"):
        create_engine("spark")
    monkeypatch.setattr(ENGINES, "_entries", dict(ENGINES._entries))  # registered for this test only
    register_engine("fixed", lambda batches=(): Fixed(list(batches)))
    assert list_engines() == ["fixed", "local", "ray"]
    assert list(create_engine("fixed", batches=[[{"source": "a"}]]).run(["a"], {})) == [{"source": "a"}]


class Fixed(Engine):
    """An engine of given batches: what Engine itself adds (flattening, closing)."""

    name = "fixed"

    def __init__(self, batches):
        self.batches, self.closed = batches, 0

    def run_batches(self, sources, analyzer_options, batch_size=32, crop=False):
        yield from self.batches

    def close(self):
        self.closed += 1


def test_run_flattens_the_batches_in_order_and_leaving_closes():
    batches = [[{"source": "a"}, {"source": "b"}], [], [{"source": "c"}]]
    with Fixed(batches) as engine:
        assert [r["source"] for r in engine.run(["a", "b", "c"], {})] == ["a", "b", "c"]
    assert engine.closed == 1
    assert Engine.close(engine) is None  # the base class has nothing to release
    assert sorted(list_engines()) == ["local", "ray"]


def test_the_local_engine_batches_in_order_and_gives_the_analyzers_answers(sources, expected):
    with create_engine("local") as engine:
        batches = list(engine.run_batches(sources, OPTIONS, batch_size=2))
        assert [[r["source"] for r in batch] for batch in batches] == [sources[0:2], sources[2:4], sources[4:5]]
        assert [r for batch in batches for r in batch] == expected
        assert list(engine.run(sources, OPTIONS, batch_size=3)) == expected
        assert list(engine.run_batches([], OPTIONS)) == []
    assert len(expected[0]["faces"]) == 1 and "error" in expected[2] and "error" in expected[4]


@pytest.fixture(scope="module")
def blank(tmp_path_factory) -> str:
    """A grey image: no face to detect, one face when taken as a crop."""
    path = tmp_path_factory.mktemp("blank") / "grey.png"
    Image.new("RGB", (120, 120), (128, 128, 128)).save(path)
    return str(path)


def test_crop_takes_each_image_as_one_face_in_both_engines(blank):
    from face.engines.ray import AnalyzeBatch

    assert [len(r["faces"]) for r in create_engine("local").run([blank], OPTIONS)] == [0]
    assert [[len(r["faces"]) for r in batch] for batch in create_engine("local").run_batches([blank], OPTIONS)] == [[0]]  # crop is off by default
    assert [len(r["faces"]) for r in create_engine("local").run([blank, blank], OPTIONS, batch_size=1, crop=True)] == [1, 1]
    out = AnalyzeBatch(OPTIONS, batch_size=2, crop=True)({"source": np.array([blank], dtype=object)})
    assert len(json.loads(out["result"][0])["faces"]) == 1
    out = AnalyzeBatch(OPTIONS, batch_size=2, crop=False)({"source": np.array([blank], dtype=object)})
    assert json.loads(out["result"][0])["faces"] == []


def test_a_local_batch_that_fails_gets_retry_lines_and_the_run_goes_on(sources, expected, monkeypatch):
    """A fault injected into the second batch only (no real batch fails on demand)."""
    from face.analyzer import Analyzer

    real = Analyzer.analyze_stream

    def failing(self, batch, batch_size=32, crop=False):
        if str(sources[2]) in [str(s) for s in batch]:
            raise RuntimeError("out of memory")
        return real(self, batch, batch_size, crop)

    monkeypatch.setattr(Analyzer, "analyze_stream", failing)
    results = list(create_engine("local").run(sources, OPTIONS, batch_size=2))
    assert results[:2] == expected[:2] and results[4] == expected[4]
    assert results[2:4] == failed_batch(sources[2:4], RuntimeError("out of memory"))


def test_the_ray_batch_function_answers_as_the_local_engine(sources, expected):
    from face.engines.ray import AnalyzeBatch

    batch = AnalyzeBatch(OPTIONS, batch_size=2, crop=False)
    out = batch({"source": np.array(sources, dtype=object)})
    assert list(out["source"]) == sources and out["source"].dtype == object and out["result"].dtype == object
    assert [json.loads(line) for line in out["result"]] == expected


def test_the_ray_batch_function_turns_a_failed_batch_into_retry_lines(sources, monkeypatch):
    from face.analyzer import Analyzer
    from face.engines.ray import AnalyzeBatch

    monkeypatch.setattr(Analyzer, "analyze_stream", lambda self, *args: (_ for _ in ()).throw(RuntimeError("boom")))
    out = AnalyzeBatch(OPTIONS, batch_size=2, crop=False)({"source": np.array(sources[:2], dtype=object)})
    assert [json.loads(line) for line in out["result"]] == failed_batch(sources[:2], RuntimeError("boom"))


def test_an_actor_whose_analyzer_cannot_start_raises_its_error_from_the_first_batch(tmp_path):
    from face.engines.ray import AnalyzeBatch

    batch = AnalyzeBatch({**OPTIONS, "heads": str(tmp_path / "missing.keras")}, batch_size=2, crop=False)
    assert batch.analyzer is None and isinstance(batch.error, HowoldError)
    with pytest.raises(HowoldError, match="missing.keras"):
        batch({"source": np.array(["a.jpg"], dtype=object)})


class RayLikeError(Exception):
    """Ray's errors carry the actor's exception as `.cause`."""

    def __init__(self, message, cause=None):
        super().__init__(message)
        self.cause = cause


def test_a_ray_failure_is_named_by_its_howold_cause_or_its_last_line():
    from face.engines.ray import _root_cause

    missing = WeightsError("heads.keras: no such file")
    assert _root_cause(RayLikeError("actor died\nlong trace", cause=missing)) == "heads.keras: no such file"
    try:
        try:
            raise missing
        except WeightsError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert _root_cause(outer) == "heads.keras: no such file"  # through __cause__
    try:
        try:
            raise missing
        except WeightsError:
            raise RuntimeError("during handling")
    except RuntimeError as outer:
        assert _root_cause(outer) == "heads.keras: no such file"  # through __context__
    # a cause that only Ray's text carries (the actor's exception could not be unpickled)
    text = "ray.exceptions.ActorDiedError: the actor died\n  File x\nface.errors.WeightsError: heads.keras: bad file\n\nmore: trailing line\n"
    assert _root_cause(RuntimeError(text)) == "heads.keras: bad file"
    assert _root_cause(RuntimeError("first line\n  the last line  \n\n")) == "the last line"
    assert _root_cause(RuntimeError("")) == "RuntimeError"
    # the howold error on one branch, a plain one on the branch looked at first: both are followed
    beside = RayLikeError("ray text\nits last line", cause=missing)
    beside.__context__ = RuntimeError("plain")
    assert _root_cause(beside) == "heads.keras: no such file"
    looped = RayLikeError("a loop")
    looped.cause = looped
    assert _root_cause(looped) == "a loop"


def test_the_ray_engine_needs_ray_and_says_how_to_get_it(monkeypatch):
    import sys

    from face.engines import ray as ray_engine
    from face.errors import ConfigError

    if RAY_INSTALLED:
        assert ray_engine._import_ray().__name__ == "ray"
    monkeypatch.setitem(sys.modules, "ray.data", None)  # as where the "data" extra, or Ray itself, is missing
    with pytest.raises(ConfigError) as missing:
        ray_engine._import_ray()
    assert str(missing.value) == 'the ray engine needs Ray: pip install "howold[ray]"'
