"""The web app's request-limit helpers on their own: counting a body while it arrives, and
taking the `file` out of a multipart body in memory. Real Starlette requests fed by an ASGI
receive channel; no model, no server (the live ones are in test_web*.py).
"""
from __future__ import annotations

import anyio
import pytest
from fastapi import HTTPException
from starlette.requests import Request

from face.web.settings import MiB
from face.web.uploads import _media_type, _multipart_file, _read_body, _size


def request_sending(chunks: list[bytes], disconnect_after: int | None = None, headers: dict | None = None):
    """A POST whose body arrives as `chunks`, and the list of how many were taken."""
    taken: list[int] = []

    async def receive():
        index = len(taken)
        taken.append(index)
        if disconnect_after is not None and index >= disconnect_after:
            return {"type": "http.disconnect"}
        if index < len(chunks):
            return {"type": "http.request", "body": chunks[index], "more_body": index < len(chunks) - 1}
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/api/analyze", "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()], "query_string": b""}
    return Request(scope, receive), taken


def read(chunks: list[bytes], limit: int, **options) -> tuple[bytes | HTTPException, int]:
    request, taken = request_sending(chunks, **options)

    async def go():
        try:
            return await _read_body(request, limit)
        except HTTPException as error:
            return error

    return anyio.run(go), len(taken)


def test_a_body_at_the_limit_is_read_whole():
    body, taken = read([b"a" * 100, b"b" * 100, b"c" * 50], limit=250)
    assert body == b"a" * 100 + b"b" * 100 + b"c" * 50 and taken == 3


def test_a_body_one_byte_over_the_limit_is_413_naming_the_limit():
    error, _ = read([b"a" * 100, b"b" * 100, b"c" * 51], limit=250)
    assert isinstance(error, HTTPException) and error.status_code == 413
    assert error.detail == "upload larger than the limit of 250 bytes"
    error, _ = read([b"x" * (2 * MiB + 1)], limit=2 * MiB)
    assert error.status_code == 413 and error.detail == "upload larger than the limit of 2 MiB"


def test_reading_stops_at_the_chunk_that_passes_the_limit():
    error, taken = read([b"a" * 100] * 50, limit=250)
    assert error.status_code == 413
    assert taken == 3  # the third chunk passed 250 bytes; the 47 others were never asked for


def test_an_interrupted_upload_is_400():
    error, _ = read([b"a" * 100] * 5, limit=10_000, disconnect_after=2)
    assert isinstance(error, HTTPException) and error.status_code == 400 and error.detail == "the upload was interrupted"


def test_empty_body_is_empty():
    body, _ = read([b""], limit=10)
    assert body == b""


@pytest.mark.parametrize(
    "n, text",
    [(10 * MiB, "10 MiB"), (MiB, "1 MiB"), (MiB + MiB // 2, "1.5 MiB"), (MiB - 1, "1,048,575 bytes"), (1000, "1,000 bytes"), (0, "0 bytes")],
)
def test_sizes_in_words(n, text):
    assert _size(n) == text


@pytest.mark.parametrize(
    "header, media_type",
    [("Image/PNG; charset=binary", "image/png"), ("image/png; a=1; b=2", "image/png"), ("multipart/form-data; boundary=x", "multipart/form-data"), (" application/octet-stream ", "application/octet-stream"), (None, "")],
)
def test_media_type(header, media_type):
    request, _ = request_sending([], headers={} if header is None else {"content-type": header})
    assert _media_type(request) == media_type


# ---- multipart ---------------------------------------------------------------------------------

TYPE = "multipart/form-data; boundary=XyZ"


def part(name: str, data: bytes, filename: str | None = "a.jpg", header_case: str = "Content-Disposition") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--XyZ\r\n{header_case}: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--XyZ--\r\n"


def refused(body: bytes, content_type: str = TYPE) -> HTTPException:
    with pytest.raises(HTTPException) as caught:
        _multipart_file(body, content_type)
    return caught.value


def test_the_file_field_is_returned_byte_for_byte():
    data = bytes(range(256)) * 40 + b"\r\n--Xy not the boundary\r\n"
    assert _multipart_file(form(part("file", data)), TYPE) == data
    assert _multipart_file(form(part("note", b"hello", None), part("file", b"photo")), TYPE) == b"photo"  # not first
    assert _multipart_file(form(part("file", b"first"), part("file", b"second")), TYPE) == b"first"
    assert _multipart_file(form(part("file", b"lower", header_case="content-disposition")), TYPE) == b"lower"
    assert _multipart_file(form(part("file", b"")), TYPE) == b""


def test_a_form_without_a_file_field_is_422():
    error = refused(form(part("photo", b"data"), part("files", b"data")))
    assert error.status_code == 422 and error.detail == "the multipart form has no `file` field; send the photo as `file`"


def test_part_headers_in_any_order_and_parts_without_a_name():
    """Content-Type before Content-Disposition; a part with no Content-Disposition is passed over."""
    swapped = b'--XyZ\r\nContent-Type: image/jpeg\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\nphoto\r\n'
    nameless = b"--XyZ\r\nContent-Type: text/plain\r\n\r\nwho am I\r\n"
    assert _multipart_file(form(nameless, swapped), TYPE) == b"photo"
    assert refused(form(nameless)).status_code == 422


@pytest.mark.parametrize(
    "body, words",
    [
        (b"--nope\r\ngarbage", "malformed multipart"),
        (b"", "closing boundary"),
        (b"--XyZ\r\ngarbage", "closing boundary"),
        (part("file", b"data") + b"--Xy", "closing boundary"),
        (part("file", b"data"), "closing boundary"),
    ],
)
def test_malformed_or_cut_short_multipart_is_400(body, words):
    error = refused(body)
    assert error.status_code == 400 and words in error.detail
    if words == "closing boundary":
        assert error.detail == "malformed multipart/form-data body (it ends before its closing boundary)"


def test_multipart_without_a_boundary_is_400():
    error = refused(form(part("file", b"data")), "multipart/form-data")
    assert error.status_code == 400 and error.detail == "multipart/form-data without a boundary"
