"""The words of a job's plan that producers need without the models: modes and configuration ids.

Kept apart from :mod:`shared.evaluation` (which imports torch) so that a
producer starts in a fraction of a second and its first batch reaches a
queue before torch could have loaded.
"""

#: How a job runs on the workers: each stage on its own queue, or all of a batch's stages in one task.
STAGED, FUSED = "staged", "fused"
MODES = (STAGED, FUSED)


def configuration_id(config: dict) -> str:
    """``model+defence``, with ``raw`` for no defence."""
    return f"{config['model']}+{config.get('defence') or 'raw'}"
