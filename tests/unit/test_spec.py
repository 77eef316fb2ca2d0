import json

import pytest

from shared.evaluation.spec import load_spec

TOML = """
data = "sample"
limit = 40
batch_size = 20
[[attacks]]
name = "BIM"
eps = [0.004, 0.01]
[[attacks]]
name = "deepfool"
steps = 10
[[configurations]]
model = "standard"
[[configurations]]
model = "haar"
defence = "haar"
"""


def test_toml_yaml_json_give_the_same_plan(tmp_path):
    (tmp_path / "s.toml").write_text(TOML)
    plan, run = load_spec(tmp_path / "s.toml")
    assert run == {"data": "sample", "limit": 40}
    assert [a["name"] for a in plan["attacks"]] == ["clean", "bim", "bim", "deepfool"]
    assert [a["params"] for a in plan["attacks"][1:3]] == [{"eps": 0.004}, {"eps": 0.01}]
    assert plan["configurations"] == [{"model": "standard", "defence": None}, {"model": "haar", "defence": "haar"}]
    assert plan["batch_size"] == 20
    raw = {"data": "sample", "limit": 40, "batch_size": 20,
           "attacks": [{"name": "BIM", "eps": [0.004, 0.01]}, {"name": "deepfool", "steps": 10}],
           "configurations": [{"model": "standard"}, {"model": "haar", "defence": "haar"}]}
    (tmp_path / "s.json").write_text(json.dumps(raw))
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    assert load_spec(tmp_path / "s.json")[0] == plan == load_spec(tmp_path / "s.yaml")[0]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[attacks]]\nname = "cw"\n[[configurations]]\nmodel = "standard"', "valid: bim, deepfool, fgsm, pgd"),
        ('[[attacks]]\nname = "fgsm"\neps = 8\n[[configurations]]\nmodel = "standard"', "/255"),
        ('[[attacks]]\nname = "fgsm"\nepsilon = 0.1\n[[configurations]]\nmodel = "standard"', "unknown parameter"),
        ('colour = "red"', "unknown key"),
        ('[[attacks]]\nname = "fgsm"', "the plan has no configurations: give at least one"),
        ("data = ", "does not parse"),
    ],
)
def test_bad_specs_raise_one_clear_error(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_spec(tmp_path / "bad.toml")


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "s.ini").write_text("x")
    with pytest.raises(ValueError, match="unknown format"):
        load_spec(tmp_path / "s.ini")
    with pytest.raises(ValueError, match="cannot read"):
        load_spec(tmp_path / "none.toml")


def test_adaptive_attack_through_a_defended_configuration(tmp_path):
    (tmp_path / "a.toml").write_text('[[attacks]]\nname = "pgd"\neps = 0.03\nthrough = {model = "haar", defence = "haar"}\n'
                                     '[[configurations]]\nmodel = "haar"\ndefence = "haar"\n')
    plan, _ = load_spec(tmp_path / "a.toml")
    from shared.evaluation.plan import AttackSpec

    assert plan["attacks"][1]["through"] == {"model": "haar", "defence": "haar"}
    assert AttackSpec.of(plan["attacks"][1]).id == "pgd eps=0.03 via haar+haar"
    (tmp_path / "b.toml").write_text('[[attacks]]\nname = "pgd"\nthrough = {net = "x"}\n[[configurations]]\nmodel = "a"\n')
    with pytest.raises(ValueError, match="through"):
        load_spec(tmp_path / "b.toml")


def test_torchattacks_attacks_and_input_transformations_by_name(tmp_path):
    (tmp_path / "c.toml").write_text('[[attacks]]\nname = "torchattacks:Square"\neps = 0.01\nn_queries = 100\n'
                                     '[[attacks]]\nname = "PGD"\neps = 0.01\n'
                                     'through = {model = "standard", defence = "jpeg:quality=30"}\n'
                                     '[[configurations]]\nmodel = "standard"\ndefence = "median:size=2"\n')
    plan, _ = load_spec(tmp_path / "c.toml")
    # ours in lower case; torchattacks' class as written, since reports show it
    assert [a["name"] for a in plan["attacks"]] == ["clean", "torchattacks:Square", "pgd"]
    assert plan["configurations"] == [{"model": "standard", "defence": "median:size=2"}]
    (tmp_path / "d.toml").write_text('[[attacks]]\nname = "torchattacks:Squares"\n[[configurations]]\nmodel = "a"\n')
    with pytest.raises(ValueError, match=r"d.toml: .*Squares.*AutoAttack.*Square"):
        load_spec(tmp_path / "d.toml")
    (tmp_path / "e.toml").write_text('[[attacks]]\nname = "torchattacks:Square"\nqueries = 9\n'
                                     '[[configurations]]\nmodel = "a"\n')
    with pytest.raises(ValueError, match="unknown parameter.*n_queries"):
        load_spec(tmp_path / "e.toml")


def test_corpus_attack_texts_name_torchattacks_classes_and_fractions():
    from producers.corpus import parse_attack

    assert parse_attack("torchattacks:Square:eps=8/255,n_queries=1000") == {
        "name": "torchattacks:Square", "params": {"eps": 8 / 255, "n_queries": 1000}}
    assert parse_attack("torchattacks:AutoAttack:eps=0.01,version=standard") == {
        "name": "torchattacks:AutoAttack", "params": {"eps": 0.01, "version": "standard"}}
    assert parse_attack("BIM:eps=0.007") == {"name": "bim", "params": {"eps": 0.007}}
    with pytest.raises(ValueError, match="key=value"):
        parse_attack("bim:0.007")


def test_named_defences_take_input_transformations(tmp_path):
    from shared.dwt import defences

    assert defences.get("jpeg:quality=30", tmp_path) == {"transform": "jpeg", "quality": 30}
    assert defences.get("median", tmp_path) == {"transform": "median", "size": 2}
    assert defences.get("haar", tmp_path)["wavelet"] == "haar"  # the DWT settings keep their names
    with pytest.raises(ValueError, match="unknown defence 'jpg'; valid: daubechies, haar, or an input transformation"):
        defences.get("jpg", tmp_path)
    with pytest.raises(ValueError, match="quality is an integer in 1..100"):
        defences.get("jpeg:quality=0", tmp_path)
