"""face.download against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import face.download as download_module
from face.download import DownloadError, download
from face.errors import HowoldError, WeightsError

try:
    from http_server import FileServer, file_server, unused_port  # noqa: F401  (pytest fixture)
except ImportError:  # tests/ is a package
    from tests.http_server import FileServer, file_server, unused_port  # noqa: F401

PAYLOAD = os.urandom(300_000)  # several chunks


@pytest.fixture
def served(file_server: FileServer) -> FileServer:
    (file_server.root / "blob.bin").write_bytes(PAYLOAD)
    return file_server


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_downloads_whole_file(served: FileServer, tmp_path: Path) -> None:
    destination = tmp_path / "out" / "blob.bin"
    assert download(served.url("blob.bin"), destination, expected_size=len(PAYLOAD), progress=False) == destination
    assert destination.read_bytes() == PAYLOAD
    assert leftovers(destination.parent) == ["blob.bin"]  # no temporary file left behind


def test_downloads_without_expected_size(served: FileServer, tmp_path: Path) -> None:
    destination = tmp_path / "blob.bin"
    download(served.url("blob.bin"), destination, progress=True)
    assert destination.read_bytes() == PAYLOAD


def test_404_names_url_and_status(served: FileServer, tmp_path: Path) -> None:
    url = served.url("missing.bin")
    with pytest.raises(DownloadError) as caught:
        download(url, tmp_path / "missing.bin", progress=False)
    assert url in str(caught.value) and "HTTP 404" in str(caught.value)
    assert isinstance(caught.value, WeightsError) and isinstance(caught.value, HowoldError)
    assert leftovers(tmp_path) == ["served"]


def test_connection_refused(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}/files/blob.bin"
    with pytest.raises(WeightsError, match="could not download .*127.0.0.1"):
        download(url, tmp_path / "blob.bin", progress=False)
    assert leftovers(tmp_path) == []


def test_wrong_expected_size_keeps_nothing(served: FileServer, tmp_path: Path) -> None:
    url = served.url("blob.bin")
    with pytest.raises(WeightsError, match=r"has the wrong size: got 300,000 bytes, expected 1,000") as caught:
        download(url, tmp_path / "blob.bin", expected_size=1000, progress=False)
    assert url in str(caught.value)
    with pytest.raises(WeightsError, match=r"is incomplete: got 300,000 bytes, expected 400,000"):
        download(url, tmp_path / "blob.bin", expected_size=400_000, progress=False)
    assert leftovers(tmp_path) == ["served"]


def test_connection_dropped_before_content_length(served: FileServer, tmp_path: Path) -> None:
    url = served.url("blob.bin", route="truncated")
    with pytest.raises(WeightsError, match=r"incomplete: connection closed after 150,000 of 300,000 bytes"):
        download(url, tmp_path / "blob.bin", progress=False)
    assert leftovers(tmp_path) == ["served"]


def test_short_body_without_content_length_caught_by_expected_size(served: FileServer, tmp_path: Path) -> None:
    url = served.url("blob.bin", route="nolength")
    with pytest.raises(WeightsError, match=r"incomplete: got 150,000 bytes, expected 300,000"):
        download(url, tmp_path / "blob.bin", expected_size=len(PAYLOAD), progress=False)
    assert leftovers(tmp_path) == ["served"]


def test_interrupted_download_leaves_no_file(served: FileServer, tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C half way: the exception propagates and neither the file nor its temporary remains."""

    class InterruptingBar:
        def __init__(self, *args, **kwargs) -> None:
            self.seen = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def update(self, count: int) -> None:
            self.seen += count
            if self.seen > len(PAYLOAD) // 3:
                raise KeyboardInterrupt

    monkeypatch.setattr(download_module, "tqdm", InterruptingBar)
    with pytest.raises(KeyboardInterrupt):
        download(served.url("blob.bin"), tmp_path / "blob.bin", progress=False)
    assert leftovers(tmp_path) == ["served"]


def test_failed_download_keeps_previous_file(served: FileServer, tmp_path: Path) -> None:
    destination = tmp_path / "blob.bin"
    destination.write_bytes(b"old, good copy")
    with pytest.raises(WeightsError):
        download(served.url("blob.bin", route="truncated"), destination, progress=False)
    assert destination.read_bytes() == b"old, good copy"
    assert leftovers(tmp_path) == ["blob.bin", "served"]


def test_pinned_sha256(served: FileServer, tmp_path: Path) -> None:
    import hashlib

    destination = tmp_path / "blob.bin"
    download(served.url("blob.bin"), destination, progress=False, sha256=hashlib.sha256(PAYLOAD).hexdigest().upper())
    assert destination.read_bytes() == PAYLOAD
    destination.unlink()
    with pytest.raises(DownloadError, match=r"has sha256 [0-9a-f]{64}, expected a{64}: not the pinned file"):
        download(served.url("blob.bin"), destination, progress=False, sha256="a" * 64)
    assert leftovers(tmp_path) == ["served"]
