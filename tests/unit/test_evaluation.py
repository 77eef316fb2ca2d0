"""The in-process runner: counts, adaptive (BPDA) attacks, and the paper plan."""

import torch

from shared.attacks import BPDA
from shared.dwt.transform import reconstruct
from shared.evaluation.plan import paper_plan
from shared.evaluation.run import attack_model, evaluate_local


def test_adaptive_attacks_are_crafted_through_the_defence(trained_model, correctly_classified):
    x, y = correctly_classified
    plan = paper_plan(batch_size=32, adaptive=True)
    plan["configurations"] = [{"model": "haar", "defence": "haar"}]
    adaptive = plan["attacks"][-1]  # PGD at 8/255 through the Haar defence, with BPDA
    transfer = {"name": adaptive["name"], "params": adaptive["params"]}  # the same, crafted on the raw model
    plan["attacks"] = [plan["attacks"][0], transfer, adaptive]
    models = {"standard": trained_model, "haar": trained_model}
    # A strong denoising (a noise level of 0.1 assumed): it undoes much of a perturbation crafted without it.
    options = {"haar": {"wavelet": "haar", "sigma": 0.1}}
    assert isinstance(attack_model(plan, plan["attacks"][-1], models.get, options.get), BPDA)
    cells = {c.attack.id: c for c in evaluate_local(plan, x, y, models.get, options.get)}
    assert cells["clean"].total == len(x) == cells["pgd eps=0.031373 via haar+haar"].total
    # The same attack at the same eps leaves fewer images right when crafted through the defence (BPDA).
    assert cells["pgd eps=0.031373 via haar+haar"].correct < cells["pgd eps=0.031373"].correct
    with torch.no_grad():
        expected = int((trained_model(reconstruct(x, **options["haar"])).argmax(1) == y).sum())
    assert cells["clean"].correct == expected


def test_a_plan_that_names_threads_crafts_on_that_many(trained_model, correctly_classified):
    import pytest

    from shared.evaluation.run import craft, validate_plan

    x, y = correctly_classified
    seen = []

    class Recording(torch.nn.Module):
        def forward(self, images):
            seen.append(torch.get_num_threads())
            return trained_model(images)

    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2
    craft(Recording(), x[:4], y[:4], {"name": "fgsm", "params": {"eps": 0.01}}, threads=wanted)
    assert seen and set(seen) == {wanted} and torch.get_num_threads() == before
    seen.clear()
    craft(Recording(), x[:4], y[:4], {"name": "fgsm", "params": {"eps": 0.01}})
    assert set(seen) == {before}
    for bad in (0, "2", 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            validate_plan({**paper_plan(), "threads": bad})


def test_a_plan_runs_staged_or_fused_and_nothing_else(tmp_path):
    import pytest

    from shared.evaluation.run import validate_plan
    from shared.evaluation.spec import load_spec

    validate_plan({**paper_plan(), "mode": "fused"})
    with pytest.raises(ValueError, match="unknown mode 'turbo'; valid: staged, fused"):
        validate_plan({**paper_plan(), "mode": "turbo"})
    spec = tmp_path / "s.toml"
    spec.write_text('mode = "fused"\nthreads = 2\n[[attacks]]\nname = "fgsm"\neps = 0.01\n'
                    '[[configurations]]\nmodel = "standard"\n')
    plan, _ = load_spec(spec)
    assert (plan["mode"], plan["threads"]) == ("fused", 2)
