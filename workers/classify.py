"""classify queue: predictions of every model configured on one input."""

from .app import app
from .runtime import run_stage


@app.task(name="waveshield.classify", bind=True)
def classify(self, job: str, batch: int, attack: int, defence: str) -> None:
    run_stage(self, "classify", job=job, batch=batch, attack=attack, defence=defence)


@app.task(name="waveshield.screen_classify", bind=True)
def screen_classify(self, job: str, batch: int) -> None:
    run_stage(self, "screen_classify", job=job, batch=batch)
