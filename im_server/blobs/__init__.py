"""Blob stores: where the bytes of uploaded files live (see :mod:`im_server.blobs.base`).

:func:`open_blob_store` builds the one the settings name: the NATS JetStream object store
``<prefix>_files`` (the default), or an S3-compatible bucket (``IM_BLOB_STORE=s3``).
"""

from __future__ import annotations

from nats.js import JetStreamContext

from ..settings import Settings
from .base import BlobNotFound, BlobStore, BlobStoreError
from .jetstream import JetStreamBlobStore

__all__ = ["BlobNotFound", "BlobStore", "BlobStoreError", "JetStreamBlobStore", "open_blob_store"]


def open_blob_store(settings: Settings, js: JetStreamContext) -> BlobStore:
    """The blob store the settings name (not started yet)."""
    if settings.blob_store == "s3":
        from .s3 import S3BlobStore

        if not settings.s3_bucket:
            raise ValueError("IM_BLOB_STORE=s3 needs IM_S3_BUCKET")
        secret = settings.s3_secret_access_key
        prefix = settings.s3_key_prefix
        return S3BlobStore(
            bucket=settings.s3_bucket,
            prefix=f"{settings.subject_prefix}/files/" if prefix is None else prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
    replicas = settings.blob_replicas or settings.nats_replicas
    return JetStreamBlobStore(
        js, f"{settings.subject_prefix}_files", replicas=replicas, chunk_size=settings.blob_chunk_size
    )
