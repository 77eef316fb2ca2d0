"""Claim check: numpy arrays in Redis under deterministic keys, deleted by their last consumer.

A blob is written with the set of consumers that will read it (``attack:3``,
``classify:raw``...). Each consumer calls :meth:`BlobStore.release` when it is
done; the release is idempotent, so a redelivered task cannot delete a blob
another consumer still needs, and the blob goes when the set is empty. Every
blob also has a TTL, so a job abandoned half-way cleans itself up.

Traffic: a put or get that names its ``stage`` adds the blob's bytes to the
job's ``ws:job:JOB:traffic`` hash (``STAGE:in`` written to Redis, ``STAGE:out``
read from it), so a run can say what each stage costs the broker per image.
"""

from __future__ import annotations

import numpy as np

from shared.store import codec

# Remove one consumer; delete the blob and its set when none is left.
# Atomic, so two last consumers finishing together delete exactly once.
_RELEASE = """
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""


def traffic_key(blob_key: str) -> str:
    """The traffic hash of the job a blob belongs to (blob keys are ``ws:blob:JOB:...``)."""
    return f"ws:job:{blob_key.split(':')[2]}:traffic"


class BlobMissing(KeyError):
    """A blob is gone: expired, or every consumer already released it."""


class BlobStore:
    """Arrays in Redis with consumer sets and a TTL.

    Parameters
    ----------
    redis : redis.Redis
        A client (bytes responses).
    ttl_s : int
        Lifetime of every blob, in seconds.
    """

    def __init__(self, redis, ttl_s: int = 86400):
        self.redis = redis
        self.ttl_s = int(ttl_s)
        self._release = redis.register_script(_RELEASE)

    @staticmethod
    def consumers_key(key: str) -> str:
        return f"{key}:consumers"

    def put(self, key: str, array: np.ndarray, consumers, *, stage: str | None = None) -> int:
        """Store ``array`` under ``key`` for the given consumer names (at least one); return its size in bytes."""
        consumers = list(consumers)
        if not consumers:
            raise ValueError(f"blob {key} would have no consumer and never be deleted")
        data = codec.encode(array)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(key, data, ex=self.ttl_s)
        pipe.delete(self.consumers_key(key))
        pipe.sadd(self.consumers_key(key), *consumers)
        pipe.expire(self.consumers_key(key), self.ttl_s)
        if stage:
            pipe.hincrby(traffic_key(key), f"{stage}:in", len(data))
        pipe.execute()
        return len(data)

    def get(self, key: str, *, stage: str | None = None) -> np.ndarray:
        """The array under ``key``; raises :class:`BlobMissing` if it is gone."""
        data = self.redis.get(key)
        if data is None:
            raise BlobMissing(key)
        if stage:
            self.redis.hincrby(traffic_key(key), f"{stage}:out", len(data))
        return codec.decode(data)

    def release(self, key: str, consumer: str) -> bool:
        """Mark ``consumer`` done with ``key``; return True if that deleted the blob."""
        return bool(self._release(keys=[key, self.consumers_key(key)], args=[consumer]))

    def exists(self, key: str) -> bool:
        return bool(self.redis.exists(key))
