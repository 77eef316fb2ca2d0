"""dwt queue: reconstruct one attacked batch with one named defence."""

from .app import app
from .runtime import run_stage


@app.task(name="waveshield.dwt", bind=True)
def dwt(self, job: str, batch: int, attack: int, defence: str) -> None:
    run_stage(self, "dwt", job=job, batch=batch, attack=attack, defence=defence)


@app.task(name="waveshield.screen_dwt", bind=True)
def screen_dwt(self, job: str, batch: int) -> None:
    run_stage(self, "screen_dwt", job=job, batch=batch)
