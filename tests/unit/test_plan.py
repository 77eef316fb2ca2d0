"""A plan's words as types: attack specs and model paths are built once from the plan's entries, never parsed back."""

import pytest

from producers.detector.report import SOURCE_ATTACKS, SOURCE_COLUMNS
from shared.evaluation.plan import CLEAN, EPS_8_255, AttackSpec, ModelPath, paper_attacks, paper_plan
from shared.screening.detector import PATHS
from shared.screening.examples import HELD_OUT, TRAINED


def test_every_attack_of_the_adaptive_paper_plan_round_trips_through_its_entry():
    for entry in paper_plan(adaptive=True)["attacks"]:
        spec = AttackSpec.of(entry)
        assert AttackSpec.of(spec.entry()) == spec
        assert spec.entry() == entry  # what the plan holds, nothing added
        assert spec.adaptive == ("through" in entry) and (" via haar+haar" in spec.id) == spec.adaptive
    assert [AttackSpec.of(a).id for a in paper_attacks()] == [
        "fgsm eps=0.004", "fgsm eps=0.007", "fgsm eps=0.01", "bim eps=0.004", "bim eps=0.007", "bim eps=0.01", "deepfool"]


def test_ids_slugs_and_labels_of_an_adaptive_attack():
    spec = AttackSpec("pgd", (("eps", EPS_8_255), ("steps", 10)), ModelPath("haar", "haar"))
    assert spec.id == "pgd eps=0.031373 steps=10 via haar+haar"
    assert spec.slug == "pgd_eps0.031373_steps10_via_haarhaar"
    assert spec.label == "pgd eps=0.031373 (8/255) steps=10 via haar+haar"
    assert spec.short_label == "pgd 0.031373 steps=10" and spec.kwargs == {"eps": EPS_8_255, "steps": 10}
    assert AttackSpec.named("bim", eps=0.01) == AttackSpec.of({"name": "bim", "params": {"eps": 0.01}})
    assert AttackSpec.named(CLEAN).id == "clean" and not AttackSpec.named(CLEAN).adaptive


def test_a_model_path_has_the_grid_spelling_and_the_detector_spelling():
    assert ModelPath.of({"model": "standard", "defence": None}).id == "standard+raw"
    assert ModelPath("haar", "haar").name == "haar@haar" and ModelPath("standard").name == "standard@raw"
    for name in PATHS:
        assert ModelPath.named(name).name == name
    for bad in ("standard", "@raw", "standard@"):
        with pytest.raises(ValueError, match="MODEL@DEFENCE"):
            ModelPath.named(bad)


def test_the_detector_reports_columns_are_attacks_every_source_is_measured_on():
    measured = {spec.id for spec in (*TRAINED, *HELD_OUT)}
    assert set(SOURCE_COLUMNS) <= measured, set(SOURCE_COLUMNS) - measured
    assert len(SOURCE_ATTACKS) == len(SOURCE_COLUMNS) == 6


def test_two_entries_are_one_attack_when_their_ids_are():
    one, one_float = AttackSpec.named("fgsm", eps=1), AttackSpec.named("fgsm", eps=1.0)
    assert one.id == "fgsm eps=1" and one_float.id == "fgsm eps=1.0"
    assert one != one_float and len({one, one_float}) == 2  # two cells, as their ids say
    assert AttackSpec.of(one.entry()) == one and hash(AttackSpec.of(one.entry())) == hash(one)


def test_wavelet_names_come_from_pywavelets_when_first_asked_for():
    import subprocess
    import sys

    script = ("import sys; import shared.dwt as dwt; from shared.dwt import defences; before = 'pywt' in sys.modules; "
              "print(before, 'haar' in dwt.WAVELETS and 'db2' in dwt.WAVELETS, 'pywt' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "True", "True"], out.stderr


def test_the_papers_grid_on_any_model_names_its_source_defence_and_twin():
    from shared.evaluation.plan import model_plan, paper_attacks

    plan = model_plan("shop", "jpeg:quality=30", "shop-haar", adaptive=True)
    assert plan["source_model"] == "shop" and plan["attacks"][1:8] == paper_attacks()
    assert plan["configurations"] == [{"model": "shop", "defence": None}, {"model": "shop", "defence": "jpeg:quality=30"},
                                      {"model": "shop-haar", "defence": "jpeg:quality=30"}]
    assert {a["through"]["model"] for a in plan["attacks"] if a.get("through")} == {"shop-haar"}
    alone = model_plan("shop", "haar")
    assert len(alone["configurations"]) == 2 and not any(a.get("through") for a in alone["attacks"])
