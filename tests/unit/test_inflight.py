"""Backpressure counts the bytes of a batch at its own input size: one setting bounds Redis at any resolution."""

from shared.images.geometry import InputSize
from shared.pipeline.inflight import batches_allowed, corpus_batch_bytes, evaluate_batch_bytes, screen_batch_bytes

PLAN = {"attacks": [{"name": "fgsm"}, {"name": "bim"}],
        "configurations": [{"model": "m", "defence": None}, {"model": "m", "defence": "haar"},
                           {"model": "t", "defence": "haar"}, {"model": "m", "defence": "jpeg:quality=30"}]}


def test_a_batch_at_224_by_160_holds_35_times_the_bytes_of_one_at_32():
    ratio = 224 * 160 / (32 * 32)
    for mode in ("staged", "fused"):
        plan = {**PLAN, "mode": mode}
        for count in (screen_batch_bytes(plan, 64, 1, (224, 160)) / screen_batch_bytes(plan, 64, 1),
                      corpus_batch_bytes(plan, 64, 1, 2, InputSize(224, 160)) / corpus_batch_bytes(plan, 64, 1, 2),
                      evaluate_batch_bytes(plan, 64, 1, (224, 160)) / evaluate_batch_bytes(plan, 64, 1)):
            assert count == ratio
    # Fused: the clean uint8 images alone; staged: per attack the adversarial images and one reconstruction per
    # defence (haar and jpeg), float32.
    pixels = 64 * 224 * 160 * 3
    assert evaluate_batch_bytes({**PLAN, "mode": "fused"}, 64, 1, (224, 160)) == pixels
    assert evaluate_batch_bytes({**PLAN, "mode": "staged"}, 64, 1, (224, 160)) == pixels + 2 * (1 + 2) * pixels * 4
    assert batches_allowed(screen_batch_bytes({"mode": "fused"}, 256, 1, (224, 224)), 64) == 1  # 37 MiB a batch
    assert batches_allowed(screen_batch_bytes({"mode": "fused"}, 256, 1), 64) == 85
