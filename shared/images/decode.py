"""Decoding encoded images to small RGB arrays, in this process or in a pool of worker processes.

Decoding a large photograph to 32x32 is work for one core (with Pillow's
draft mode, a JPEG decodes at a reduced scale); a set of them decodes
faster on every core. The workers are processes: the decompression-bomb
check turns Pillow's warning into an error through the warnings filters,
which threads would share. They start by ``spawn`` and import this module
alone (Pillow and numpy, no torch), so each costs tens of MiB, and they
live as long as the process that made them, for its next set.

A pool is the caller's choice (``workers`` above 1; the producers pass
``WAVESHIELD_DECODE_WORKERS``), never a library default. ``spawn`` runs the
main script again in each worker: a script read from stdin cannot be run
again, and one without an ``if __name__ == "__main__":`` guard would redo
its own work in every worker. For such a main script the images decode in
this process, with one log line saying why. The workers leave Ctrl-C to the
process that made them, which stops them.
"""

from __future__ import annotations

import ast
import atexit
import io
import logging
import multiprocessing
import os
import signal
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from shared.images.geometry import InputSize

#: Members read and decoded together, at most (items, bytes): one chunk's bytes are what decoding holds at a
#: time, and the workers wait for the next chunk's reading once per chunk.
DECODE_CHUNK = 1024
DECODE_CHUNK_BYTES = 64 * 2 ** 20
#: Fewer encoded images than this are decoded in the calling process (a pool would cost more than it saves).
POOL_FROM = 64

log = logging.getLogger(__name__)

_pool: ProcessPoolExecutor | None = None
_pool_workers = 0
_no_pool_because: str | None = None  # why this process decodes in place ("" : it need not); asked once


def decode_image(data: bytes, size: int | InputSize = 32) -> np.ndarray:
    """Decode one encoded image to an H x W x 3 uint8 RGB array at ``size`` (an int: size x size, squashed).

    Any format and mode Pillow reads is accepted: the first frame of an
    animation, EXIF orientation applied, 16-bit and float scaled to 8 bits,
    transparency composited on white, CMYK/palette/LA converted.

    Raises
    ------
    ValueError
        With the reason, if the bytes are not a readable image or exceed
        Pillow's decompression-bomb limit.
    """
    if not data:
        raise ValueError("empty file")
    geometry = InputSize.of(size)
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its pixel limit and raises above;
            # treat both as a bomb so no oversized image is ever decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.seek(0)
                img.draft("RGB", geometry.draft_box(*img.size))  # JPEG: decode at reduced scale
                rgb = geometry.fit(_to_rgb(ImageOps.exif_transpose(img)))
                return np.asarray(rgb, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"decompression bomb refused: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ValueError("not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        # Pillow reports truncated or corrupt data with any of these.
        raise ValueError(f"unreadable image: {exc}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB without clipping high bit depths."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if img.mode == "F" and arr.max(initial=0) <= 1.0 else (65535.0 if arr.max(initial=0) > 255 else 255.0)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def _decode_or_reason(data: bytes, size: int | InputSize) -> tuple[np.ndarray | None, str | None]:
    """:func:`decode_image`, with the reason in place of the exception (what a worker sends back)."""
    try:
        return decode_image(data, size), None
    except ValueError as exc:
        return None, str(exc)


def _start_worker(parent: int) -> None:
    """In a decoding worker: leave Ctrl-C to the parent (which stops the pool), and end with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _follow_parent(parent)


def _follow_parent(parent: int) -> None:
    """End when the process that made the pool is gone (killed, it cannot say so)."""
    import threading
    import time

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


def main_unfit_for_spawn() -> str | None:
    """Why ``spawn`` workers cannot start from this process's main script, or None when they can.

    ``spawn`` imports the main module again in each worker: by name (``python
    -m``), by path (a script file), or not at all (``python -c``, an
    interactive session). A path that is not a file (``python -`` reading
    stdin) cannot be imported, and a script without a ``__main__`` guard
    would run again in every worker.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(getattr(main, "__spec__", None), "name", None):
        return None
    path = getattr(main, "__file__", None)
    if path is None:
        return None
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return f"the main script {path} cannot be read again"
    if not any(isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) for node in tree.body):
        return f"the main script {path} has no 'if __name__ == \"__main__\":' guard"
    return None


def _shared_pool(workers: int) -> ProcessPoolExecutor | None:
    """The decoding pool of ``workers`` processes, or None where the main script rules one out (logged once)."""
    global _pool, _pool_workers, _no_pool_because
    if _pool is not None and _pool_workers == workers:
        return _pool
    if _no_pool_because is None:
        _no_pool_because = main_unfit_for_spawn() or ""
        if _no_pool_because:
            log.warning("decoding in this process: %s (decoding workers start by spawn, which runs it again)",
                        _no_pool_because)
    if _no_pool_because:
        return None
    close_pool()
    _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_start_worker, initargs=(os.getpid(),))
    _pool_workers = workers
    return _pool


@atexit.register
def close_pool() -> None:
    """Stop the decoding workers (they start again when next needed)."""
    global _pool, _pool_workers
    if _pool is not None:
        _pool.shutdown(cancel_futures=True)
        _pool, _pool_workers = None, 0


def decode_all(encoded: list[bytes], size: int | InputSize = 32, workers: int = 1) -> list[tuple[np.ndarray | None, str | None]]:
    """Decode each of ``encoded`` (in order): ``(image, None)``, or ``(None, reason)`` if it cannot be read.

    ``workers`` above 1 decodes that many at a time in worker processes,
    once there are :data:`POOL_FROM` images or more.
    """
    pool = _shared_pool(workers) if workers > 1 and len(encoded) >= POOL_FROM else None
    if pool is None:
        return [_decode_or_reason(data, size) for data in encoded]
    chunk = max(1, len(encoded) // (4 * workers))  # a few tasks per worker: an even load, few round trips
    try:
        return list(pool.map(_decode_or_reason, encoded, [size] * len(encoded), chunksize=chunk))
    except BrokenProcessPool as exc:  # a worker died (killed, out of memory): this set decodes here
        log.warning("decoding in this process: the decoding workers stopped (%s)", exc)
        close_pool()
        return [_decode_or_reason(data, size) for data in encoded]
