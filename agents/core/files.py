"""Checksums of files: how a published dataset or a stored model is known to be the file that was written."""
import hashlib
from pathlib import Path


def file_sha256(path: Path | str) -> str:
    """Return the sha256 of a file's bytes."""
    with open(path, "rb") as handle:
        return stream_sha256(handle)


def stream_sha256(handle) -> str:
    """Return the sha256 of the bytes an open binary file (anything with ``read``) gives from where it stands."""
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()
