"""Files written whole or not at all: a reader never sees half a file, a crash leaves the old one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then put it in ``path``'s place in one step.

    The temporary name keeps ``path``'s extension (``manifest.tmp.jsonl``), for
    writers that add one when it is missing (``np.savez``). If ``write`` fails,
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
