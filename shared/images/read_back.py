"""An item read again by its id, as the classifier saw it: for a report's thumbnails.

Screening records carry ids, not pixels (pixels would cost Redis bytes per
image). Where a report wants to show a flagged image, :class:`ItemReader`
finds the item again from its id (:func:`shared.images.intake.iter_items`
makes ids from paths: ``DIR/name``, ``ZIP/member``, ``NAME.npz[i]``) and
decodes it as screening did. An id it cannot resolve from here (the files
moved, another working directory, another machine) gives None: the report
says the image is not at hand, and nothing fails. Ids are paths as the
screening was given them, so they are read from the same working
directory; a file of the same name elsewhere would be read instead.

Memory: the last zip's directory (as :mod:`zipfile` holds it) and the last
npz file's rows, as screening itself held them while it read that file.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from shared.images.decode import decode_image

_NPZ_ROW = re.compile(r"^(?P<file>.+\.npz)\[(?P<row>\d+)\](?::.*)?$", re.IGNORECASE)


class ItemReader:
    """Reads items back by id, keeping the last zip and npz file it opened.

    Parameters
    ----------
    size : int
        Side of the decoded image, as screening decoded it.
    max_bytes : int
        Larger items are not read back (screening refused them, or they are not worth a thumbnail).
    """

    def __init__(self, size: int = 32, max_bytes: int = 64 * 2**20):
        self.size, self.max_bytes = size, max_bytes
        self._zip: tuple[str, zipfile.ZipFile] | None = None
        self._npz: tuple[str, np.ndarray] | None = None

    def read(self, item_id: str) -> np.ndarray | None:
        """The item's pixels (size x size x 3, uint8), or None when it cannot be found or read again."""
        try:
            pixels = self._read(item_id)
        except Exception:  # noqa: BLE001 (a picture is never worth failing a job: the file changed, moved, broke)
            return None
        if pixels is None:
            return None
        if pixels.dtype != np.uint8:  # a float array set: its pixels rounded for the picture only
            pixels = np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)
        return pixels

    def close(self) -> None:
        """Close the zip kept open, and let go of the npz rows kept."""
        if self._zip is not None:
            self._zip[1].close()
        self._zip = self._npz = None

    def _read(self, item_id: str) -> np.ndarray | None:
        row = _NPZ_ROW.match(item_id)
        if row and Path(row["file"]).is_file():
            return self._npz_row(row["file"], int(row["row"]))
        path = Path(item_id)
        if path.is_file():
            return self._decode(path.read_bytes()) if path.stat().st_size <= self.max_bytes else None
        # ZIP/member: the longest leading part of the id that is a file is the archive.
        parts = item_id.split("/")
        for cut in range(len(parts) - 1, 0, -1):
            archive = "/".join(parts[:cut])
            if Path(archive).is_file():
                return self._member(archive, "/".join(parts[cut:]))
        return None

    def _decode(self, data: bytes) -> np.ndarray:
        return decode_image(data, self.size)

    def _member(self, archive: str, name: str) -> np.ndarray | None:
        if self._zip is None or self._zip[0] != archive:
            self.close()
            self._zip = (archive, zipfile.ZipFile(archive))
        info = self._zip[1].getinfo(name)
        if info.file_size > self.max_bytes:
            return None
        return self._decode(self._zip[1].read(info))

    def _npz_row(self, file: str, row: int) -> np.ndarray:
        if self._npz is None or self._npz[0] != file:
            from shared.images.arrays import load_npz

            self._npz = (file, load_npz(file, self.size, None).images)
        return self._npz[1][row]
