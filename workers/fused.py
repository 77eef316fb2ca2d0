"""fused queue: every stage of one batch in one process, for jobs in fused mode; only counts leave it."""

from .app import app
from .runtime import run_stage


@app.task(name="waveshield.fused", bind=True)
def fused(self, job: str, batch: int) -> None:
    run_stage(self, "fused", job=job, batch=batch)


@app.task(name="waveshield.screen_fused", bind=True)
def screen_fused(self, job: str, batch: int) -> None:
    run_stage(self, "screen_fused", job=job, batch=batch)
