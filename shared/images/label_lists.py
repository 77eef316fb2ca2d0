"""Labelled sets listed in a file: a CSV of ``path,label`` or JSON lines of ``{"path": ..., "label": ...}``.

A path is read as written, relative to the list's own folder unless it is
absolute; a label is a class name. A line that is not a path and a label is a
mistake in the list, refused with its line number; an image that cannot be
read is a record of the set (:class:`shared.images.image_set.ItemError`), as
in a folder.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from shared.images.members import Member, file_member

SUFFIXES = (".csv", ".jsonl")


def is_label_list(path: Path) -> bool:
    """Whether ``path`` names a label list (by its suffix)."""
    return path.suffix.lower() in SUFFIXES


def read_label_list(path: Path, max_bytes: int) -> tuple[list[Member], list[str]]:
    """The images a list names, as members (their names: the paths as written), and their labels.

    Raises
    ------
    ValueError
        One line naming the list and the line: a row without a path and a label, invalid JSON, an empty list.
    """
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    if not rows:
        raise ValueError(f"{path}: lists no images (expected lines of path,label)")
    members, labels = [], []
    for number, item, label in rows:
        if not item or not label:
            raise ValueError(f"{path}, line {number}: expected a path and a label, got {item!r} and {label!r}")
        resolved = Path(item) if Path(item).is_absolute() else path.parent / item
        members.append(Member(item, file_member(resolved, max_bytes).read))
        labels.append(label)
    return members, labels


def _csv_rows(path: Path) -> list[tuple[int, str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        lines = [(n, row) for n, row in enumerate(csv.reader(fh), 1) if any(cell.strip() for cell in row)]
    if lines and [c.strip().lower() for c in lines[0][1]] == ["path", "label"]:
        lines = lines[1:]  # a header
    for number, row in lines:
        if len(row) != 2:
            raise ValueError(f"{path}, line {number}: expected path,label, got {len(row)} fields")
    return [(n, row[0].strip(), row[1].strip()) for n, row in lines]


def _jsonl_rows(path: Path) -> list[tuple[int, str, str]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{path}, line {number}: expected {{\"path\": ..., \"label\": ...}}")
        rows.append((number, str(entry.get("path") or ""), str(entry.get("label") or "")))
    return rows
