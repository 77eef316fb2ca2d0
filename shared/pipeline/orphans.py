"""Messages no worker runs any more: leases, the census of the queues, and what to hand out again.

Celery's Redis transport keeps every delivered, not yet acknowledged message
in a hash (``unacked``) and hands it out again only after the visibility
timeout (an hour by default). Two things strand a message there:

* a lost broker connection: the worker cancels its running task (it could not
  acknowledge it) and forgets the message; after the reconnect nobody holds it;
* a worker killed as a whole: its pool child's task dies with it.

So a running task holds a *lease*: a key with a short expiry, renewed by a
thread beside the task while it runs. A message delivered more than
``ORPHAN_AFTER_S`` ago whose task holds no lease is run by nobody, and the
workers' sweep (``workers.sweeper``) hands it out again at once instead of an
hour later. A running task renews its lease every ``LEASE_RENEW_S``, so its
message is never handed out twice; a worker that cannot reach Redis to renew
it cannot acknowledge its task either, and cancels it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import redis

from shared.pipeline.keys import QUEUES, SWEEP_LOCK_KEY, lease_key, worker_key

#: Celery's Redis transport: delivered, unacknowledged messages (tag -> [message, exchange, routing key]),
#: and when each was delivered (tag -> unix time).
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"

LEASE_TTL_S = 30  # a lease not renewed this long is gone: its task no longer runs
LEASE_RENEW_S = 5  # how often a running task renews it (six chances before it lapses)
# A message is an orphan only when delivered this long ago: a worker that has just taken it
# has not started its task (nor taken the lease) yet. Equal to the lease's lifetime, so a
# lease lost with a Redis crash (at most a second of writes) has lapsed too.
ORPHAN_AFTER_S = LEASE_TTL_S
SWEEP_EVERY_S = 10  # how often the workers look for orphans (one of them at a time)
WORKER_TTL_S = 30  # a worker's heartbeat key outlives a few missed beats, then says it is gone
BEAT_EVERY_S = 5


class Lease:
    """Hold ``task_id``'s lease while the block runs: a key renewed by a background thread.

    The key is left to expire on exit rather than deleted, so that a task that
    has finished but not yet been acknowledged is not mistaken for an orphan.

    Parameters
    ----------
    client : redis.Redis
        Takes the lease (a client that rides out a short outage may, like the task's own).
    task_id : str
        Celery's task id (the ``id`` header of the message).
    renew_client : redis.Redis, optional
        Renews it: a client whose failing commands raise quickly, so that the
        thread never hangs [default: ``client``].
    ttl_s, renew_s : float
        The lease's lifetime and how often it is renewed.
    """

    def __init__(self, client: redis.Redis, task_id: str, renew_client: redis.Redis | None = None,
                 ttl_s: float = LEASE_TTL_S, renew_s: float = LEASE_RENEW_S):
        self.client, self.renew_client = client, renew_client or client
        self.key, self.ttl_ms, self.renew_s = lease_key(task_id), int(ttl_s * 1000), renew_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_until_stopped, name=f"lease-{task_id}", daemon=True)

    def __enter__(self) -> Lease:
        self.client.set(self.key, 1, px=self.ttl_ms)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)  # a renewal stuck on a dead connection must not hold the task

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                # PEXPIRE takes no memory, so a full Redis (maxmemory, noeviction) still renews the lease.
                if not self.renew_client.pexpire(self.key, self.ttl_ms):
                    self.renew_client.set(self.key, 1, px=self.ttl_ms)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                pass  # Redis away: the worker cancels this task on the lost connection anyway
            except redis.exceptions.ResponseError:
                pass  # full, and the lease had expired: tried again at the next renewal


@dataclass(frozen=True)
class Delivery:
    """One delivered, unacknowledged message."""

    tag: str  # the transport's delivery tag (the unacked hash's field)
    task_id: str | None
    task: str | None  # e.g. "waveshield.attack"
    queue: str  # the routing key, which is the queue's name for waveshield's queues
    age_s: float  # since it was delivered
    running: bool  # its task holds a lease


def deliveries(client: redis.Redis, now: float | None = None) -> list[Delivery]:
    """Every message Celery has delivered and not yet seen acknowledged, with whether its task runs."""
    now = time.time() if now is None else now
    raw = client.hgetall(UNACKED_KEY)
    if not raw:
        return []
    tags = list(raw)
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        pipe.zscore(UNACKED_INDEX_KEY, tag)
    scores = pipe.execute()
    found = []
    for tag, score in zip(tags, scores):
        try:
            message, _exchange, routing_key = json.loads(raw[tag])
            headers = message.get("headers") or {}
        except (ValueError, TypeError, AttributeError):
            continue  # not a message of Celery's protocol: left to the visibility timeout
        found.append((tag.decode(), headers.get("id"), headers.get("task"), routing_key,
                      now - score if score is not None else 0.0))
    pipe = client.pipeline(transaction=False)
    for _tag, task_id, *_ in found:
        pipe.exists(lease_key(task_id or "-"))
    leased = pipe.execute()
    return [Delivery(tag, task_id, task, queue, age, bool(int(held)))
            for (tag, task_id, task, queue, age), held in zip(found, leased)]


def orphans(client: redis.Redis, now: float | None = None) -> list[Delivery]:
    """The deliveries of waveshield's queues that no task runs: old enough, and without a lease."""
    return [d for d in deliveries(client, now)
            if d.queue in QUEUES and d.task_id and not d.running and d.age_s >= ORPHAN_AFTER_S]


def take_sweep_turn(client: redis.Redis, holder: str) -> bool:
    """Whether ``holder`` sweeps now: one worker per interval, whichever asks first."""
    return bool(client.set(SWEEP_LOCK_KEY, holder, nx=True, ex=max(1, SWEEP_EVERY_S - 1)))


def beat(client: redis.Redis, hostname: str, queues: list[str]) -> None:
    """Say that the worker ``hostname`` is alive and which queues it consumes."""
    client.set(worker_key(hostname), json.dumps({"queues": sorted(queues)}), ex=WORKER_TTL_S)


def census(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Per queue: messages queued, delivered but unacknowledged, of those running, and live workers."""
    counts = {q: {"queued": int(client.llen(q)), "unacked": 0, "running": 0, "workers": 0} for q in QUEUES}
    for d in deliveries(client):
        if d.queue in counts:
            counts[d.queue]["unacked"] += 1
            counts[d.queue]["running"] += d.running
    for key in client.scan_iter(match=worker_key("*"), count=1000):
        raw = client.get(key)
        for queue in json.loads(raw)["queues"] if raw else []:
            if queue in counts:
                counts[queue]["workers"] += 1
    return counts


def describe_census(counts: dict[str, dict[str, int]]) -> str:
    """``attack: 0 queued, 1 unacknowledged (0 running), 1 worker; ...`` for a stall message."""
    return "; ".join(f"{q}: {c['queued']} queued, {c['unacked']} unacknowledged ({c['running']} running), "
                     f"{c['workers']} worker{'s' if c['workers'] != 1 else ''}" for q, c in counts.items())
