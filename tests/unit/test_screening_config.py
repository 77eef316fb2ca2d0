"""screening.json: read over the defaults, checked, written atomically, and switched between scores."""

import json

import pytest

from shared.screening import config


def test_no_file_reads_the_defaults_and_a_written_file_reads_back(tmp_path):
    assert config.load(tmp_path) == config.DEFAULT
    chosen = {**config.DEFAULT, "threshold": 0.31, "fpr": 0.05}
    path = config.write(tmp_path, chosen)
    assert path == tmp_path / "screening.json" and json.loads(path.read_text()) == chosen
    assert config.load(tmp_path) == chosen and list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_the_users_settings_shadow_the_shipped_ones_which_are_never_written(tmp_path):
    shipped, mine = tmp_path / "weights", tmp_path / "models"
    config.write(shipped, {**config.DEFAULT, "threshold": 0.4})
    before = (shipped / "screening.json").read_text()
    assert config.path(shipped, mine) == shipped / "screening.json" and config.load(shipped, mine)["threshold"] == 0.4
    config.write(mine, config.with_source(config.load(shipped, mine), "phones", {"score": "disagreement"}))
    assert config.path(shipped, mine) == mine / "screening.json"
    assert config.load(shipped, mine) == {**config.DEFAULT, "threshold": 0.4, "sources": {"phones": {"score": "disagreement"}}}
    assert (shipped / "screening.json").read_text() == before and config.load(shipped) == json.loads(before)


def test_a_broken_file_or_an_unknown_score_is_refused_with_the_file_named(tmp_path):
    (tmp_path / "screening.json").write_text("{not json")
    with pytest.raises(ValueError, match="screening.json: unreadable screening settings"):
        config.load(tmp_path)
    (tmp_path / "screening.json").write_text(json.dumps({"score": "vibes"}))
    with pytest.raises(ValueError, match="unknown score 'vibes'; valid: disagreement, detector"):
        config.load(tmp_path)
    assert config.load(tmp_path, check_score=False)["score"] == "vibes"  # what a calibration replaces


def test_switching_to_the_detector_keeps_the_hand_made_calibration_aside_and_back_again():
    calibrated = {**config.DEFAULT, "threshold": 0.3, "fpr": 0.05, "measured_fpr": 0.049,
                  "calibrated_on": {"data": "a"}, "sources": {"phones": {"score": "disagreement"}}}
    card = {"threshold": 0.8, "fpr": 0.05, "measured_fpr": 0.04, "calibrated_on": {"sources": {}},
            "detection_of_fooling": {"fgsm eps=0.01": 0.9}, "reference": {"deciles": [0.1]}, "sha256": "x"}
    detector = config.with_detector(calibrated, card)
    assert detector["score"] == "detector" and detector["threshold"] == 0.8 and "sources" not in detector
    assert detector["disagreement"] == {"threshold": 0.3, "fpr": 0.05, "measured_fpr": 0.049,
                                        "calibrated_on": {"data": "a"}}
    assert "sha256" not in detector and calibrated["score"] == "disagreement"  # the input is left alone
    again = config.with_disagreement(detector, {"threshold": 0.35, "fpr": 0.05})
    assert again["score"] == "disagreement" and again["threshold"] == 0.35
    assert "disagreement" not in again and "sources" not in again


def test_a_source_calibration_is_added_beside_the_others_and_picked_by_name():
    chosen = config.with_source({**config.DEFAULT, "sources": {"a": {"score": "disagreement", "threshold": 0.2}}},
                                "b", {"score": "disagreement", "threshold": 0.4, "fpr": 0.05})
    assert list(chosen["sources"]) == ["a", "b"]
    assert config.calibration_for(chosen, "b") == {"name": "b", "threshold": 0.4, "fpr": 0.05, "reference": None,
                                                   "clean_histogram": None}
    recorded = config.with_source(chosen, "c", {"score": "disagreement", "threshold": 0.4, "clean_histogram": [3, 1]})
    assert config.calibration_for(recorded, "c")["clean_histogram"] == [3, 1]  # the report page draws it
    assert config.reported_path(chosen) == "haar@haar"
