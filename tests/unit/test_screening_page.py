"""The screening page's data: items read back by id, its parts and index, the histogram, the "why" pictures."""

import json
import zipfile

import numpy as np
import pytest

from producers.screening.screen import RecordWriter
from shared.images.intake import SAMPLE_ZIP, iter_chunks, iter_items
from shared.images.read_back import ItemReader
from shared.reports import screening_page
from shared.screening import verdicts, why

HOSTILE = "<img src=x onerror=alert(1)>.png"


def _script_payload(path, call):
    """The JSON argument(s) of ``call(...)`` in a page script file."""
    text = path.read_text()
    assert text.startswith(call + "(") and text.rstrip().endswith(");")
    return text[len(call) + 1:text.rstrip().rindex(")")]


def _index(out):
    return json.loads(_script_payload(out / screening_page.FOLDER / "index.js", "wsIndex"))


def _parts(out):
    parts = []
    for k in range(_index(out)["parts"]):
        number, payload = _script_payload(out / screening_page.FOLDER / f"part-{k:05d}.js", "wsPart").split(",", 1)
        assert int(number) == k
        parts.append(json.loads(payload))
    return parts


@pytest.fixture
def item_sources(tmp_path):
    """The same 12 sample images as files in a folder (one with a hostile name), members of a zip, and npz rows."""
    with zipfile.ZipFile(SAMPLE_ZIP) as z:
        names = [n for n in z.namelist() if n.endswith(".jpg")][::83][:12]
        blobs = [z.read(n) for n in names]
    folder = tmp_path / "folder"
    folder.mkdir()
    for k, blob in enumerate(blobs):
        (folder / (HOSTILE if k == 0 else f"img{k:02d}.jpg")).write_bytes(blob)
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for k, blob in enumerate(blobs):
            z.writestr(f"inner/{k:02d}.jpg", blob)
    rows = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "rows.npz", x=rows)
    return [folder, archive, tmp_path / "rows.npz"]


@pytest.mark.parametrize("named", ["relative", "absolute"])
def test_items_read_back_by_id_are_the_pixels_screening_decoded(item_sources, monkeypatch, named):
    stray = np.zeros((1, 32, 32, 3), np.uint8)
    if named == "relative":  # ids relative to where the screening ran, sources a folder down
        monkeypatch.chdir(item_sources[0].parent.parent)
        sources = [f"{p.parent.name}/{p.name}" for p in item_sources]
        np.savez(item_sources[0].parent.parent / "rows.npz", x=stray)  # a file of the same name, not the one named
    else:
        elsewhere = item_sources[0].parent / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        sources = [str(p) for p in item_sources]
        np.savez(elsewhere / "rows.npz", x=stray)
    reader = ItemReader()
    seen = 0
    for chunk in iter_chunks(iter_items(sources), 7):
        for item_id, pixels in zip(chunk.ids, chunk.images):
            again = reader.read(item_id)
            assert again is not None, item_id
            np.testing.assert_array_equal(again, pixels)
            seen += 1
    assert seen == 12 + 12 + 5
    assert reader.read(f"{sources[0]}/no-such-file.png") is None
    assert reader.read(f"{sources[1]}/inner/missing.jpg") is None
    assert reader.read(f"{sources[2]}[99]") is None
    assert reader.read(sources[0]) is None  # a folder is no item
    reader.close()


def _records(n, flagged_every=1, errors=()):
    """``n`` records with suspicion spread over 0-1, every ``flagged_every``-th flagged; then ``errors`` (ids)."""
    rng = np.random.default_rng(1)
    records = []
    for k in range(n):
        flagged = k % flagged_every == 0
        records.append(verdicts.Record(
            HOSTILE if k == 3 else f"set/{k:05d}.png", label=["cat", "dog", "ship"][k % 3],
            confidence=0.5 + 0.4 * rng.random(), raw_label=["cat", "truck"][k % 2],
            suspicion=round(float(rng.uniform(0.9, 1.0) if flagged else rng.uniform(0, 0.9)), 6), threshold=0.9,
            flagged=flagged, signal="haar@haar" if k % 4 else "steps").as_dict())
    return records + [verdicts.error_record(e, "not an image Pillow can identify") for e in errors]


def test_page_holds_every_flagged_image_and_error_in_parts_of_bounded_size(tmp_path):
    records = _records(4500, flagged_every=2, errors=["broken.png", HOSTILE])
    with RecordWriter(tmp_path, {"name": "default", "threshold": 0.9, "fpr": 0.05}) as writer:
        for start in range(0, len(records), 256):
            writer.write(records[start:start + 256])
    index, parts = _index(tmp_path), _parts(tmp_path)
    assert index["status"] == "complete" and index["summary"]["flagged"] == 2250 and index["summary"]["errors"] == 2
    # A part closes at the batch that takes it to PART_SIZE entries: memory holds at most one part and a batch.
    assert len(parts) == 2 and all(len(p["flagged"]) + len(p["errors"]) < screening_page.PART_SIZE + 256
                                   for p in parts)
    flagged = [e for p in parts for e in p["flagged"]]
    expected = [r for r in records if r["flagged"]]
    assert [e[1] for e in flagged] == [r["id"] for r in expected]
    assert [e[5] for e in flagged] == [r["suspicion"] for r in expected]
    assert [e[0] for e in flagged] == list(range(1, 2251))
    assert [e for p in parts for e in p["errors"]] == [["broken.png", "not an image Pillow can identify"],
                                                      [HOSTILE, "not an image Pillow can identify"]]
    screened = [r["suspicion"] for r in records if r["error"] is None]
    assert index["histogram"] == np.histogram(screened, bins=50, range=(0, 1))[0].tolist()
    assert (index["flagged"], index["errors"]) == (2250, 2)  # what the page shows of the parts
    # The views a finished page opens on: every flagged entry by suspicion, the unreadable items in order.
    views = index["views"]
    ordered = [e for k in range(views["sorted"]) for e in json.loads(
        _script_payload(tmp_path / screening_page.FOLDER / f"sorted-{k:05d}.js", "wsSorted").split(",", 1)[1])]
    assert views["sorted"] == 5 and ordered == sorted(flagged, key=lambda e: (-e[5], e[0]))
    errors = [e for k in range(views["errors"]) for e in json.loads(
        _script_payload(tmp_path / screening_page.FOLDER / f"errors-{k:05d}.js", "wsErrors").split(",", 1)[1])]
    assert errors == [e for p in parts for e in p["errors"]]
    assert not (tmp_path / screening_page.FOLDER / "runs").exists()


def test_a_writer_that_starts_again_starts_the_page_from_nothing(tmp_path):
    records = _records(300)
    with RecordWriter(tmp_path) as writer:
        writer.write(records)
    with RecordWriter(tmp_path) as writer:  # a resumed follower is fed every record again
        writer.write(records[:100])
    assert sum(len(p["flagged"]) for p in _parts(tmp_path)) == 100
    assert len(list((tmp_path / screening_page.FOLDER / "thumbs").iterdir())) == 0  # no pixels at hand here


def test_a_page_that_cannot_be_written_stops_with_a_warning_and_the_records_are_whole(tmp_path, caplog):
    def broken(item_id):
        raise OSError(28, "No space left on device")

    records = _records(10)
    with RecordWriter(tmp_path) as writer:
        writer.page.read_item = broken
        writer.write(records[:5])
        writer.write(records[5:])
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 10
    assert json.loads((tmp_path / "summary.json").read_text())["flagged"] == 10
    assert writer.page.stopped and "stopped being written (OSError" in caplog.text


def test_a_run_that_ends_on_an_error_leaves_its_page_marked_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with RecordWriter(tmp_path) as writer:
            writer.write(_records(3))
            raise KeyboardInterrupt
    assert _index(tmp_path)["status"] == "interrupted" and _index(tmp_path)["summary"]["images"] == 3


def test_thumbnails_are_the_pixels_given_and_named_by_sequence(tmp_path):
    records = _records(6)
    pixels = {r["id"]: np.full((32, 32, 3), 10 * k, np.uint8) for k, r in enumerate(records)}
    with RecordWriter(tmp_path) as writer:
        writer.write(records, pixels=pixels)
    from PIL import Image

    for entry in _parts(tmp_path)[0]["flagged"]:
        assert entry[7] == 1 and entry[8] == 0  # a picture, no "why" (no defence named)
        thumb = tmp_path / screening_page.FOLDER / "thumbs" / screening_page.thumbnail_name(entry[0])
        assert thumb.name == f"{entry[0]:07d}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(thumb)), pixels[entry[1]])


def test_why_picture_shows_a_perturbation_the_reconstruction_removes():
    from shared.dwt.defences import get

    with zipfile.ZipFile(SAMPLE_ZIP) as z:
        from shared.images.decode import decode_image

        clean = np.stack([decode_image(z.read(n)) for n in sorted(z.namelist())[:8] if n.endswith(".jpg")])
    signs = np.random.default_rng(2).choice([-3, 3], clean.shape)  # a perturbation of 3 grey levels, FGSM-like
    attacked = np.clip(clean.astype(int) + signs, 0, 255).astype(np.uint8)
    options = lambda name: get(name, "weights")  # noqa: E731
    shown = [why.residual_pictures(x, ["haar"] * len(x), options) for x in (clean, attacked)]
    spread = [np.mean([np.abs(p.astype(float) - 127.5).mean() for p in pictures]) for pictures in shown]
    assert spread[1] > 1.3 * spread[0]
    assert why.residual_pictures(clean[:2], [None, "haar"], options)[0] is None


@pytest.mark.parametrize("signal, expected", [("haar@haar", "haar"), ("daubechies:removed", "daubechies"),
                                              ("standard@raw", "haar"), ("disagreement", "haar"),
                                              ("steps", None), ("chroma", None), (None, None)])
def test_why_picture_follows_the_signal(signal, expected):
    assert why.defence_of(signal, "haar", {"haar", "daubechies"}) == expected
