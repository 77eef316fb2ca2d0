"""The words of a job's plan that producers need without the models: modes and configuration ids.

Kept apart from :mod:`shared.evaluation` (which imports torch) so that a
producer starts in a fraction of a second and its first batch reaches a
queue before torch could have loaded.
"""

#: How a job runs on the workers: each stage on its own queue, or all of a batch's stages in one task.
STAGED, FUSED = "staged", "fused"
MODES = (STAGED, FUSED)


#: The published experiment's budgets (L-inf, in [0, 1] pixel units) ...
PAPER_EPS = (0.004, 0.007, 0.01)
#: ... and its attacks, in the order its tables give them: FGSM and BIM at each budget, then DeepFool.
_PAPER = tuple([(name, {"eps": eps}) for name in ("fgsm", "bim") for eps in PAPER_EPS] + [("deepfool", {})])


def paper_attacks() -> list[dict]:
    """The paper's seven attacks as plan entries (``{"name", "params"}``), fresh copies in the paper's order."""
    return [{"name": name, "params": dict(params)} for name, params in _PAPER]


def configuration_id(config: dict) -> str:
    """``model+defence``, with ``raw`` for no defence."""
    return f"{config['model']}+{config.get('defence') or 'raw'}"
