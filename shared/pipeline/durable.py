"""A screening job's finished records leave Redis once a file holds them.

Redis keeps a screening job's records only while they are in flight. Once
written, in the order of the job's chunks, to a JSONL file by the one
process that holds the job's writer lease, they are deleted from Redis:

- a follower holds it: ``screen`` waiting for its job, the background
  producer of ``screen --no-wait``, ``screen --watch``; the file is its
  ``--out``;
- for a job nobody follows, the collector takes it for the moment it
  writes, and the file is ``$WAVESHIELD_OUTPUT_DIR/jobs/JOB/records.jsonl``.

The job's meta says how far the file goes: ``written`` (chunks),
``written_to`` (the file), ``written_bytes`` (its length then) and
``written_host``. A chunk moves in two steps: the file is appended and
synced to disk, then one script checks the lease and ``written``, advances
the fields and deletes the chunk's records. A writer killed between the two
leaves lines past ``written_bytes``: readers ignore them, and the next writer
cuts them off or starts a new file. A writer whose file is not the one the
meta names first copies the written records into it, so they always lie in
one file, which :func:`iter_records` reads before what Redis still holds.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from shared.pipeline.keys import job_key, writer_key

#: The writer lease's lifetime: a follower renews it at each look (every second or so), the collector holds it
#: only while it writes; a writer gone this long leaves the records to the next one.
LEASE_S = 30
#: Where the collector writes the records of a job nobody follows, inside its output directory.
UNFOLLOWED_DIR = "jobs"

# Move chunk ARGV[2] (or 'rebase': only say where the written records now lie; 'errors': the set's unreadable
# items were written after the chunks): KEYS meta, records, writer; ARGV who, what, file, bytes, host, lease.
# The records are deleted first: a full Redis (noeviction) refuses only a script's first write, and a delete
# is never refused, so a move goes through however full Redis is, and frees room.
_MOVED = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
local written = tonumber(redis.call('HGET', KEYS[1], 'written') or '0')
local what = ARGV[2]
if what == 'errors' then
  redis.call('HDEL', KEYS[2], 'errors')
elseif what ~= 'rebase' then
  if written ~= tonumber(what) then return 0 end
  redis.call('HDEL', KEYS[2], what, 'e' .. what)
  written = written + 1
end
redis.call('HSET', KEYS[1], 'written', written, 'written_to', ARGV[3], 'written_bytes', ARGV[4],
           'written_host', ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 1
"""
# Take the lease (KEYS[1]) for ARGV[1] unless another writer holds it. The delete comes first: a full Redis
# refuses only a script's first write, and a delete is never refused, so the lease is taken however full it is.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('EXPIRE', KEYS[1], ARGV[2])
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RecordsElsewhere(RuntimeError):
    """The records already written lie in a file this process cannot read (another host's, or removed)."""


class LeaseLost(RuntimeError):
    """Another writer took the job's writer lease while this one was opening its file."""


def who(role: str) -> str:
    """A writer: ``ROLE HOST:PID #TOKEN`` (``follower``, ``watch``, ``collector``); two in one process differ."""
    return f"{role} {socket.gethostname()}:{os.getpid()} #{os.urandom(3).hex()}"


def unfollowed_path(output_dir, job: str) -> Path:
    """The file the collector writes the records of ``job`` to when nobody follows it."""
    return Path(output_dir) / UNFOLLOWED_DIR / job / "records.jsonl"


class Written:
    """How far a job's records are written: ``chunks``, the ``path`` holding them, its ``size`` then, its ``host``."""

    def __init__(self, chunks: int, path: str, size: int, host: str):
        self.chunks, self.path, self.size, self.host = chunks, path, size, host

    @classmethod
    def of(cls, redis, job: str) -> Written:
        chunks, path, size, host = redis.hmget(job_key(job, "meta"),
                                               ["written", "written_to", "written_bytes", "written_host"])
        return cls(int(chunks or 0), (path or b"").decode(), int(size or 0), (host or b"").decode())

    def source(self) -> Path | None:
        """The readable file that holds the written records (its ``.prev`` if a writer was replacing it), or None
        when nothing is written."""
        if not self.size:
            return None
        for path in (Path(self.path), Path(self.path + ".prev")):
            if path.is_file() and path.stat().st_size >= self.size:
                return path
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        raise RecordsElsewhere(f"the records of the first {self.chunks} chunk(s) were written to {self.path}{where}, "
                               "which cannot be read here: run this where that file is")


def read_records(path: Path, start: int, end: int, *, per: int = 1024) -> Iterator[list[dict]]:
    """The records of bytes ``[start, end)`` of a JSONL file, ``per`` at a time."""
    with open(path, "rb") as fh:
        fh.seek(start)
        batch: list[dict] = []
        while fh.tell() < end and (line := fh.readline()):
            batch.append(json.loads(line))
            if len(batch) >= per:
                yield batch
                batch = []
        if batch:
            yield batch


class JsonlFile:
    """A plain JSONL file of records: what the collector writes for a job nobody follows.

    ``keep``: bytes of an existing file to keep (the rest, from a writer killed mid-way, is cut off).
    """

    def __init__(self, path: Path, keep: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "r+b" if keep and self.path.is_file() else "wb")
        self._file.truncate(keep)
        self._file.seek(keep)

    def write(self, records: list[dict]) -> None:
        self._file.writelines((json.dumps(r) + "\n").encode() for r in records)

    def sync(self) -> int:
        """Flush to disk; return the file's length."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class RecordMover:
    """Moves a screening job's finished chunks, in order, from Redis to one file, under the job's writer lease.

    Parameters
    ----------
    pipe : shared.pipeline.Pipeline
        The job's pipeline (its ``redis``, ``batch_records`` and ``set_error_records``).
    job : str
        The screening job.
    who : str
        This writer (:func:`who`), the lease's value.
    when_full : callable, optional
        ``when_full(do)`` runs ``do`` (a write that takes memory: the lease,
        a rebase) and waits while a full Redis refuses it
        (:func:`shared.store.client.while_full`); default: once.
    """

    def __init__(self, pipe, job: str, who: str, when_full: Callable | None = None):
        self.pipe, self.job, self.who = pipe, job, who
        self.when_full = when_full or (lambda do: do())
        self.redis = pipe.redis
        self._moved = self.redis.register_script(_MOVED)
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self.sink = None

    # The lease ---------------------------------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the lease if no one holds it (or this writer does)."""
        return bool(self._acquire(keys=[writer_key(self.job)], args=[self.who, LEASE_S]))

    def acquire(self, wait_s: float = 2 * LEASE_S) -> str | None:
        """Take the lease, waiting while the collector holds it for a moment; return None when taken, else the
        writer that keeps it (another follower)."""
        deadline = time.monotonic() + wait_s
        while not self.try_acquire():
            holder = (self.redis.get(writer_key(self.job)) or b"").decode()
            if holder and not holder.startswith("collector") or time.monotonic() > deadline:
                return holder or None
            time.sleep(0.1)
        return None

    def renew(self) -> bool:
        """Keep the lease another :data:`LEASE_S`; False if this writer no longer holds it."""
        return bool(self._renew(keys=[writer_key(self.job)], args=[self.who, LEASE_S]))

    def release(self) -> None:
        self._release(keys=[writer_key(self.job)], args=[self.who])

    # The file ----------------------------------------------------------------------------------------------
    def open(self, path: Path, make_sink: Callable[[int], object], *, resumable: bool) -> object:
        """The sink for ``path``, holding every record written so far; the meta then names ``path``.

        ``make_sink(keep)`` opens the sink (``keep``: bytes of the existing
        file it keeps, only when ``resumable`` and the meta names that very
        file). Otherwise the written records are copied into a new sink from
        the file the meta names (moved aside first if it is ``path`` itself).

        Raises
        ------
        RecordsElsewhere
            If the written records lie in a file this process cannot read.
        """
        written = Written.of(self.redis, self.job)
        path = Path(path).absolute()
        same = bool(written.path) and Path(written.path).absolute() == path
        if same and resumable and path.is_file() and path.stat().st_size >= written.size:
            self.sink = make_sink(written.size)
            return self.sink
        source = written.source()
        aside = None
        if source is not None and source.absolute() == path:
            aside = path.with_name(path.name + ".prev")
            os.replace(path, aside)
            source = aside
        self.sink = make_sink(0)
        if source is not None:
            for records in read_records(source, 0, written.size):
                self.sink.write(records)
        if not self.when_full(lambda: self._note("rebase")):
            # The lease went to another writer meanwhile: its file stays as it was, and this one writes nothing.
            (getattr(self.sink, "discard", None) or self.sink.close)()
            if aside is not None:
                os.replace(aside, path)
            raise LeaseLost(f"job {self.job}: another writer took its records over")
        if aside is not None:
            aside.unlink()
        return self.sink

    def _note(self, what: str) -> bool:
        size = self.sink.sync()
        return bool(self._moved(keys=[job_key(self.job, "meta"), job_key(self.job, "records"), writer_key(self.job)],
                                args=[self.who, what, str(self.sink.path.absolute()), size, socket.gethostname(),
                                      LEASE_S]))

    def drain(self) -> int:
        """Move every finished chunk from the next unwritten one on, stopping at the first unfinished one; return
        how many moved (none once the lease is lost)."""
        moved = 0
        while True:
            chunk = Written.of(self.redis, self.job).chunks
            found = self.pipe.batch_records(self.job, chunk)
            if found is None:
                return moved
            self.sink.write(found)
            if not self._note(str(chunk)):
                return moved  # the lease went to another writer: it writes from here on
            moved += 1

    def finish(self) -> None:
        """After the job completed: the last chunks, then the unreadable items a set in memory keeps apart."""
        self.drain()
        errors = self.pipe.set_error_records(self.job)
        if errors:
            self.sink.write(errors)
            self.when_full(lambda: self._note("errors"))


def write_unfollowed(pipe, job: str, output_dir) -> int:
    """The collector's part: if nobody holds the job's writer lease, move its finished chunks to
    :func:`unfollowed_path`; return how many moved.

    Records written elsewhere that cannot be read here stay where they are,
    and so do the chunks after them: the follower that wrote them, or
    ``results`` where their file is, takes them.
    """
    mover = RecordMover(pipe, job, who("collector"))
    if not mover.try_acquire():
        return 0
    try:
        path = unfollowed_path(output_dir, job)
        try:
            sink = mover.open(path, lambda keep: JsonlFile(path, keep), resumable=True)
        except RecordsElsewhere:
            return 0
        try:
            moved = mover.drain()
            if pipe.progress(job)["status"] == "complete":
                mover.finish()
            return moved
        finally:
            sink.close()
    finally:
        mover.release()


def iter_records(pipe, job: str) -> Iterator[list[dict]]:
    """A screening job's records so far, chunk by chunk in order: the written ones from their file, then those
    Redis still holds (a writer moving chunks meanwhile is followed into its file); one chunk in memory at a time.

    Raises
    ------
    RecordsElsewhere
        If written records lie in a file this process cannot read.
    """
    chunk, offset, skip = 0, 0, 0  # next chunk; bytes of the file read; records read from Redis the file now has
    while True:
        written = Written.of(pipe.redis, job)
        if written.size > offset or written.chunks > chunk:
            # A new writer's file holds the same lines as the one before it, so the offset carries over.
            for records in read_records(written.source(), offset, written.size):
                records, skip = records[skip:], max(0, skip - len(records))
                if records:
                    yield records
            chunk, offset = max(chunk, written.chunks), written.size
        found = pipe.batch_records(job, chunk)
        if found is None:
            now = Written.of(pipe.redis, job)
            if now.size > offset or now.chunks > chunk:
                continue  # a writer moved it meanwhile: read it from the file
            break
        yield found
        chunk, skip = chunk + 1, skip + len(found)
    errors = pipe.set_error_records(job)
    if errors:
        yield errors
        return
    written = Written.of(pipe.redis, job)
    if written.size > offset:  # the unreadable items moved to the file just now
        for records in read_records(written.source(), offset, written.size):
            records, skip = records[skip:], max(0, skip - len(records))
            if records:
                yield records
