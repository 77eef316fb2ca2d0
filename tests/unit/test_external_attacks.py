"""torchattacks:NAME through the registry: the same images as torchattacks' own call, under the registry's contract.

The oracle of each attack is the direct ``torchattacks.X(model, ...)(images, labels)``
call, with the seeding the adapter promises (``torch.manual_seed(seed)``) done here
explicitly, on the shipped standard model and the embedded CIFAR-10 sample.
"""

from __future__ import annotations

import functools
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from shared import attacks
from shared.attacks import BPDA, external, parse_value
from shared.dwt.transform import reconstruct
from shared.images.load import load_images
from shared.models.store import ModelStore

torchattacks = pytest.importorskip("torchattacks")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a 2-core machine with another busy process, two OpenMP threads spin-wait each other:
    # APGD on 16 images took 25 s instead of 0.7 s. The results do not depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return ModelStore(REPO / "weights").get("standard").eval()


@pytest.fixture(scope="module")
def batch():
    images = load_images("sample", limit=16)
    return images.to_tensor(), torch.from_numpy(images.labels)


def seeded(seed, call):
    """``call()`` after ``torch.manual_seed(seed)``: the seeding the adapter does (on a fork of the RNG)."""
    torch.manual_seed(seed)
    return call()


# --- parse_value ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("8/255", 8 / 255), (" 8 / 255 ", 8 / 255), ("0.01", 0.01), ("1e-3", 1e-3), (".5", 0.5), ("1000", 1000),
    ("-3", -3), ("true", True), ("False", False), ("none", None), ("Linf", "Linf"), ("standard", "standard"),
    ("ce", "ce"), ("(2, 10)", (2, 10)),
])
def test_parse_value(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["", "1/0", "(2, 10"])
def test_parse_value_refuses_in_one_line(text):
    with pytest.raises(ValueError) as info:
        parse_value(text)
    assert "\n" not in str(info.value)


# --- names, parameters, errors ----------------------------------------------------------------------------------------


def test_registry_imports_torchattacks_only_when_asked():
    code = ("import sys; from shared import attacks; attacks.get('pgd'); attacks.parameters('fgsm');"
            "assert 'torchattacks' not in sys.modules; attacks.get('torchattacks:PGD');"
            "assert 'torchattacks' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_names_stay_ours_and_the_unknown_name_error_mentions_torchattacks():
    assert attacks.names() == sorted(attacks.ATTACKS)
    with pytest.raises(ValueError) as info:
        attacks.get("x")
    assert str(info.value) == ("unknown attack 'x'; valid: bim, deepfool, fgsm, pgd, "
                               "or torchattacks:NAME (e.g. torchattacks:AutoAttack)")


def test_unknown_class_lists_the_torchattacks_attacks():
    with pytest.raises(ValueError) as info:
        attacks.get("torchattacks:AutoAtack")
    message = str(info.value)
    assert "\n" not in message and "'AutoAtack'" in message
    listed = message.split("valid: ", 1)[1].split(", ")
    assert {"AutoAttack", "Square", "APGD", "CW", "EOTPGD", "PGD"} <= set(listed)
    assert not {"Attack", "MultiAttack", "LGV"} & set(listed)
    assert listed == external.available()


def test_class_name_case_insensitively():
    assert attacks.get("torchattacks:autoattack") is attacks.get("torchattacks:AutoAttack")
    assert attacks.get("TorchAttacks:SQUARE") is attacks.get("torchattacks:Square")
    assert attacks.get("torchattacks:deepfool").__name__ == "torchattacks:DeepFool"


def test_parameters_are_the_signature_for_every_attack():
    for name in attacks.names():
        expected = sorted(set(inspect.signature(attacks.get(name)).parameters) - {"model", "images", "labels"})
        assert attacks.parameters(name) == expected
    for cls in external.available():
        name = f"torchattacks:{cls}"
        own = list(inspect.signature(getattr(torchattacks, cls).__init__).parameters)[2:]
        assert attacks.parameters(name) == sorted(set(own) | {"seed"})
        # validate_plan reads the function's signature: it must say the same
        assert sorted(set(inspect.signature(attacks.get(name)).parameters) - {"model", "images", "labels"}) == \
            attacks.parameters(name)
    assert attacks.parameters("torchattacks:PGD") == ["alpha", "eps", "random_start", "seed", "steps"]


def test_unknown_parameter_lists_the_accepted_ones(model, batch):
    x, y = batch
    with pytest.raises(ValueError) as info:
        attacks.get("torchattacks:PGD")(model, x[:2], y[:2], eps=0.01, iters=5)
    assert str(info.value) == ("torchattacks:PGD: unknown parameter(s) iters; "
                               "valid: alpha, eps, random_start, seed, steps")


@pytest.mark.parametrize("name, params, says", [
    ("AutoAttack", {"version": "fast"}, "Not valid version"),  # the constructor refuses
    ("APGD", {"norm": "L3"}, "norm='L3'"),  # refused only when it attacks (an assert)
    ("PGD", {"eps": "8/255"}, "eps must be a number, got '8/255'"),  # text from a command line, not parsed
    ("PGD", {"eps": 8.0}, "eps=8.0 is outside [0, 1]"),  # the 0-255 scale
    ("Square", {"seed": 1.5}, "seed must be an integer or None"),
])
def test_bad_value_is_one_line_naming_the_attack(model, batch, name, params, says):
    x, y = batch
    model.train()
    with pytest.raises(ValueError) as info:
        attacks.get(f"torchattacks:{name}")(model, x[:2], y[:2], **params)
    assert model.training  # restored on the way out of an error too
    model.eval()
    message = str(info.value)
    assert "\n" not in message and says in message and f"torchattacks:{name}" in message


# --- the attacks: torchattacks' own result, under the registry's contract --------------------------------------------


@pytest.mark.parametrize("name, params, direct", [
    ("FGSM", {"eps": 8 / 255}, lambda m: torchattacks.FGSM(m, eps=8 / 255)),
    ("PGD", {"eps": 8 / 255, "alpha": 2 / 255, "steps": 5, "seed": 3},
     lambda m: torchattacks.PGD(m, eps=8 / 255, alpha=2 / 255, steps=5)),
    ("APGD", {"eps": 4 / 255, "steps": 5}, lambda m: torchattacks.APGD(m, eps=4 / 255, steps=5, seed=0)),
    ("Square", {"eps": 4 / 255, "n_queries": 60}, lambda m: torchattacks.Square(m, eps=4 / 255, n_queries=60, seed=0)),
    ("EOTPGD", {"eps": 4 / 255, "steps": 2, "eot_iter": 2, "seed": 5},
     lambda m: torchattacks.EOTPGD(m, eps=4 / 255, alpha=2 / 255, steps=2, eot_iter=2)),
])
def test_equals_torchattacks_own_call(model, batch, name, params, direct):
    x, y = batch
    ours = attacks.get(f"torchattacks:{name}")(model, x, y, **params)
    theirs = seeded(params.get("seed", 0), lambda: direct(model)(x, y))
    assert torch.equal(ours, theirs)
    eps = params["eps"]
    assert not ours.requires_grad and ours.device == x.device and ours.shape == x.shape
    assert ours.min() >= 0 and ours.max() <= 1 and (ours - x).abs().max() <= eps + 1e-6


def test_autoattack_standard_equals_torchattacks_own_call(model, batch):
    # 16 images at 8/255 on the undefended model: APGD-CE (the first of the four) fools all of them,
    # so MultiAttack stops there: 1 s on one thread. The 10-class count and seed 0 are the adapter's fill.
    x, y = batch
    ours = attacks.get("torchattacks:AutoAttack")(model, x, y, eps=8 / 255, version="standard")
    direct = torchattacks.AutoAttack(model, eps=8 / 255, version="standard", n_classes=10, seed=0)
    theirs = seeded(0, lambda: direct(x, y))
    assert torch.equal(ours, theirs)
    assert (ours - x).abs().max() <= 8 / 255 + 1e-6 and ours.min() >= 0 and ours.max() <= 1
    with torch.no_grad():
        assert (model(ours).argmax(1) == y).float().mean() < (model(x).argmax(1) == y).float().mean()


def test_n_classes_comes_from_the_model(model, batch, monkeypatch):
    x, y = batch
    seen = {}
    original = torchattacks.APGDT.__init__

    @functools.wraps(original)  # the adapter reads the constructor's signature
    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(torchattacks.APGDT, "__init__", spy)
    five = nn.Sequential(model, nn.Linear(10, 5))  # a 5-class head: torchattacks' default 10 would be wrong
    attacks.get("torchattacks:APGDT")(five, x[:2], y[:2] % 5, eps=4 / 255, steps=2)
    assert seen["n_classes"] == 5 and seen["seed"] == 0
    attacks.get("torchattacks:APGDT")(five, x[:2], y[:2] % 5, eps=4 / 255, steps=2, n_classes=3, seed=4)
    assert seen["n_classes"] == 3 and seen["seed"] == 4  # the caller's values win


def test_reproducible_and_the_callers_rng_untouched(model, batch):
    x, y = batch
    pgd = attacks.get("torchattacks:PGD")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = pgd(model, x[:4], y[:4], eps=0.03, steps=2)
    torch.rand(7)  # the caller's stream moves on; the attack's does not depend on it
    b = pgd(model, x[:4], y[:4], eps=0.03, steps=2)
    c = pgd(model, x[:4], y[:4], eps=0.03, steps=2, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(123)
    pgd(model, x[:4], y[:4], eps=0.03, steps=2)
    attacks.get("torchattacks:APGD")(model, x[:4], y[:4], eps=0.03, steps=2)  # APGD calls torch.manual_seed itself
    assert torch.equal(torch.get_rng_state(), before)


def test_train_eval_flags_restored(model, batch):
    x, y = batch
    model.train()
    frozen = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][:3]
    for m in frozen:
        m.eval()  # a model in training whose first norms are frozen: torchattacks' own restore would unfreeze them
    flags = [m.training for m in model.modules()]
    try:
        attacks.get("torchattacks:PGD")(model, x[:2], y[:2], eps=0.01, steps=1)
        assert [m.training for m in model.modules()] == flags
    finally:
        model.eval()


def test_through_bpda_equals_torchattacks_on_the_same_wrapper(model, batch):
    x, y = batch
    defended = BPDA(model, functools.partial(reconstruct, wavelet="haar"))
    ours = attacks.get("torchattacks:PGD")(defended, x[:8], y[:8], eps=8 / 255, steps=3, seed=2)
    assert defended.training and not any(m.training for m in model.modules())  # each flag as it was
    defended.eval()  # else torchattacks' own call leaves the classifier in training mode (the test below)
    theirs = seeded(2, lambda: torchattacks.PGD(defended, eps=8 / 255, steps=3)(x[:8], y[:8]))
    assert torch.equal(ours, theirs) and (ours - x[:8]).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        fooled = (defended(ours).argmax(1) != y[:8]).float().mean()
    assert fooled > 0


def test_why_eval_mode_torchattacks_own_call_trains_a_wrapped_model(model, batch):
    # A new wrapper module is in training mode; torchattacks restores "training" with model.train(),
    # which puts every submodule, the eval-mode classifier inside too, in training mode.
    x, y = batch
    try:
        torchattacks.FGSM(BPDA(model, lambda images: images), eps=0.01)(x[:2], y[:2])
        assert model.training
        model.eval()
        attacks.get("torchattacks:FGSM")(BPDA(model, lambda images: images), x[:2], y[:2], eps=0.01)
        assert not any(m.training for m in model.modules())
    finally:
        model.eval()


def test_model_without_parameters_runs_quietly(model, batch, capsys):
    # torchattacks finds the device in the model's parameters, else prints and leaves it unset.
    class Functional(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.__dict__["fn"] = fn  # not a submodule: no parameters

        def forward(self, images):
            return self.fn(images)

    x, y = batch
    wrapped = attacks.get("torchattacks:PGD")(Functional(model), x[:4], y[:4], eps=0.02, steps=2)
    direct = attacks.get("torchattacks:PGD")(model, x[:4], y[:4], eps=0.02, steps=2)
    assert torch.equal(wrapped, direct)
    assert capsys.readouterr().out == ""
