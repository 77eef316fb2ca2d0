"""The distributed evaluation, stage by stage, on Redis: what every worker task calls.

Routing slip: a job's plan is stored once; each stage reads it and returns
the messages of the stages after it, as ``(queue, kwargs)`` pairs of plain
JSON, which the worker sends. No chords, no results backend.

    attack   clean blob -> attack on the source model -> adversarial blob
    dwt      adversarial blob -> reconstruct() -> reconstructed blob
    classify blob -> predictions of every model configured on that input
    collect  correct/total of one (batch, attack, configuration) cell, once
    fused    (fused jobs) all of a batch's stages in one task; only counts go on

Exactly once: a stage that already finished (its done-marker is set) only
re-sends its messages and releases its input; the collector records each
cell with HSETNX inside a Lua script, so a redelivered message never counts
twice. Blobs are released by their consumers (see :mod:`shared.store.blobs`).

One module per job kind (:mod:`.evaluate`, :mod:`.screen`, :mod:`.corpus`)
over the shared keys (:mod:`.keys`), collector scripts (:mod:`.scripts`) and
job bookkeeping (:mod:`.base`). A job that stalls because a Redis crash lost
a message is re-driven from :mod:`.recovery`.
"""

from __future__ import annotations

from shared.pipeline.corpus import CorpusStages
from shared.pipeline.evaluate import EvaluateStages
from shared.pipeline.keys import (
    KEEP_JOB_S,
    QUEUES,
    RAW,
    TASK_QUEUES,
    adversarial_key,
    clean_key,
    corpus_output,
    reconstructed_key,
    records_key,
)
from shared.pipeline.recovery import Recovery
from shared.pipeline.screen import ScreenStages


class Pipeline(EvaluateStages, ScreenStages, CorpusStages, Recovery):
    """Stage functions over one Redis.

    Parameters
    ----------
    redis : redis.Redis
        Client for blobs, plans and counts.
    get_model : callable
        Model name -> network in eval mode on ``device`` (cached by the caller).
    defence_options : callable
        Defence name -> reconstruct() options.
    get_detector : callable, optional
        sha256 -> the learned detector and its card (screening with it).
    device : str
        Where tensors go.
    blob_ttl_s : int
        Lifetime of a blob nobody consumes.
    keep_errors : int
        The stage errors a job keeps (``WAVESHIELD_KEEP_ERRORS``); all are counted.
    """


__all__ = ["KEEP_JOB_S", "QUEUES", "RAW", "TASK_QUEUES", "Pipeline", "adversarial_key", "clean_key", "corpus_output",
           "reconstructed_key", "records_key"]
