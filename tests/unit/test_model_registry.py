"""Model cards: a classifier the user brings is checked once, registered in their folder, and loaded by name."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from shared.models import network
from shared.models.architectures import ArchitectureError
from shared.models.checkpoints import ModelCardError
from shared.models.registry import MissingModel, ModelRegistry, user_models_dir
from shared.models.store import ModelStore
from tests.oracles import torchattacks_pgd_start

REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def _save(module, path):
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


@pytest.fixture()
def squeezenet(tmp_path):
    """A torchvision architecture we did not write, with three classes, saved as safetensors."""
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1(num_classes=3).eval()
    return model, _save(model, tmp_path / "sq.safetensors")


@pytest.fixture()
def registry(tmp_path):
    return ModelRegistry(REPO_WEIGHTS, tmp_path / "models")


def _add(registry, name, weights, **overrides):
    options = {"architecture": "torchvision:squeezenet1_1", "arch_args": {"num_classes": 3}, "weights": weights,
               "input_size": (48, 40), "classes": ["cat", "dog", "bird"], "mean": MEAN, "std": STD, **overrides}
    return registry.add(name, **options)


def test_a_torchvision_model_is_registered_with_its_hash_and_loads_behind_its_normalisation(registry, squeezenet):
    model, weights = squeezenet
    card = _add(registry, "shop", weights)
    stored = json.loads((registry.models_dir / "shop.json").read_text())
    assert stored["sha256"] == card.sha256 and stored["input_size"] == [48, 40]
    assert card.weights == registry.models_dir / "shop.safetensors" and card.weights.read_bytes() == weights.read_bytes()
    assert registry.names() == ["daubechies", "haar", "standard", "shop"]  # shipped first
    x = torch.rand(4, 3, 48, 40)
    expected = model((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    with torch.no_grad():
        assert torch.allclose(registry.load("shop")(x), expected.detach(), atol=1e-5)
    (registry.models_dir / "shop.safetensors").write_bytes(weights.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ModelCardError, match="sha256 differs"):
        registry.load("shop")


def test_the_shipped_models_are_cards_of_the_same_kind(registry):
    card = registry.card("haar")
    assert card.shipped and str(card.architecture) == "cifar-resnet18" and card.input_size == (32, 32)
    assert card.defended_by == "haar" and registry.card("standard").defended_by is None
    assert card.mean is None  # the shipped network normalises its inputs itself
    reference, _ = network.load(REPO_WEIGHTS / "haar.safetensors")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(registry.load("haar")(x), reference(x))


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("classifier.1.bias"), r"1 missing key \(classifier.1.bias\), 0 unexpected keys"),
    (lambda s: s.update(extra=torch.zeros(1)), r"0 missing keys, 1 unexpected key \(extra\)"),
    (lambda s: s.update({"classifier.1.bias": torch.zeros(5)}), r"classifier.1.bias is 5 in the file, 3 in the"),
])
def test_weights_that_do_not_fit_are_one_line_naming_the_keys(registry, squeezenet, tmp_path, change, message):
    state = {k: v.contiguous() for k, v in squeezenet[0].state_dict().items()}
    change(state)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ArchitectureError, match=message) as caught:
        _add(registry, "bad", tmp_path / "bad.safetensors")
    assert "\n" not in str(caught.value) and not registry.models_dir.exists()  # nothing written


def test_a_wrong_class_count_or_input_size_is_one_line(registry, squeezenet, tmp_path):
    with pytest.raises(ArchitectureError, match="gives 3 logits per image and the class list has 4 classes"):
        _add(registry, "four", squeezenet[1], classes=["a", "b", "c", "d"])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "flat_model.py").write_text(textwrap.dedent("""
        import torch

        def build(n=3):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, n))
    """))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(tmp_path / "flat"))
        with pytest.raises(ArchitectureError, match=r"python:flat_model:build fails on a batch of 48x40 images: "):
            _add(registry, "flat", _save(model, tmp_path / "flat.safetensors"), architecture="python:flat_model:build",
                 arch_args={})
        card = _add(registry, "flat", tmp_path / "flat.safetensors", architecture="python:flat_model:build",
                    arch_args={"n": 3}, input_size=(32, 32), mean=None, std=None)
        assert str(card.architecture) == "python:flat_model:build" and registry.load("flat")(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ArchitectureError, match="cannot import 'no_such_module'"):
        _add(registry, "gone", squeezenet[1], architecture="python:no_such_module:build")


def test_a_pickled_checkpoint_is_refused_unread_with_the_conversion(registry, squeezenet, tmp_path, monkeypatch):
    torch.save(squeezenet[0].state_dict(), tmp_path / "sq.pt")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickled file was opened with torch.load"))
    with pytest.raises(ArchitectureError, match=r"sq.pt is a pickled PyTorch checkpoint; waveshield never unpickles"
                                                r".*save_file\(torch.load\('sq.pt', weights_only=True\)"):
        _add(registry, "pickled", tmp_path / "sq.pt")
    assert not registry.models_dir.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_a_torchscript_archive_is_its_own_weights(registry, squeezenet, tmp_path):
    scripted = torch.jit.script(squeezenet[0])
    scripted.save(str(tmp_path / "sq-script.pt"))
    with pytest.raises(ValueError, match="holds its own weights: leave --weights out"):
        _add(registry, "scripted", squeezenet[1], architecture=f"torchscript:{tmp_path / 'sq-script.pt'}")
    card = _add(registry, "scripted", None, architecture=f"torchscript:{tmp_path / 'sq-script.pt'}", arch_args={})
    assert card.weights.name == "scripted.pt" and card.architecture.runs_code_from_file
    assert any("runs the code it holds" in line for line in card.describe())
    x = torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        expected = squeezenet[0]((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
        assert torch.allclose(registry.load("scripted")(x), expected, atol=1e-5)


@pytest.mark.parametrize("name, kwargs, message", [
    ("haar", {}, "a model 'haar' exists \\(shipped with waveshield\\); pick another name"),
    ("a:b", {}, "use letters, digits"),
    ("x", {"architecture": "torchvision:squeezenet"}, "torchvision has no model 'squeezenet'; did you mean squeezenet1_1"),
    ("x", {"architecture": "keras:thing"}, "unknown architecture 'keras:thing': expected one of torchvision"),
    ("x", {"classes": ["a", "b", "a"]}, "names a more than once"),
    ("x", {"mean": (0.5,), "std": None}, "give --mean and --std together"),
    ("x", {"std": (0.2, 0.0, 0.2)}, "--std positive"),
    ("x", {"resize": "crop"}, "resize must be one of shorter-side, squash"),
    ("x", {"defended_by": "haar2"}, "unknown defence 'haar2'"),
    ("x", {"twin": "standard"}, "twin 'standard' takes 32x32 images of 10 classes"),
    ("x", {"arch_args": {"num_classes": 3, "depth": 2}}, "rejects the arguments num_classes=3,depth=2"),
])
def test_every_mistake_is_one_line_and_writes_nothing(registry, squeezenet, name, kwargs, message):
    with pytest.raises(ValueError, match=message) as caught:
        _add(registry, name, squeezenet[1], **kwargs)
    assert "\n" not in str(caught.value) and not registry.models_dir.exists()


def test_an_existing_card_is_never_overwritten(registry, squeezenet):
    _add(registry, "shop", squeezenet[1])
    before = (registry.models_dir / "shop.json").read_text()
    with pytest.raises(ValueError, match=f"a model 'shop' exists \\(in {registry.models_dir}\\)"):
        _add(registry, "shop", squeezenet[1], classes=["x", "y", "z"])
    assert (registry.models_dir / "shop.json").read_text() == before
    with pytest.raises(MissingModel, match="no model 'shpo'.*did you mean 'shop'"):
        registry.card("shpo")
    with pytest.raises(ValueError, match="'haar' is shipped with waveshield and read-only"):
        registry.remove("haar")
    assert registry.remove("shop").name == "shop" and list(registry.models_dir.iterdir()) == []
    _add(registry, "shop", squeezenet[1], classes=["x", "y", "z"])  # the name is free again
    assert registry.card("shop").classes == ("x", "y", "z")


def test_the_models_folder_is_the_environments_else_the_per_user_data_folder():
    import platformdirs

    assert user_models_dir({"WAVESHIELD_MODELS": "/srv/models"}) == Path("/srv/models")
    assert user_models_dir({}) == Path(platformdirs.user_data_dir("waveshield", appauthor=False)) / "models"


def test_a_registered_cifar_model_runs_in_jobs_as_a_shipped_one_does(tmp_path, sample):
    """The store loads a user's 32x32 CIFAR-10 model by name and evaluates it exactly as the same weights shipped."""
    from shared.dwt import defences
    from shared.evaluation.run import evaluate_local

    torch.manual_seed(1)
    shipped = tmp_path / "weights"
    network.save(network.ResNet18(width=4), shipped / "standard.safetensors", {"epochs": 0})
    (tmp_path / "classes.txt").write_text("\n".join(network.CIFAR10_CLASSES))
    registry = ModelRegistry(shipped, tmp_path / "models")
    registry.add("mine", architecture="cifar-resnet18", arch_args={"width": 4}, weights=shipped / "standard.safetensors",
                 input_size=(32, 32), classes=list(network.CIFAR10_CLASSES), resize="squash")
    store = ModelStore(shipped, models_dir=tmp_path / "models")
    assert store.known() == ["standard", "mine"] and store.path("mine").parent == tmp_path / "models"
    plan = {"source_model": "standard", "batch_size": 32,
            "attacks": [{"name": "clean", "params": {}}, {"name": "fgsm", "params": {"eps": 0.01}}],
            "configurations": [{"model": "standard", "defence": None}, {"model": "mine", "defence": None},
                               {"model": "mine", "defence": "haar"}, {"model": "standard", "defence": "haar"}]}
    images = type(sample)(sample.images[:64], sample.labels[:64], sample.ids[:64])
    cells = evaluate_local(plan, images.to_tensor(), torch.from_numpy(images.labels), store.get,
                           lambda name: defences.get(name, REPO_WEIGHTS))
    counts = {(c.attack.id, c.configuration): c.correct for c in cells}
    for attack in {a for a, _ in counts}:
        assert counts[(attack, "mine+raw")] == counts[(attack, "standard+raw")]
        assert counts[(attack, "mine+haar")] == counts[(attack, "standard+haar")]


def test_jobs_at_32_refuse_a_model_made_for_other_images_and_evaluate_reads_its_input(tmp_path, squeezenet):
    registry = ModelRegistry(REPO_WEIGHTS, tmp_path / "models")
    _add(registry, "shop", squeezenet[1], resize="squash")
    store = ModelStore(REPO_WEIGHTS, models_dir=tmp_path / "models")
    with pytest.raises(ModelCardError, match="screening: model 'shop' takes 48x40 images of 3 classes; this job runs "
                                             "on 32x32 images labelled with CIFAR-10's ten classes"):
        store.require("shop", "screening")
    size, classes = store.inputs(["shop"])
    assert (size.height, size.width, size.resize) == (48, 40, "squash") and classes == ("cat", "dog", "bird")
    assert store.get("shop")(torch.rand(1, 3, 48, 40)).shape == (1, 3)  # a worker loads it by name
    with pytest.raises(ValueError, match=r"the models read different images: shop 48x40 \(squash\) of 3 classes; "
                                         r"standard 32x32 \(squash\) of 10 classes"):
        store.inputs(["shop", "standard"], "evaluation")


def test_fgsm_and_pgd_on_a_registered_model_equal_torchattacks_with_its_normalisation(registry, squeezenet,
                                                                                       monkeypatch):
    """Ours attack the registered model in [0, 1] pixels; torchattacks the raw model with set_normalization_used,
    on the same images preprocessed (its inputs and outputs are normalised): the same adversarial pixels."""
    import torchattacks

    from shared import attacks

    model, weights = squeezenet
    _add(registry, "shop", weights)
    ours_model = registry.load("shop")
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    x = torch.rand(6, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = ours_model(x).argmax(1)

    def theirs(attack):
        attack.set_normalization_used(mean=list(MEAN), std=list(STD))
        return attack((x - mean) / std, y) * std + mean

    assert (attacks.get("fgsm")(ours_model, x, y, eps=0.01) - theirs(torchattacks.FGSM(model, eps=0.01))).abs().max() <= 1e-5
    eps, alpha, steps, seed = 8 / 255, 2 / 255, 4, 3
    ours = attacks.pgd(ours_model, x, y, eps=eps, alpha=alpha, steps=steps, seed=seed)
    torchattacks_pgd_start(monkeypatch, x.shape, seed)
    pgd = theirs(torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True))
    monkeypatch.undo()
    assert (ours - pgd).abs().max() <= 1e-5 and (ours - x).abs().max() > eps / 2


def test_a_training_checkpoint_beside_the_cards_is_no_model(tmp_path, squeezenet):
    """`train` keeps its resumable state as NAME.safetensors + NAME.json too; listing and twins pass it over."""
    shipped = tmp_path / "weights"
    network.save(network.ResNet18(width=4), shipped / "standard.safetensors", {"epochs": 0})
    (shipped / "ckpt-haar.safetensors").write_bytes(b"state")
    (shipped / "ckpt-haar.json").write_text(json.dumps({"epoch": 1, "recipe": {}}))
    registry = ModelRegistry(shipped, tmp_path / "models")
    assert registry.names() == ["standard"] and registry.twin_for("standard") is None
    (shipped / "broken.safetensors").write_bytes(b"x")
    (shipped / "broken.json").write_text("{not json")
    with pytest.raises(ModelCardError, match="model card .*broken.json is unreadable"):
        registry.card("broken")  # a broken card is still named, and says what is wrong with it
    assert registry.twin_for("standard") is None  # and breaks no other model's lookup


def test_the_shipped_grid_on_the_standard_model_takes_the_haar_model_as_its_twin():
    from producers.jobs import plan_for_model
    from shared.settings import load as load_settings

    settings = load_settings({"WAVESHIELD_WEIGHTS_DIR": str(REPO_WEIGHTS), "WAVESHIELD_MODELS": "/nonexistent"})
    assert plan_for_model("standard", None, None, settings)["configurations"] == [
        {"model": "standard", "defence": None}, {"model": "standard", "defence": "haar"},
        {"model": "haar", "defence": "haar"}]  # the paper's Haar half
    assert plan_for_model("standard", None, "daubechies", settings)["configurations"][-1] == {
        "model": "daubechies", "defence": "daubechies"}
