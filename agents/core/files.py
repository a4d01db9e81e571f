"""Checksums of files: how a published dataset or a stored model is known to be the file that was written."""
import hashlib
from pathlib import Path


def file_sha256(path: Path | str) -> str:
    """Return the sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
