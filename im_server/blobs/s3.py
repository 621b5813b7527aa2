"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...), through aiobotocore.

Install with the ``s3`` extra (``pip install 'imkit[server,s3]'``) and set ``IM_BLOB_STORE=s3``. Objects are
named ``<prefix><first two hex digits>/<sha256>``. Each upload carries its SHA-256 checksum, which the
store verifies before it answers; files over :data:`PART_SIZE` go up as a multipart upload (one part in
memory at a time) that is aborted if anything fails. S3 acknowledges a write once it is durable.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import BlobNotFound, BlobStore, BlobStoreError

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

__all__ = ["PART_SIZE", "S3BlobStore"]

PART_SIZE = 8 * 1024 * 1024
"""Files up to this size are one ``PutObject``; larger ones are uploaded in parts of this size."""
_READ = 256 * 1024


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class S3BlobStore(BlobStore):
    """Blobs in one S3 bucket, under a key prefix."""

    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._endpoint_url = endpoint_url
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._part_size = part_size
        self._exit = contextlib.AsyncExitStack()
        self._client: S3Client | None = None

    async def start(self) -> None:
        """Open the client and check that the bucket answers."""
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise BlobStoreError("IM_BLOB_STORE=s3 needs the s3 extra: pip install 'imkit[server,s3]'") from exc
        config = AioConfig(
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if self._endpoint_url else {},
        )
        self._client = await self._exit.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self._endpoint_url,
                region_name=self._region,
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                config=config,
            )
        )
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            await self.close()
            raise BlobStoreError(f"S3 bucket {self.bucket!r} is not reachable: {exc}") from exc

    async def close(self) -> None:
        """Close the client."""
        await self._exit.aclose()
        self._client = None

    @property
    def client(self) -> S3Client:
        """The S3 client (after :meth:`start`)."""
        assert self._client is not None, "start() first"
        return self._client

    def key(self, blob: str) -> str:
        """The object key of a blob."""
        return f"{self.prefix}{blob[:2]}/{blob}"

    async def size(self, blob: str) -> int | None:
        """``HeadObject``: the size, or ``None``."""
        from botocore.exceptions import ClientError

        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=self.key(blob))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise BlobStoreError(f"S3: {exc}") from exc
        return int(head["ContentLength"])

    async def put(self, blob: str, path: Path, *, size: int, media_type: str) -> bool:
        """``PutObject`` or a multipart upload, each verified by the store with the SHA-256."""
        if await self.size(blob) is not None:
            return False
        try:
            if size <= self._part_size:
                data = await asyncio.to_thread(path.read_bytes)
                await self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key(blob),
                    Body=data,
                    ContentType=media_type,
                    ChecksumSHA256=_b64(binascii.unhexlify(blob)),
                )
            else:
                await self._multipart(blob, path, media_type)
        except BlobStoreError:
            raise
        except Exception as exc:
            raise BlobStoreError(f"S3: {exc}") from exc
        return True

    async def _multipart(self, blob: str, path: Path, media_type: str) -> None:
        key = self.key(blob)
        created = await self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=media_type, ChecksumAlgorithm="SHA256"
        )
        upload_id = created["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            with path.open("rb") as file:
                number = 1
                while True:
                    data = await asyncio.to_thread(file.read, self._part_size)
                    if not data:
                        break
                    checksum = _b64(hashlib.sha256(data).digest())
                    answer = await self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                        ChecksumSHA256=checksum,
                    )
                    parts.append({"ETag": answer["ETag"], "PartNumber": number, "ChecksumSHA256": checksum})
                    number += 1
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]  # built above
            )
        except BaseException:
            with contextlib.suppress(Exception):
                abort = self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                await asyncio.shield(abort)
            raise

    async def read(self, blob: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """``GetObject`` with a ``Range``."""
        from botocore.exceptions import ClientError

        total = await self.size(blob)
        if total is None:
            raise BlobNotFound(blob)
        end = total if length is None else min(total, offset + length)
        if offset >= end:
            return _empty()
        try:
            answer = await self.client.get_object(
                Bucket=self.bucket, Key=self.key(blob), Range=f"bytes={offset}-{end - 1}"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise BlobNotFound(blob) from exc
            raise BlobStoreError(f"S3: {exc}") from exc
        return _stream(answer["Body"])

    async def delete(self, blob: str) -> bool:
        """``DeleteObject``."""
        if await self.size(blob) is None:
            return False
        await self.client.delete_object(Bucket=self.bucket, Key=self.key(blob))
        return True


async def _stream(body: Any) -> AsyncIterator[bytes]:
    async with body as stream:
        while True:
            data = await stream.read(_READ)
            if not data:
                return
            yield data


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""
