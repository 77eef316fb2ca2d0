"""attack queue: craft one attack on one batch."""

from .app import app
from .runtime import run_stage


@app.task(name="waveshield.attack", bind=True)
def attack(self, job: str, batch: int, attack: int) -> None:
    run_stage(self, "attack", job=job, batch=batch, attack=attack)


@app.task(name="waveshield.corpus_attack", bind=True)
def corpus_attack(self, job: str, shard: int, attack: int) -> None:
    run_stage(self, "corpus_attack", job=job, shard=shard, attack=attack)
