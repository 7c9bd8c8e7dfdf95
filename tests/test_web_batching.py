"""Uploads that wait for the model are analysed in one batch, with the same answers."""
from __future__ import annotations

import threading
import time

import pytest

from face.errors import ImageError
from face.web import AnalyzerPool, WebConfig

from test_web import astronaut_jpeg


@pytest.fixture(scope="module")
def pool() -> AnalyzerPool:
    pool = AnalyzerPool(WebConfig())
    pool.load()
    assert pool.status == "ready", pool.error
    return pool


def test_waiting_uploads_share_one_batch_and_get_their_own_answers(pool: AnalyzerPool) -> None:
    photo = astronaut_jpeg()
    alone = pool.analyze(photo, "yunet", ())
    assert alone["timings_ms"]["batched_with"] == 0
    uploads = [photo, b"not an image", photo]
    results: list = [None] * len(uploads)

    def send(index: int) -> None:
        try:
            results[index] = pool.analyze(uploads[index], "yunet", ())
        except Exception as error:  # noqa: BLE001 - checked below
            results[index] = error

    pool._model_lock.acquire()  # the model is busy: the uploads queue up behind it
    try:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(uploads))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120  # a guard against a hang, not a guess at how long work takes
        while len(pool._pending) < len(uploads):
            assert time.monotonic() < deadline, "the uploads never queued"
            time.sleep(0.01)
    finally:
        pool._model_lock.release()
    for thread in threads:
        thread.join(120)
    assert isinstance(results[1], ImageError)  # the bad upload fails alone
    for result in (results[0], results[2]):
        assert result["timings_ms"]["batched_with"] == 1  # the two photos went through together
        (face,) = result["faces"]
        (expected,) = alone["faces"]
        assert face["box"] == expected["box"] and face["gender"] == expected["gender"]
        assert abs(face["age"] - expected["age"]) < 0.05
    assert pool._pending == []


def test_different_options_are_not_mixed(pool: AnalyzerPool) -> None:
    photo = astronaut_jpeg()
    results = {}

    def send(tta: tuple) -> None:
        results[tta] = pool.analyze(photo, "yunet", tta)

    pool._model_lock.acquire()
    try:
        threads = [threading.Thread(target=send, args=(tta,)) for tta in ((), ("flip",))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(pool._pending) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        pool._model_lock.release()
    for thread in threads:
        thread.join(120)
    assert results[()]["timings_ms"]["batched_with"] == 0 and results[("flip",)]["timings_ms"]["batched_with"] == 0


def test_models_get_their_own_analyzer_and_share_a_loaded_backbone(pool: AnalyzerPool) -> None:
    photo = astronaut_jpeg()
    own = pool.analyze(photo, "yunet", ())
    other = pool.analyze(photo, "yunet", (), pool.model_key("dlib-resnet"))
    assert (own["model"], other["model"]) == ("dlib-resnet-keras-finetuned", "dlib-resnet")
    assert [f["box"] for f in other["faces"]] == [f["box"] for f in own["faces"]] and other["faces"] != own["faces"]
    # both models sit on dlib-resnet-keras: the second analyzer took the first one's backbone
    assert pool.get("yunet", (), "dlib-resnet").backbone is pool.get("yunet", ()).backbone
    assert pool.model_key("dlib-resnet-keras-finetuned") is None  # the server's own, by name


def test_a_server_model_chosen_by_name_is_its_default() -> None:
    pool = AnalyzerPool(WebConfig(model="dlib-resnet"))
    pool.load()
    assert pool.status == "ready", pool.error
    assert pool.default_model == "dlib-resnet" and pool.model_key("dlib-resnet") is None
    assert pool.model_key("dlib-resnet-keras-finetuned") == "dlib-resnet-keras-finetuned"
    assert pool.analyze(astronaut_jpeg(), "yunet", ())["model"] == "dlib-resnet"
