"""The web app against a real uvicorn server in a subprocess: the API, its limits, and a fuzzer.

The server runs with the default settings; the browser tests (test_web_browser.py) share it
through `acquire_server`. The loading state, the queue, the deadline and the chunked upload
cut-off are in test_web_admission.py, which holds the work with a gate instead of racing
the clock.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import io
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from face.web import CONFIG_ENV, WebConfig  # noqa: E402

from http_server import http_response  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT.parent / "shared" / "demo"
MiB = 1024 * 1024
LIMIT = 10 * MiB


# ---- images made here ---------------------------------------------------------------------


def _jpeg(array, quality: int = 92) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


_CACHE: dict[str, bytes] = {}


def astronaut_jpeg() -> bytes:
    """scikit-image's astronaut (Eileen Collins), 512x512, as a JPEG."""
    if "astronaut" not in _CACHE:
        from skimage import data

        _CACHE["astronaut"] = _jpeg(data.astronaut())
    return _CACHE["astronaut"]


def blank_png(size: int = 64) -> bytes:
    """A small grey PNG without faces: quick to analyse."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buffer, "PNG")
    return buffer.getvalue()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG claiming width x height pixels whose pixel data is cut short after 20 bytes.

    Decoding it can only fail (415, corrupt); a 413 naming the decompression bomb proves it
    was refused from its header, unread.
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)[:20]) + chunk(b"IEND", b"")


# ---- live servers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """`python -m uvicorn face.web:app_from_env --factory` on a free loopback port."""

    def __init__(self, config: WebConfig):
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="howold-web-", suffix=".log", delete=False)
        env = {**os.environ, CONFIG_ENV: config.to_json(), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "uvicorn", "face.web:app_from_env", "--factory", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def wait_ready(self, timeout: float = 900.0) -> "LiveServer":
        """Wait for /api/health to say ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                health = httpx.get(self.url + "/api/health", timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if health.status_code == 200 and health.json()["status"] == "ready":
                return self
            if health.json().get("status") == "failed":
                raise RuntimeError(f"model failed to load: {health.json()}\n{self.log_tail()}")
            time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


_SHARED: dict[str, LiveServer] = {}
_SHARED_LOCK = threading.Lock()


def launch(name: str, config: WebConfig) -> LiveServer:
    """Start (once per test session) the shared server called `name`; `stop_shared_servers` ends them."""
    with _SHARED_LOCK:
        if name not in _SHARED:
            _SHARED[name] = LiveServer(config)
        return _SHARED[name]


def acquire_server() -> LiveServer:
    """The default-settings server, ready (shared with test_web_browser.py)."""
    return launch("default", WebConfig()).wait_ready()


@pytest.fixture(scope="session", autouse=True)
def stop_shared_servers():
    """At the end of the session (not of a module), so that both test modules share the servers."""
    yield
    with _SHARED_LOCK:
        while _SHARED:
            _SHARED.popitem()[1].stop()


atexit.register(lambda: [server.stop() for server in list(_SHARED.values())])


@pytest.fixture(scope="module")
def server():
    return acquire_server()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as session:
        yield session


def analyze(client, data: bytes, content_type: str = "image/jpeg", **params) -> httpx.Response:
    return client.post("/api/analyze", content=data, headers={"content-type": content_type}, params=params)


# ---- health and start-up ------------------------------------------------------------------


def test_health_when_ready(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["detector"] == WebConfig().detector
    assert isinstance(body["backbone"], str) and body["backbone"]
    assert body["model"] == "dlib-resnet-keras-finetuned"
    assert response.headers["cache-control"] == "no-store"


# ---- models -------------------------------------------------------------------------------


def test_models_lists_the_shipped_ones_with_the_default_marked(client):
    response = client.get("/api/models")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    models = {model["name"]: model for model in response.json()["models"]}
    assert {"dlib-resnet-keras-finetuned", "dlib-resnet"} <= set(models)
    assert [name for name, model in models.items() if model["default"]] == ["dlib-resnet-keras-finetuned"]
    assert models["dlib-resnet"]["backbone"] == "dlib-resnet-keras"
    assert 3 < models["dlib-resnet"]["figures"]["age_mae"] < 8 and 0.85 < models["dlib-resnet"]["figures"]["gender_accuracy"] <= 1
    assert models["dlib-resnet-keras-finetuned"]["figures"]["dataset"] == "utkface"
    assert all("path" not in model for model in models.values())  # no file paths of the server


def test_a_request_chooses_its_model(client):
    default = analyze(client, astronaut_jpeg())
    assert default.status_code == 200 and default.json()["model"] == "dlib-resnet-keras-finetuned"
    named_default = analyze(client, astronaut_jpeg(), model="dlib-resnet-keras-finetuned").json()
    assert named_default["faces"] == default.json()["faces"]
    other = analyze(client, astronaut_jpeg(), model="dlib-resnet")
    assert other.status_code == 200, other.text
    body = other.json()
    assert body["model"] == "dlib-resnet" and len(body["model_id"]) == 16 and body["model_id"] != default.json()["model_id"]
    assert [f["box"] for f in body["faces"]] == [f["box"] for f in default.json()["faces"]]  # the same detector
    assert body["faces"][0]["age"] != default.json()["faces"][0]["age"]  # other heads
    assert client.get("/api/health").json()["model"] == "dlib-resnet-keras-finetuned"  # the default is unchanged


def test_an_unknown_model_is_422_naming_the_known_ones(client):
    response = analyze(client, astronaut_jpeg(), model="no-such-model")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "unknown model 'no-such-model'" in detail and "dlib-resnet" in detail


# ---- analysing photos ---------------------------------------------------------------------


def _check_faces(body: dict, width: int, height: int) -> None:
    assert body["image"] == {"width": width, "height": height}
    assert set(body["timings_ms"]) == {"decode", "detect", "predict", "total", "batched_with"}
    assert all(value >= 0 for value in body["timings_ms"].values())
    assert body["timings_ms"]["total"] >= body["timings_ms"]["detect"]
    for face in body["faces"]:
        left, top, right, bottom = face["box"]
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert 0 <= face["age"] <= 100
        assert face["gender"] in ("male", "female")
        assert face["race"] in face["race_confidences"]
        assert abs(sum(face["race_confidences"].values()) - 1) < 0.01
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in body["faces"]]
    assert areas == sorted(areas, reverse=True)


def test_multipart_upload_of_the_astronaut(client):
    response = client.post("/api/analyze", files={"file": ("astronaut.jpg", astronaut_jpeg(), "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["faces"]) >= 1
    _check_faces(body, 512, 512)
    # her face, the largest, is in the upper middle of the photo
    left, top, right, bottom = body["faces"][0]["box"]
    assert 150 < (left + right) / 2 < 300 and 50 < (top + bottom) / 2 < 200


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream", "image/png; charset=binary"])
def test_raw_body_gives_the_same_answer_as_multipart(client, content_type):
    multipart = client.post("/api/analyze", files={"file": ("a.jpg", astronaut_jpeg(), "image/jpeg")}).json()
    raw = analyze(client, astronaut_jpeg(), content_type)
    assert raw.status_code == 200, raw.text
    assert raw.json()["faces"] == multipart["faces"]


def test_no_face_is_an_empty_list(client):
    response = analyze(client, blank_png(), "image/png")
    assert response.status_code == 200
    assert response.json()["faces"] == []
    assert response.json()["image"] == {"width": 64, "height": 64}


def demo_faces_listed() -> dict[str, int]:
    """file -> number of faces, from the table in ../shared/demo/SOURCES.md."""
    import re

    text = (DEMO / "SOURCES.md").read_text(encoding="utf-8")
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\|\s*([\w.-]+\.(?:jpg|jpeg|png))\s*\|\s*(\d+)\s*\|", text, re.M)}


#: women among the faces of each photo (Marie Curie at Solvay; four of NASA's class of 2013;
#: Michelle, Malia and Sasha Obama), and the youngest age an adult in it may be given
DEMO_WOMEN = {"nasa_sts106_crew_on_iss_2000.jpg": 0, "nasa_astronaut_group21_2013.png": 4, "obama_family_2011.jpg": 3, "solvay_conference_1927.jpg": 1}


@pytest.mark.skipif(not (DEMO / "obama_family_2011.jpg").is_file(), reason="../shared/demo photos absent")
def test_demo_family_photo_parents_and_daughters(client):
    from PIL import Image

    data = (DEMO / "obama_family_2011.jpg").read_bytes()
    response = client.post("/api/analyze", files={"file": ("family.jpg", data, "image/jpeg")}, params={"detector": "hog"})
    assert response.status_code == 200, response.text
    width, height = Image.open(io.BytesIO(data)).size
    body = response.json()
    assert len(body["faces"]) == 4
    _check_faces(body, width, height)
    # left to right: Michelle, Malia, Barack, Sasha
    faces = sorted(body["faces"], key=lambda f: f["box"][0])
    assert [f["gender"] for f in faces] == ["female", "female", "male", "female"]
    parents = [f for f in faces if f["box"][2] - f["box"][0] > 70]  # the parents stand nearer: bigger faces
    daughters = [f for f in faces if f not in parents]
    assert len(parents) == 2 and {f["gender"] for f in parents} == {"male", "female"}
    assert min(f["age"] for f in parents) > max(f["age"] for f in daughters) + 15
    assert all(f["age"] >= 35 for f in parents) and all(f["age"] < 30 for f in daughters)


@pytest.mark.skipif(not DEMO.is_dir(), reason="../shared/demo photos absent")
def test_every_demo_photo_has_all_its_faces_and_their_genders(client):
    listed = demo_faces_listed()
    assert set(DEMO_WOMEN) <= set(listed)
    for name, women in DEMO_WOMEN.items():
        # the default answers are flip-averaged, as every validation figure in the README: without it
        # the default model (UTKFace + FairFace) reads Marie Curie, 1927, male at 0.51 in HOG's box
        response = analyze(client, (DEMO / name).read_bytes(), "application/octet-stream", detector="hog")
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        _check_faces(body, body["image"]["width"], body["image"]["height"])
        # HOG misses at most one face of the crowd of 29 (it found 28 or 29 as detection defaults changed)
        assert listed[name] - (listed[name] > 20) <= len(body["faces"]) <= listed[name], name
        assert sum(f["gender"] == "female" for f in body["faces"]) == women, (name, [f["gender"] for f in body["faces"]])
        if name != "obama_family_2011.jpg":  # adults only
            ages = [f["age"] for f in body["faces"]]
            assert min(ages) >= 20 and statistics.median(ages) >= 25, (name, ages)


def test_query_options(client):
    plain = analyze(client, astronaut_jpeg()).json()
    flipped = analyze(client, astronaut_jpeg(), tta=["flip"])
    assert flipped.status_code == 200
    assert [f["box"] for f in flipped.json()["faces"]] == [f["box"] for f in plain["faces"]]
    assert flipped.json()["faces"] == plain["faces"]  # flip is the default
    mirrorless = analyze(client, astronaut_jpeg(), tta=["none"])
    assert mirrorless.status_code == 200 and mirrorless.json()["faces"][0]["gender_confidence"] != plain["faces"][0]["gender_confidence"]
    # a second analyzer, built on first use; on a crop around her face, as the CNN is slow on CPUs
    from skimage import data

    # (with TTA, so that the variant builds its base analyzer first)
    cnn = analyze(client, _jpeg(data.astronaut()[40:200, 130:290].copy()), detector="cnn", tta=["flip"])
    assert cnn.status_code == 200, cnn.text
    assert len(cnn.json()["faces"]) == 1
    assert client.get("/api/health").json()["detector"] == "yunet"  # the default is unchanged


@pytest.mark.parametrize("params", [{"detector": "mtcnn"}, {"tta": "rotate"}])
def test_invalid_options_are_422_with_a_message(client, params):
    response = analyze(client, astronaut_jpeg(), **params)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]


# ---- bad uploads --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, content_type, words",
    [
        (b"hello, this is text", "application/octet-stream", "not an image"),
        (b"", "image/jpeg", "empty"),
        (None, "image/jpeg", "corrupt or truncated"),  # the first half of the astronaut
        (b"hello", "text/plain", "unsupported content type"),
        (b'{"image": "astronaut.jpg"}', "application/json", "unsupported content type"),
    ],
)
def test_not_an_image_is_415_with_the_reason(client, data, content_type, words):
    if data is None:
        data = astronaut_jpeg()[: len(astronaut_jpeg()) // 2]
    response = analyze(client, data, content_type)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["detail"]


def test_text_file_in_the_form_is_415(client):
    response = client.post("/api/analyze", files={"file": ("notes.txt", b"not a photo", "text/plain")})
    assert response.status_code == 415
    assert "not an image" in response.json()["detail"]


def test_form_without_a_file_field_is_422(client):
    response = client.post("/api/analyze", files={"photo": ("a.jpg", astronaut_jpeg(), "image/jpeg")})
    assert response.status_code == 422
    assert "`file`" in response.json()["detail"]


FORM = b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'


@pytest.mark.parametrize(
    "body",
    [
        b"--nope\r\ngarbage",  # not the announced boundary
        b"",  # nothing at all
        b"--abc\r\ngarbage",  # a part whose headers never end
        None,  # a whole form cut short before its closing boundary
    ],
)
def test_malformed_multipart_is_400(client, body):
    """Not valid multipart is 400; a valid form without a `file` field is 422 (the next test)."""
    if body is None:
        body = FORM + blank_png() + b"\r\n--ab"
    response = client.post("/api/analyze", content=body, headers={"content-type": "multipart/form-data; boundary=abc"})
    assert response.status_code == 400, response.text
    assert "malformed multipart" in response.json()["detail"]
    whole = client.post("/api/analyze", content=FORM + blank_png() + b"\r\n--abc--\r\n", headers={"content-type": "multipart/form-data; boundary=abc"})
    assert whole.status_code == 200, whole.text  # the same form, complete


def test_multipart_without_a_boundary_is_400(client):
    response = client.post("/api/analyze", content=FORM, headers={"content-type": "multipart/form-data"})
    assert response.status_code == 400 and "boundary" in response.json()["detail"]


@pytest.mark.parametrize("width, height", [(9_000, 9_000), (20_000, 20_000)])
def test_decompression_bomb_is_413_unread(client, width, height):
    """81 MP (over our 80 MP, under Pillow's 89.5 MP) and 400 MP: refused from the header."""
    response = analyze(client, header_only_png(width, height), "image/png")
    assert response.status_code == 413, response.text
    assert "decompression bomb" in response.json()["detail"]
    small = analyze(client, header_only_png(100, 100), "image/png")  # the control: read, and corrupt
    assert small.status_code == 415 and "corrupt or truncated" in small.json()["detail"]


# ---- size limits --------------------------------------------------------------------------


def test_declared_oversize_upload_is_413_before_the_body_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(
            b"POST /api/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {LIMIT + 1}\r\n\r\n".encode()
            + astronaut_jpeg()[:1000]  # and nothing more: the answer must not wait for the rest
        )
        status, headers, body = http_response(sock)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert "limit" in json.loads(body)["detail"]


def test_upload_just_over_the_limit_is_413_for_an_ordinary_client(client):
    response = analyze(client, b"\xff\xd8" + b"\x00" * LIMIT, "image/jpeg")
    assert response.status_code == 413
    assert "10 MiB" in response.json()["detail"]


def test_upload_just_under_the_limit_is_read(client):
    data = astronaut_jpeg()
    padded = data + b"\x00" * (LIMIT - len(data))  # trailing bytes after the JPEG's end marker
    response = analyze(client, padded, "image/jpeg")
    assert response.status_code == 200, response.text


# ---- concurrency, queue and deadline ------------------------------------------------------


def test_concurrent_requests_all_succeed_within_the_queue(server):
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: httpx.post(server.url + "/api/analyze", content=astronaut_jpeg(), headers={"content-type": "image/jpeg"}, timeout=120), range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert len({json.dumps(r.json()["faces"]) for r in responses}) == 1


# ---- headers, page and spec ---------------------------------------------------------------


def test_no_cors_headers_by_default(client):
    origin = {"Origin": "https://elsewhere.example"}
    assert "access-control-allow-origin" not in client.get("/api/health", headers=origin).headers
    preflight = client.options("/api/analyze", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    posted = client.post("/api/analyze", content=blank_png(), headers={**origin, "content-type": "image/png"})
    assert "access-control-allow-origin" not in posted.headers


def test_page_is_self_contained(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for marker in ('id="file-input"', 'id="photo"', 'id="results"', 'id="error"', "/api/analyze"):
        assert marker in page
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched from elsewhere
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_openapi_documents_the_body_and_the_errors(client):
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/api/analyze"]["post"]
    content = operation["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["required"] == ["file"]
    assert {"image/*", "application/octet-stream"} <= set(content)
    assert {"200", "400", "413", "415", "422", "500", "503", "504"} <= set(operation["responses"])
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert {"200", "503"} <= set(spec["paths"]["/api/health"]["get"]["responses"])
    assert {"200", "500"} <= set(spec["paths"]["/api/models"]["get"]["responses"])
    assert "model" in {parameter["name"] for parameter in operation["parameters"]}
    assert "/" not in spec["paths"]


def test_config_travels_through_the_environment():
    config = WebConfig(detector="cnn", max_queue=3, cors_origins=("https://a.example",))
    assert WebConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown settings"):
        WebConfig.from_json('{"max_queues": 3}')
    with pytest.raises(ValueError, match="detector"):
        WebConfig(detector="mtcnn")


def test_cors_only_when_asked():
    import anyio

    from face.web import create_app

    app = create_app(WebConfig(cors_origins=("https://a.example",)))

    async def get(origin: str) -> httpx.Response:
        # straight into the ASGI app; its lifespan (and so the model) never starts: health says loading
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as session:
            return await session.get("/api/health", headers={"Origin": origin})

    allowed = anyio.run(get, "https://a.example")
    assert allowed.status_code == 503
    assert allowed.headers["access-control-allow-origin"] == "https://a.example"
    assert "access-control-allow-origin" not in anyio.run(get, "https://b.example").headers


# ---- property-based fuzzing of the whole API ----------------------------------------------

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402


# The document comes from the app itself (building it loads no model), so that the tests
# exist at collection time; the live server must serve exactly this document. (The lazy
# `schemathesis.pytest.from_fixture` loader breaks on pytest >= 9.1: it sets Item._nodeid.)
def _spec() -> dict:
    from face.web import create_app

    return create_app(WebConfig()).openapi()


schema = schemathesis.openapi.from_dict(_spec())


def test_the_fuzzed_document_is_the_live_one(client):
    assert client.get("/openapi.json").json() == _spec()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_never_get_a_server_error(case, server):
    case.call_and_validate(base_url=server.url, checks=[not_a_server_error], timeout=60)
