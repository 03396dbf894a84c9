"""``training_log.txt``: one line per epoch, ``key=value`` fields separated by spaces.

Example::

    epoch=0 lr=0 lambda=1 val_dice=0.1212 val_iou=0.0704 val_score=0.0958 seconds=12.3
    epoch=1 loss=3.412 bce=0.6931 focal=0.1201 dice=0.9114 iou=0.0311 cls=0.5142 lr=0.0001 ...

Epoch 0 is the validation before any update, so it has no loss fields. A run that fails
appends a comment line starting with ``#`` that gives the error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FILE_NAME = "training_log.txt"


def format_line(fields: dict[str, Any]) -> str:
    """Return ``key=value`` pairs in the given order, floats with 6 significant digits."""
    parts = []
    for key, value in fields.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def parse_line(line: str) -> dict[str, Any]:
    """Return the fields of one log line, numbers as int or float."""
    fields: dict[str, Any] = {}
    for part in line.split():
        key, _, text = part.partition("=")
        try:
            fields[key] = int(text)
        except ValueError:
            try:
                fields[key] = float(text)
            except ValueError:
                fields[key] = text
    return fields


class TrainingLog:
    """Appends epoch lines to ``<folder>/training_log.txt``."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / FILE_NAME

    def append(self, fields: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:
            file.write(format_line(fields) + "\n")

    def append_error(self, error: BaseException, epoch: int | None = None) -> None:
        """Append a comment line with the error, on one line, and the epoch it stopped."""
        message = " ".join(f"{type(error).__name__}: {error}".split())
        where = f"in epoch {epoch}" if epoch is not None else "before training"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:
            file.write(f"# failed {where}: {message}\n")

    def has_error(self) -> bool:
        return self.path.exists() and "\n# failed " in "\n" + self.path.read_text()

    def read(self) -> list[dict[str, Any]]:
        """Return the fields of every epoch line, skipping comment lines."""
        if not self.path.exists():
            return []
        return [parse_line(line) for line in self.path.read_text().splitlines()
                if line.startswith("epoch=")]

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs after ``epoch``, which a resumed run is about to write again."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.startswith("epoch=") and parse_line(line)["epoch"] <= epoch]
        self.path.write_text("".join(line + "\n" for line in kept))
