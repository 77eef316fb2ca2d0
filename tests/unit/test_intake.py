"""Streaming intake: a lazy, stable walk; chunks that skip unread; bounded decoding; a summary kept as counts."""

import io
import json
import os
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from shared.images import intake
from shared.images.load import load_many
from shared.images.members import walk_folder
from shared.pipeline.meta import running
from shared.screening import verdicts


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def nested(tmp_path, sample):
    """Images in nested folders, names chosen so that a folder sorts between files (``a`` < ``a.png`` < ``b``)."""
    root = tmp_path / "in"
    names = ["a.png", "a/x.png", "a/y/z.png", "b.png", "b/c.png", "B.png", "0.png", "a/y.png"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_png(sample.images[i]))
    return root


def test_the_walk_is_the_sorted_listing_and_reads_one_directory_at_a_time(nested, monkeypatch):
    expected = [p.relative_to(nested).as_posix() for p in sorted(nested.rglob("*")) if p.is_file()]
    assert [m.name for m in walk_folder(nested)] == expected

    scanned = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: scanned.append(os.fspath(path)) or real(path))
    first = next(walk_folder(nested))
    assert first.name == expected[0] == "0.png"
    assert scanned == [str(nested)]  # one directory listed, no sub-folder yet


def test_chunks_skip_whole_chunks_without_reading_them(nested, monkeypatch):
    items = list(intake.iter_items([str(nested)]))
    everything = list(intake.iter_chunks(items, 3))
    reads = []
    counted = [(kind, name, type(m)(m.name, lambda m=m: reads.append(m.name) or m.read()))
               for kind, name, m in items]
    resumed = list(intake.iter_chunks(counted, 3, skip=3))
    assert [c.index for c in resumed] == [1, 2] and resumed[0].ids == everything[1].ids
    assert np.array_equal(resumed[-1].images, everything[-1].images)
    assert sorted(reads) == sorted(m.name for _, _, m in items[3:])  # the first chunk was never read
    with pytest.raises(ValueError, match="whole number of chunks"):
        next(intake.iter_chunks(items, 3, skip=2))


def test_a_chunk_decodes_its_bytes_a_bounded_part_at_a_time_and_keeps_its_order(nested, monkeypatch):
    items = list(intake.iter_items([str(nested)]))
    whole = intake.decode_chunk(0, items)
    calls = []
    real = intake.decode_all
    monkeypatch.setattr(intake, "DECODE_CHUNK_BYTES", 1)  # every image over the bound: one decode call each
    monkeypatch.setattr(intake, "decode_all", lambda data, size, workers: calls.append(len(data)) or real(data, size, workers))
    parted = intake.decode_chunk(0, items)
    assert calls == [1] * len(items) + [0]
    assert parted.ids == whole.ids and np.array_equal(parted.images, whole.images)


def test_items_of_every_kind_keep_one_record_each_and_the_same_ids_as_the_in_memory_set(tmp_path, sample):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "good.png").write_bytes(_png(sample.images[0]))
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff nope")
    np.savez(folder / "rows.npz", x=sample.images[1:4])
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as archive:
        archive.writestr("in/zip.png", _png(sample.images[5]))
        archive.writestr("../escape.png", _png(sample.images[6]))
        archive.writestr("inner.zip", b"PK\x03\x04" + b"\0" * 40)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    sources = [str(folder), str(tmp_path / "z.zip"), str(tmp_path / "broken.npz"), str(tmp_path / "*.none")]
    chunks = list(intake.iter_chunks(intake.iter_items(sources), 2))
    ids = [i for c in chunks for i in c.ids]
    errors = {e.id: e.reason for c in chunks for e in c.errors}
    assert ids == [f"{folder}/good.png", *(f"{folder}/rows.npz[{i}]" for i in range(3)),
                   f"{tmp_path}/z.zip/in/zip.png", f"{tmp_path}/z.zip/../escape.png"]  # a zip: in its own order
    assert set(errors) == {f"{folder}/bad.jpg", f"{tmp_path}/z.zip/inner.zip", str(tmp_path / "broken.npz"),
                           str(tmp_path / "*.none")}
    assert "nested zip" in errors[f"{tmp_path}/z.zip/inner.zip"]
    whole = load_many(sources)
    assert whole.ids == ids and sorted(e.id for e in whole.errors) == sorted(errors)


def test_named_inputs_that_cannot_be_read_are_refused_and_met_ones_stay_error_items(tmp_path, sample):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.png").write_bytes(_png(sample.images[0]))
    (tmp_path / "in" / "fake.zip").write_text("a text file")  # an item met inside an input
    (tmp_path / "fake.zip").write_text("a text file")
    (tmp_path / "dir.zip").mkdir()  # a folder named so is read as a folder
    with zipfile.ZipFile(tmp_path / "real.zip", "w") as archive:
        archive.writestr("x.png", _png(sample.images[1]))
    fine = [str(tmp_path / "in"), str(tmp_path / "real.zip"), str(tmp_path / "dir.zip"), "sample",
            str(tmp_path / "in" / "*.png")]
    intake.check_inputs(fine)  # nothing to refuse
    (tmp_path / "cat[1].png").write_bytes(_png(sample.images[2]))  # a file's own name, not a pattern
    intake.check_inputs([str(tmp_path / "cat[1].png")])
    assert intake.decode_chunk(0, list(intake.iter_items([str(tmp_path / "cat[1].png")]))).ids == [
        str(tmp_path / "cat[1].png")]
    for bad, reason in ((tmp_path / "missing", "no such file or directory"),
                        (tmp_path / "*.nothing", "no file matches this pattern"),
                        (tmp_path / "fake.zip", "not a zip archive")):
        with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}: {reason}$"):
            intake.check_inputs([*fine, str(bad)])
        # Met while reading (gone since, say), the same reason is one error item; the rest is read.
        chunk = intake.decode_chunk(0, list(intake.iter_items([str(tmp_path / "in"), str(bad)])))
        assert {e.id: e.reason for e in chunk.errors} == {f"{tmp_path}/in/fake.zip": "not a zip archive",
                                                          str(bad): reason}
        assert chunk.ids == [f"{tmp_path}/in/good.png"]
    # A data source named for the other commands (--data) is refused the same way.
    from shared.images.load import load_images

    with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / 'fake.zip'))}: not a zip archive$"):
        load_images(tmp_path / "fake.zip")


def test_a_chunk_keeps_where_its_unreadable_items_stood(tmp_path, sample):
    names = ["0.png", "1.jpg", "2.png", "3.png", "4.zip", "5.txt", "6.png"]
    for k, name in enumerate(names):
        (tmp_path / name).write_bytes(_png(sample.images[k]) if name.endswith(".png") else b"unreadable")
    chunks = list(intake.iter_chunks(intake.iter_items([str(tmp_path / "*")]), 4))
    assert [c.error_at for c in chunks] == [[1], [0, 1]]  # 1.jpg; 4.zip and 5.txt, places within their chunk
    ordered = [r["id"] for c in chunks for r in verdicts.in_item_order(
        [{"id": i} for i in c.ids], [verdicts.error_record(e.id, e.reason) for e in c.errors], c.error_at)]
    assert ordered == [str(tmp_path / n) for n in names]


def test_the_last_chunk_of_a_zip_reads_after_the_walk_has_moved_on(tmp_path, sample):
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as archive:
        for i in range(5):
            archive.writestr(f"{i}.png", _png(sample.images[i]))
    chunks = list(intake.iter_chunks(intake.iter_items([str(tmp_path / "z.zip"), str(tmp_path / "z.zip")]), 4))
    assert [len(c.ids) for c in chunks] == [4, 4, 2] and not any(c.errors for c in chunks)


def test_prefetch_runs_ahead_hands_on_errors_and_stops_when_closed():
    made = []

    def numbers():
        for i in range(100):
            made.append(i)
            yield i

    ahead = intake.prefetch(numbers(), depth=2)
    assert next(ahead) == 0
    ahead.close()
    assert len(made) <= 5  # it ran a bounded way ahead, then stopped

    def failing():
        yield 1
        raise ValueError("unreadable")

    with pytest.raises(ValueError, match="unreadable"):
        list(intake.prefetch(failing()))


def test_the_tally_over_batches_equals_the_summary_of_all_records():
    rng = np.random.default_rng(0)
    reference = {"statistics": {"coarse_contrast": sorted(rng.normal(size=9).tolist()),
                                "coarse_colour": sorted(rng.normal(1.0, size=9).tolist())}}
    calibration = {"name": "default", "threshold": 0.5, "fpr": 0.05, "reference": reference}
    records = [{"id": str(i), "label": ["cat", "dog"][i % 2], "flagged": bool(rng.random() < 0.3), "error": None,
                "coarse_contrast": float(rng.normal(0.5)), "coarse_colour": float(rng.normal(0.5))}
               for i in range(300)]
    records += [verdicts.error_record("bad", "unreadable")]
    tally = verdicts.Tally(calibration)
    for start in range(0, len(records), 37):
        tally.add(records[start:start + 37])
    assert tally.summary() == verdicts.summary(records, calibration)
    check = tally.summary()["source_check"]
    for name in ("coarse_contrast", "coarse_colour"):
        oracle = verdicts.decile_distance([r[name] for r in records[:300]], reference["statistics"][name])
        assert check["distance"][name] == round(oracle, 4)
    assert check["images"] == 300 and check["warning"] and check["likelier"] == "unlike the calibration"
    assert check["flagged_share"] == round(sum(r["flagged"] for r in records[:300]) / 300, 4)


def test_the_record_writer_streams_and_summarises(tmp_path):
    from producers.screening.screen import RecordWriter

    records = [{"id": str(i), "label": "cat", "confidence": 0.9, "raw_label": "cat", "suspicion": 0.1,
                "threshold": 0.05, "flagged": i == 3, "error": None, "signal": "steps", "coarse_contrast": 3.0,
                "coarse_colour": 20.0}
               for i in range(10)]
    with RecordWriter(tmp_path / "out") as writer:
        writer.write(records[:4])
        assert len((tmp_path / "out" / "records.jsonl").read_text().splitlines()) == 4  # on disk before the end
        writer.write(records[4:])
        summary = writer.close()
    assert summary == verdicts.summary(records) == json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (tmp_path / "out" / "records.csv").read_text().count("\n") == 11


def test_decoding_workers_end_with_the_process_that_made_them():
    import subprocess
    import sys
    import time

    script = ("import os, sys; from shared.images import decode; from tests.unit.test_intake import _png; import numpy as np; "
              "decode.decode_all([_png(np.zeros((8, 8, 3), np.uint8))] * 64, 32, 2); "
              "print(' '.join(str(p.pid) for p in decode._pool._processes.values()), flush=True); os._exit(0)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.2)
    assert not any(running(p) for p in pids)  # the parent died without a word: they followed


def test_the_screening_producer_starts_without_torch():
    """Importing torch takes seconds; the producer's path (settings, intake, Redis, Celery) must not need it."""
    import subprocess
    import sys

    script = ("import sys; import producers.cli, producers.cli.screening, producers.screening.screen, "
              "producers.screening.ingest, producers.submit, workers.app, shared.evaluation.report; "
              "from shared.screening.detector import PATHS, reads; "  # a detector's card, without its network
              "from producers.screening.screen import screening_settings; "
              "from shared.settings import load; screening_settings(load()); "
              "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
