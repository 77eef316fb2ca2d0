"""Labelled sets of the user's own: ImageFolder layouts and path,label lists, matched to the model's classes."""

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from shared.images.geometry import InputSize
from shared.images.load import load_images

CLASSES = ["red", "green", "blue"]


def _png(colour, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "set"
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            (root / name / f"{i}.png").write_bytes(_png(colour))
    (root / "green").mkdir()  # a class without images
    (root / "blue" / "broken.png").write_bytes(b"\x89PNG\r\n garbage")
    return root


def test_an_image_folder_labels_by_the_models_classes_at_its_size(folder, caplog):
    with caplog.at_level(logging.WARNING):
        images = load_images(folder, size=InputSize(24, 20, "shorter-side"), classes=CLASSES)
    assert images.images.shape == (6, 24, 20, 3) and images.classes == CLASSES
    assert list(images.labels) == [2, 2, 2, 0, 0, 0]  # blue is class 2 of the model, not 0 of the folders
    assert np.all(images.images[images.labels == 0][..., 0] == 255)
    assert [e.id for e in images.errors] == ["blue/broken.png"]  # a record, not silently dropped
    assert "class folder green holds no images" in caplog.text


def test_a_folder_that_names_no_class_of_the_model_is_refused_in_one_line(folder):
    (folder / "purple").mkdir()
    (folder / "purple" / "0.png").write_bytes(_png((128, 0, 128)))
    with pytest.raises(ValueError, match=r"class folders 'purple' name no class of the model \(its classes: red, "
                                         r"green, blue\)"):
        load_images(folder, classes=CLASSES)


@pytest.mark.parametrize("kind", ["csv", "csv with header", "jsonl"])
def test_a_path_label_list_reads_relative_paths_and_keeps_a_missing_file_as_a_record(tmp_path, folder, kind):
    rows = [("set/red/0.png", "red"), (str(folder / "blue" / "1.png"), "blue"), ("set/red/gone.png", "red")]
    if kind == "jsonl":
        (tmp_path / "labels.jsonl").write_text("".join(json.dumps({"path": p, "label": c}) + "\n" for p, c in rows))
        listed = tmp_path / "labels.jsonl"
    else:
        header = "path,label\n" if kind == "csv with header" else ""
        (tmp_path / "labels.csv").write_text(header + "".join(f"{p},{c}\n" for p, c in rows))
        listed = tmp_path / "labels.csv"
    images = load_images(listed, size=16, classes=CLASSES)
    assert images.ids == ["set/red/0.png", str(folder / "blue" / "1.png")] and list(images.labels) == [0, 2]
    assert [e.id for e in images.errors] == ["set/red/gone.png"] and "No such file" in images.errors[0].reason


def test_a_broken_list_is_one_line_with_its_line_number(tmp_path):
    (tmp_path / "a.csv").write_text("path,label\nx.png,red\ny.png\n")
    with pytest.raises(ValueError, match=r"a.csv, line 3: expected path,label, got 1 fields"):
        load_images(tmp_path / "a.csv", classes=CLASSES)
    (tmp_path / "b.jsonl").write_text('{"path": "x.png", "label": "red"}\n{"path": "y.png"\n')
    with pytest.raises(ValueError, match=r"b.jsonl, line 2: not JSON"):
        load_images(tmp_path / "b.jsonl", classes=CLASSES)
    (tmp_path / "c.csv").write_text("x.png,cyan\n")
    with pytest.raises(ValueError, match=r"labels 'cyan' name no class of the model"):
        load_images(tmp_path / "c.csv", classes=CLASSES)
