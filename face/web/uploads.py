"""Reading uploads, in memory: the body counted while it arrives (a chunked upload cannot
pass the limit), multipart bodies parsed with python-multipart without spooling to disk."""
from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

from .settings import MiB


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload larger than the limit of {_size(limit)}")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(400, "the upload was interrupted") from None
    return b"".join(chunks)


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """The `file` field of a multipart/form-data body (the first one, if repeated)."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "multipart/form-data without a boundary")
    parts: list[tuple[bytes, bytearray]] = []
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}
    current: dict[str, Any] = {}

    def on_part_begin() -> None:
        current.clear()
        current.update(name=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        if bytes(header["field"]).lower() == b"content-disposition":
            current["name"] = parse_options_header(bytes(header["value"]))[1].get(b"name", b"")
        header["field"], header["value"] = bytearray(), bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append((current["name"], current["data"]))

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError, TypeError) as error:
        raise HTTPException(400, f"malformed multipart/form-data body ({error})") from None
    if parser.state != MultipartState.END:  # cut short: no closing boundary (the parser does not complain)
        raise HTTPException(400, "malformed multipart/form-data body (it ends before its closing boundary)")
    for name, data in parts:
        if name == b"file":
            return bytes(data)
    raise HTTPException(422, "the multipart form has no `file` field; send the photo as `file`")


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n:,} bytes"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
