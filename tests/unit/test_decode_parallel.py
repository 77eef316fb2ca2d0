"""Decoding in worker processes gives what decoding in this process gives, item for item, and never
surprises the script that asked: no pool unless asked, none from a main script that spawn cannot run again,
and Ctrl-C left to the parent."""

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from shared.images import decode
from shared.images.load import load_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_zip_decoded_by_two_workers_equals_one_decoded_here(tmp_path, sample):
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i, image in enumerate(sample.images[:300]):
            buffer = io.BytesIO()
            Image.fromarray(np.kron(image, np.ones((8, 8, 1), np.uint8))).save(buffer, "JPEG", quality=90)
            archive.writestr(f"cat/{i:04d}.jpg", buffer.getvalue())  # 256x256: resized, in draft mode
        archive.writestr("cat/broken.jpg", b"\xff\xd8\xff not a jpeg")
        archive.writestr("cat/empty.png", b"")
    decode.close_pool()
    here = load_images(path)  # a library call decodes in this process unless asked
    assert decode._pool is None
    pooled = load_images(path, workers=2)
    assert len(here) == 300 and here.ids == pooled.ids and np.array_equal(here.images, pooled.images)
    assert [(e.id, e.reason) for e in here.errors] == [(e.id, e.reason) for e in pooled.errors]
    assert {e.id for e in pooled.errors} == {"cat/broken.jpg", "cat/empty.png"}
    assert decode._pool is not None and decode._pool_workers == 2  # the pool did the work, and stays for the next
    decode.close_pool()


def test_a_bomb_is_refused_in_a_worker_process_as_in_this_one(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    small = buffer.getvalue()
    limit = Image.MAX_IMAGE_PIXELS
    buffer = io.BytesIO()
    Image.new("1", (int(limit ** 0.5) * 2 + 8, int(limit ** 0.5) + 8)).save(buffer, "PNG")  # over 2x the pixel limit
    results = decode.decode_all([small] * 70 + [buffer.getvalue()], workers=2)
    assert all(reason is None for _, reason in results[:70])
    assert results[70][0] is None and "decompression bomb" in results[70][1]


@pytest.fixture()
def png_zip(tmp_path, sample):
    """100 PNGs in a zip: more than a pool's threshold (``decode.POOL_FROM``)."""
    path = tmp_path / "pngs.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i, image in enumerate(sample.images[:100]):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "PNG")
            archive.writestr(f"{i:04d}.png", buffer.getvalue())
    return path


def _run(args, *, stdin=None, cwd=ROOT):
    return subprocess.run(args, input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})


def test_a_script_read_from_stdin_decodes_in_its_own_process_with_one_line_saying_why(png_zip):
    script = textwrap.dedent(f"""
        from shared.images import decode
        from shared.images.load import load_images
        images = load_images({str(png_zip)!r}, workers=2)
        print(len(images), decode._pool is None)
    """)
    out = _run([sys.executable, "-"], stdin=script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["100", "True"]
    assert "decoding in this process" in out.stderr and "<stdin>" in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("decoding in this process") == 1


def test_a_script_without_a_main_guard_runs_once(tmp_path, png_zip):
    runs = tmp_path / "runs.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from shared.images.load import load_images
        with open({str(runs)!r}, "a") as fh:
            fh.write("ran\\n")
        first = load_images({str(png_zip)!r}, workers=2)
        second = load_images({str(png_zip)!r}, workers=2)
        print(len(first), len(second))
    """))
    out = _run([sys.executable, str(script)])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["100", "100"]
    assert runs.read_text() == "ran\n"  # spawn never ran the script again in a worker
    assert out.stderr.count("has no 'if __name__ == \"__main__\":' guard") == 1, out.stderr


def test_a_guarded_script_gets_its_pool_and_ctrl_c_prints_no_worker_tracebacks(tmp_path, png_zip):
    script = tmp_path / "guarded.py"
    script.write_text(textwrap.dedent(f"""
        import signal
        import time
        from shared.images import decode

        # A terminal's Ctrl-C, whatever the launcher left: a job started in the background of a script inherits
        # SIGINT ignored, and Python then raises no KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from shared.images.load import load_images

        if __name__ == "__main__":
            images = load_images({str(png_zip)!r}, workers=2)
            print(len(images), len(decode._pool._processes), flush=True)
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                print("stopped", flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert first.split() == ["100", "2"], proc.stderr.read() if proc.poll() is not None else first
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert out.strip() == "stopped"
    assert "KeyboardInterrupt" not in err and "Traceback" not in err, err
