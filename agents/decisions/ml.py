"""The ML fallback: features from a declared spec, a scikit-learn classifier, saved safely.

Models are written with skops (never pickle or joblib) and their sha256 is
checked before every load; skops refuses any type not trusted at save time.
Pure: no Django.
"""
import json
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from agents.expressions.compiler import extract_fields
from agents.decisions.ruleset import Feature, decision_label
from agents.core.files import file_sha256
from agents.exceptions import ModelError

#: Types a model file may contain beyond skops' defaults; anything else is refused at load.
ALLOWED_TRUSTED_TYPES: frozenset[str] = frozenset()
MIN_TRAINING_ROWS = 10


@dataclass(frozen=True)
class TrainedModel:
    """What training produced: the file, its checksum, the classes and how well it did."""

    path: Path
    sha256: str
    classes: list[str]
    metrics: dict
    trusted_types: list[str]


def featurize(context: dict, features: tuple[Feature, ...]) -> list[float]:
    """Turn a context into the model's numbers: numbers as they are, booleans as 0/1, categories one-hot."""
    values = extract_fields(context, [feature.name for feature in features])
    row: list[float] = []
    for feature in features:
        value = values.get(feature.name)
        if feature.type == "category":
            row.extend(1.0 if value == option else 0.0 for option in feature.values)
        elif feature.type == "boolean":
            row.append(1.0 if value is True else 0.0)
        else:
            row.append(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0)
    return row


def model_train(*, rows: list[tuple[dict, Any]], features: tuple[Feature, ...], path: Path) -> TrainedModel:
    """Train a classifier on (context, decision) rows and save it to ``path`` with skops."""
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    if len(rows) < MIN_TRAINING_ROWS:
        raise ModelError(f"{len(rows)} labelled contexts; at least {MIN_TRAINING_ROWS} are needed to train")
    x = np.array([featurize(context, features) for context, _ in rows], dtype=float)
    y = np.array([decision_label(decision) for _, decision in rows])
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise ModelError(f"every labelled context has the decision {classes[0]}; at least two decisions are needed")
    counts = {label: int((y == label).sum()) for label in classes}
    stratify = y if min(counts.values()) >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=stratify)
    model = LogisticRegression(max_iter=1000)
    model.fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test)) if len(y_test) else None
    model.fit(x, y)  # the served model learns from every row; the holdout score above is the honest one
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(model, path)
    untrusted = sio.get_untrusted_types(file=path)
    refused = sorted(set(untrusted) - ALLOWED_TRUSTED_TYPES)
    if refused:
        path.unlink()
        raise ModelError(f"the trained model holds types skops does not trust: {', '.join(refused)}")
    return TrainedModel(
        path=path,
        sha256=file_sha256(path),
        classes=[str(c) for c in model.classes_],
        metrics={"holdout_accuracy": accuracy, "rows": len(rows), "class_counts": counts, "algorithm": "LogisticRegression"},
        trusted_types=sorted(untrusted),
    )


def features_of(spec: list) -> tuple[Feature, ...]:
    """The features a model version was trained on, from the spec stored with it (names alone mean numbers)."""
    return tuple(
        Feature(name=item["name"], type=item.get("type", "number"), values=tuple(item.get("values") or ()))
        if isinstance(item, dict) else Feature(name=str(item))
        for item in spec
    )


@lru_cache(maxsize=32)
def model_load(path: str, sha256: str, trusted_types: tuple[str, ...]):
    """``model_read``, kept per path and checksum: a decision reads the file once, not on every call."""
    return model_read(path, sha256, trusted_types)


def model_read(path: str, sha256: str, trusted_types: tuple[str, ...]):
    """Load a model after checking its checksum; refuse types beyond those trusted at save time. Reads the file
    every time (``model_load`` keeps what it read)."""
    import skops.io as sio

    file = Path(path)
    if not file.is_file():
        raise ModelError(f"model file {path} is missing")
    actual = file_sha256(file)
    if actual != sha256:
        raise ModelError(f"model file {path} has sha256 {actual[:12]}..., expected {sha256[:12]}...: refusing to load it")
    try:
        untrusted = set(sio.get_untrusted_types(file=file))
        if not untrusted <= set(trusted_types):
            raise ModelError(f"model file {path} holds untrusted types: "
                             f"{', '.join(sorted(untrusted - set(trusted_types)))}")
        return sio.load(file, trusted=list(trusted_types))
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as error:
        raise ModelError(f"model file {path} cannot be read: {error}") from None


def model_predict(model, context: dict, features: tuple[Feature, ...]) -> tuple[Any, float]:
    """Return the most likely decision and its probability."""
    probabilities = model.predict_proba([featurize(context, features)])[0]
    best = int(probabilities.argmax())
    return json.loads(model.classes_[best]), float(probabilities[best])
