"""Every worker beats and sweeps: stranded messages go out again within a minute, not an hour.

A consumer step (it restarts with every broker connection): every few seconds
the worker says it is alive and which queues it consumes, and one worker at a
time hands out again the messages that no task runs any more
(:func:`shared.pipeline.orphans.orphans`), through the transport's own restore.
"""

from __future__ import annotations

import logging

from celery import bootsteps

from shared.pipeline import orphans
from shared.store.client import CONNECTION_ERRORS

from .runtime import quick_client

log = logging.getLogger("waveshield")


class Sweeper(bootsteps.StartStopStep):
    """Heartbeat and orphan sweep on the consumer's timer."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self.timers = []

    def start(self, c):
        self.beat(c)
        self.timers = [c.timer.call_repeatedly(orphans.BEAT_EVERY_S, self.beat, (c,)),
                       c.timer.call_repeatedly(orphans.SWEEP_EVERY_S, self.sweep, (c,))]

    def stop(self, c):
        for timer in self.timers:
            timer.cancel()
        self.timers = []

    shutdown = stop

    def beat(self, c):
        try:
            orphans.beat(quick_client(), c.hostname, [q.name for q in c.task_consumer.queues])
        except CONNECTION_ERRORS:
            pass  # Redis away: the consumer reconnects and this step starts again

    def sweep(self, c):
        try:
            client = quick_client()
            if not orphans.take_sweep_turn(client, c.hostname):
                return
            for found in orphans.orphans(client):
                c.task_consumer.channel.qos.restore_by_tag(found.tag)
                log.warning("handed out again %s (task %s on %s, delivered %.0f s ago, run by no worker)",
                            found.task, found.task_id, found.queue, found.age_s)
        except CONNECTION_ERRORS:
            pass
