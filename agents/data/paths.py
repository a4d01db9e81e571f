"""Paths under the data root: every file a pipeline reads or writes is resolved here, and refused if it leads out.

``data_path_problem`` is the pure check (what the text of a path says); ``data_path_resolve`` adds what the
file system says: where links lead, and whether the file is there.
"""
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings

from agents.exceptions import DataPathError


def data_root() -> Path:
    """The data root (``AGENTS_DATA_ROOT``), created if missing, with links resolved."""
    root = Path(settings.AGENTS_DATA_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


#: The folders of the data root that pipelines write: published datasets and failing rows. A source names a file
#: of neither: a dataset is read by name (``kind: dataset``), which checks its team and its checksum; a path would
#: read another team's (their paths are predictable, ``datasets/<name>/run-<id>.parquet``).
MANAGED_FOLDERS = ("datasets", "quality")
_MANAGED_REFUSAL = ("it is under {folder}/, where pipelines publish: read a published dataset with "
                    "{{kind: dataset, name: ...}}, which checks its team and checksum")


def data_path_problem(path: Any) -> str | None:
    """Why the text of ``path`` is refused (empty, absolute, '..', under a folder pipelines write), or None; looks
    at no file."""
    problem = _path_text_problem(path)
    if problem is None:
        parts = [part for part in PurePosixPath(path).parts if part != "."]
        if parts and parts[0] in MANAGED_FOLDERS:
            return _MANAGED_REFUSAL.format(folder=parts[0])
    return problem


def _path_text_problem(path: Any) -> str | None:
    """Why the text of ``path`` is refused (empty, absolute, '..'), or None."""
    if not isinstance(path, str) or not path.strip():
        return "must be a non-empty path relative to the data root"
    if "\x00" in path:
        return "contains a NUL character"
    if PurePosixPath(path).is_absolute():
        return "absolute paths are refused; give a path relative to the data root"
    if ".." in PurePosixPath(path).parts:
        return "'..' is refused; give a path inside the data root"
    return None


def data_path_resolve(path: str, *, where: str = "path", must_exist: bool = True, published: bool = False) -> Path:
    """The absolute location of ``path`` under the data root, links followed; ``DataPathError`` if refused. Only
    with ``published`` (a dataset read by name, whose path the project stored) may it lie under a folder pipelines
    write (``MANAGED_FOLDERS``)."""
    problem = _path_text_problem(path)  # a path into MANAGED_FOLDERS is refused below, where a link leads too
    if problem:
        raise DataPathError(f"{where}: {path!r} is refused: {problem}")
    root = data_root()
    try:
        resolved = (root / path).resolve(strict=False)
    except (OSError, RuntimeError) as error:  # a link loop
        raise DataPathError(f"{where}: {path!r} cannot be resolved: {error}") from None
    if not resolved.is_relative_to(root):
        raise DataPathError(f"{where}: {path!r} is refused: it leads outside the data root (through a link)")
    inside = resolved.relative_to(root).parts
    if not published and inside and inside[0] in MANAGED_FOLDERS:
        raise DataPathError(f"{where}: {path!r} is refused: {_MANAGED_REFUSAL.format(folder=inside[0])}")
    try:
        missing = must_exist and not resolved.exists()
    except OSError as error:  # a name too long for the file system
        raise DataPathError(f"{where}: {path[:100]!r} cannot be read: {error.strerror or error}") from None
    if missing:
        raise DataPathError(f"{where}: {path!r} not found under the data root")
    return resolved


def data_path_relative(path: Path) -> str:
    """``path`` (absolute, under the data root) as the posix path relative to the root that models store."""
    root = data_root()
    resolved = Path(path).resolve(strict=False)
    if not resolved.is_relative_to(root):
        raise DataPathError(f"{str(path)!r} is not under the data root")
    return resolved.relative_to(root).as_posix()
