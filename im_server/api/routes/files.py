"""Uploading and downloading files (the blobs that image, file, voice and video messages carry)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from im_schema.content import BlobId, FileName
from im_schema.errors import ErrorCode
from im_schema.files import DownloadRequest, FileLimits, FileLimitsRequest, Upload, UploadRequest

from ...errors import RangeNotSatisfiable, UnsupportedMedia
from ...media import AUDIO_TYPES, IMAGE_TYPES, VIDEO_TYPES
from ...services.files import clean_name, default_name
from ..contract import error_responses, route
from ..deps import FileDep, PrincipalDep, parse
from ..ranges import Unsatisfiable, content_disposition, parse_range

__all__ = ["router"]

router = APIRouter(tags=["files"])

_INLINE = IMAGE_TYPES | AUDIO_TYPES | VIDEO_TYPES
"""Types a browser may show in place; everything else is offered for saving."""


_RAW_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes, as they are (not a form).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@route(router, UploadRequest, query=True, openapi_extra=_RAW_BODY, errors=(415, 422))
async def upload(params: UploadRequest, request: Request, files: FileDep, principal: PrincipalDep) -> Upload:
    """Store a file sent as the raw request body (not a form), streamed.

    ``kind`` (``image``, ``file``, ``voice``, ``video``) says what the bytes must be; without it the
    server picks from the content. The answer, once the file is durable, says what the server read from
    the bytes; send it with ``{"kind": ..., "blob": ...}`` as a message content. Limits: ``GET
    /v1/files/limits``.
    """
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/") or content_type.startswith("application/x-www-form-urlencoded"):
        raise UnsupportedMedia("send the file's bytes as the request body, not as a form")
    length = request.headers.get("content-length", "")
    return await files.upload(
        principal.user_id,
        request.stream(),
        kind=params.kind,
        name=params.name,
        declared_length=int(length) if length.isdigit() else None,
    )


@route(router, FileLimitsRequest)
async def limits(_: FileLimitsRequest, files: FileDep, principal: PrincipalDep) -> FileLimits:
    """The largest upload of each kind and the refused types, for clients to check before uploading."""
    return files.limits()


_BYTES = {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
"""The file's bytes, with the media type the server read from them."""


@router.api_route(
    "/v1/files/{blob}",
    methods=["HEAD"],
    response_class=Response,
    operation_id="DownloadHead",
    summary="A file's size and headers, without its bytes",
    responses={200: {"description": "The headers of the whole file."}, **error_responses(416)},
    openapi_extra={"security": [{"bearer": []}]},
)
@router.api_route(
    "/v1/files/{blob}",
    methods=["GET"],
    response_class=Response,
    operation_id="Download",
    summary="Download a file",
    responses={
        200: {"description": "The whole file.", **_BYTES},
        206: {"description": "The part of the file the `Range` header asked for.", **_BYTES},
        **error_responses(416),
    },
    openapi_extra={"security": [{"bearer": []}]},
)
async def download(
    blob: Annotated[BlobId, Path()],
    request: Request,
    files: FileDep,
    principal: PrincipalDep,
    name: Annotated[FileName | None, Query()] = None,
) -> Response:
    """A file's bytes, for its uploader and for members of conversations where it was sent.

    Supports one ``Range`` (``206``, ``Content-Range``; ``416`` beyond the end) and ``If-Range`` with
    the ``ETag`` (the blob id). ``name`` sets the name in ``Content-Disposition``.
    """
    params = parse(DownloadRequest, blob=blob, name=name)
    usable = await files.authorize(principal.user_id, params.blob)
    record = usable.blob
    size = record.size
    etag = f'"{record.id}"'
    media_type = record.media_type
    if media_type.startswith("text/") and "charset" not in media_type:
        media_type += "; charset=utf-8"
    disposition = "inline" if record.media_type in _INLINE else "attachment"
    filename = clean_name(params.name) or usable.uploaded_as or default_name(record.kind, record.id, record.media_type)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, max-age=31536000, immutable",
        "Content-Disposition": content_disposition(disposition, filename),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }
    if_range = request.headers.get("if-range")
    wanted = request.headers.get("range") if if_range is None or if_range.strip() == etag else None
    try:
        byte_range = parse_range(wanted, size)
    except Unsatisfiable:
        error = RangeNotSatisfiable(f"the file has {size} bytes", code=ErrorCode.RANGE_NOT_SATISFIABLE)
        return JSONResponse(error.envelope(), status_code=error.status, headers={"Content-Range": f"bytes */{size}"})
    status = 200
    offset, length = 0, size
    if byte_range is not None:
        status = 206
        offset, length = byte_range.start, byte_range.length
        headers["Content-Range"] = byte_range.content_range(size)
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    body = await files.read(record.id, offset, length)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=media_type)
