"""collect queue: record one result cell exactly once."""

from shared import settings

from .app import app
from .runtime import run_stage


@app.task(name="waveshield.collect", bind=True)
def collect(self, job: str, batch: int, attack: int, configuration: str, correct: int, total: int) -> None:
    run_stage(self, "collect", job=job, batch=batch, attack=attack, configuration=configuration, correct=correct,
              total=total)


@app.task(name="waveshield.collect_cells", bind=True)
def collect_cells(self, job: str, batch: int, cells: list) -> None:
    run_stage(self, "collect_cells", job=job, batch=batch, cells=cells)


@app.task(name="waveshield.screen_collect", bind=True)
def screen_collect(self, job: str, batch: int) -> None:
    run_stage(self, "screen_collect", job=job, batch=batch)


@app.task(name="waveshield.corpus_collect", bind=True)
def corpus_collect(self, job: str, shard: int, attack: int) -> None:
    # The collector's own output directory: it is the corpus's single writer.
    run_stage(self, "corpus_collect", job=job, shard=shard, attack=attack, output_dir=settings.load().output_dir)
