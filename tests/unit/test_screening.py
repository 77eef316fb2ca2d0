import numpy as np
import pytest
import torch

from shared.screening import verdicts


def test_calibrated_threshold_keeps_the_false_positive_rate():
    scores = np.random.default_rng(0).random(1000)
    for fpr in (0.01, 0.05, 0.2):
        threshold = verdicts.calibrate(scores, fpr)
        assert (scores > threshold).mean() <= fpr
        assert (scores >= threshold).mean() > fpr - 0.002  # and not needlessly strict
    with pytest.raises(ValueError, match="fpr"):
        verdicts.calibrate(scores, 1.5)


def test_score_is_total_variation_and_records_flag_above_threshold():
    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.tensor(logits)

        def forward(self, x):
            return self.logits[: len(x)]

    raw = Fixed([[10.0, 0.0], [0.0, 10.0]])
    defended = Fixed([[10.0, 0.0], [10.0, 0.0]])
    images = torch.zeros(2, 3, 4, 4)
    p_raw, p_def, suspicion = verdicts.score(raw, defended, images, images)
    assert suspicion[0] < 1e-3 and suspicion[1] > 0.99
    records = verdicts.records(["a", "b"], p_raw, p_def, suspicion, 0.5, ["cat", "dog"])
    assert [r["flagged"] for r in records] == [False, True]
    assert records[1]["label"] == "cat" and records[1]["raw_label"] == "dog"
    assert [r["threshold"] for r in records] == [0.5, 0.5]  # each record carries the cut-off it was flagged by
    summary = verdicts.summary(records + [verdicts.error_record("c", "empty file")])
    assert summary == {"images": 3, "screened": 2, "flagged": 1, "errors": 1, "labels": {"cat": 2}}


def test_a_record_names_a_signal_only_where_something_raised_the_suspicion():
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    suspicion = torch.tensor([0.0, 4e-7, 0.2])  # 4e-7 rounds to the 0.0 the record shows
    records = verdicts.records(["a", "b", "c"], p, p, suspicion, 0.5, ["cat", "dog"], ["steps", "steps", None])
    assert [r["signal"] for r in records] == [None, None, None]
    records = verdicts.records(["a", "b", "c"], p, p, suspicion, 0.5, ["cat", "dog"], ["steps"] * 3)
    assert [(r["suspicion"], r["signal"]) for r in records] == [(0.0, None), (0.0, None), (0.2, "steps")]
    assert list(records[0]) == list(verdicts.RECORD_FIELDS) and "threshold" in verdicts.RECORD_FIELDS


def test_records_come_back_in_the_order_of_their_items():
    items = ["a", "bad1", "b", "c", "bad2", "bad3"]
    screened = [{"id": i} for i in items if not i.startswith("bad")]
    errors = [verdicts.error_record(i, "unreadable") for i in items if i.startswith("bad")]
    at = [k for k, i in enumerate(items) if i.startswith("bad")]
    assert [r["id"] for r in verdicts.in_item_order(screened, errors, at)] == items
    shuffled = [1, 0, 2]  # the places, not the order they are listed in, decide
    assert [r["id"] for r in verdicts.in_item_order(screened, [errors[k] for k in shuffled],
                                                    [at[k] for k in shuffled])] == items
    assert [r["id"] for r in verdicts.in_item_order(screened, errors)] == ["a", "b", "c", "bad1", "bad2", "bad3"]


def test_screening_settings_refuse_an_unknown_score_and_a_missing_detector(tmp_path):
    import json
    import shutil

    from producers.screening.screen import screening_settings
    from shared.models.network import ModelCardError
    from shared.settings import load as load_settings

    from .test_shipped_weights import WEIGHTS

    for name in ("standard", "haar", "daubechies", "defences"):
        for path in WEIGHTS.glob(f"{name}.*"):
            shutil.copy(path, tmp_path)
    settings = load_settings({"WAVESHIELD_WEIGHTS_DIR": str(tmp_path), "WAVESHIELD_MODELS": str(tmp_path / "mine")})
    assert screening_settings(settings)["score"] == "disagreement"  # no screening.json: the hand-made score
    (tmp_path / "screening.json").write_text(json.dumps({"score": "magic"}))
    with pytest.raises(ValueError, match="unknown score 'magic'"):
        screening_settings(settings)
    (tmp_path / "screening.json").write_text(json.dumps({"score": "detector"}))
    with pytest.raises(ModelCardError, match="train it: waveshield fit-detector"):
        screening_settings(settings)


def test_settings_written_for_another_detector_are_refused_in_one_line(tmp_path):
    """The user's screening.json selects the detector it was fitted with; a detector that has changed since (a new
    release's shipped one) is never read with its thresholds."""
    import json
    import shutil

    from producers.screening.screen import screening_settings
    from shared.screening import config, detector
    from shared.settings import load as load_settings

    from .test_shipped_weights import WEIGHTS

    shipped = tmp_path / "weights"
    shutil.copytree(WEIGHTS, shipped, ignore=shutil.ignore_patterns("ablation"))
    settings = load_settings({"WAVESHIELD_WEIGHTS_DIR": str(shipped), "WAVESHIELD_MODELS": str(tmp_path / "mine")})
    card = json.loads((shipped / "detector.json").read_text())
    config.write(settings.models_dir, config.with_detector(config.load(shipped), card))
    assert screening_settings(settings)["detector_sha256"] == card["sha256"]
    config.write(settings.models_dir, config.with_detector(config.load(shipped), {**card, "sha256": "0" * 64}))
    with pytest.raises(ValueError, match=r"screening.json was written for detector 000000000000, and the detector in "
                                         r"use is .*weights/detector.safetensors \(" + card["sha256"][:12]
                                         + r".*delete .*mine/screening.json to screen with the shipped files"):
        screening_settings(settings)
    # A detector of the user's own beside the shipped settings (theirs deleted): the detector is what to delete.
    (settings.models_dir / "screening.json").unlink()
    model, _ = detector.load(shipped / "detector.safetensors")
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    detector.save(model, settings.models_dir / "detector.safetensors", {k: v for k, v in card.items() if k != "sha256"})
    with pytest.raises(ValueError, match=r"weights/screening.json was written for detector " + card["sha256"][:12]
                                         + r".*delete .*mine/detector.safetensors to screen with the shipped files"):
        screening_settings(settings)


def test_a_detector_is_never_read_with_models_other_than_those_it_was_fitted_on(tmp_path):
    """Its card names the sha256 of each model its paths read; other weights under the same name are refused."""
    import shutil

    from producers.screening.screen import screening_settings
    from shared.models import network
    from shared.settings import load as load_settings

    from .test_shipped_weights import WEIGHTS

    shipped = tmp_path / "weights"
    shutil.copytree(WEIGHTS, shipped, ignore=shutil.ignore_patterns("ablation"))
    settings = load_settings({"WAVESHIELD_WEIGHTS_DIR": str(shipped), "WAVESHIELD_MODELS": str(tmp_path / "mine")})
    assert screening_settings(settings)["score"] == "detector"  # the shipped models it was fitted on
    network.save(network.ResNet18(width=4), shipped / "haar.safetensors", {"epochs": 0})  # haar trained again
    with pytest.raises(ValueError, match=r"was fitted on model 'haar' with weights 48d0d93e44a2, and 'haar' is now "
                                         r"[0-9a-f]{12}: fit one for it \(waveshield fit-detector"):
        screening_settings(settings)
