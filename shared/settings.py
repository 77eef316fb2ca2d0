"""Settings read from the environment, in one place.

Every knob of waveshield is an environment variable (``REDIS_URL`` or a
``WAVESHIELD_*`` name); :func:`load` reads them once and
``waveshield config`` prints the result. Secrets only ever come from here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from shared.models.registry import user_models_dir

#: A file or archive member larger than this is refused unread (a 24-megapixel PNG is about 70 MiB).
DEFAULT_MAX_ITEM_BYTES = 128 * 1024 * 1024
#: Where the repository keeps its shipped checkpoints.
_REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class Settings:
    """waveshield's configuration (see the README for each variable)."""

    redis_url: str | None = field(repr=False)  # REDIS_URL (kept out of repr: its password); None = `up`'s Redis
    weights_dir: Path  # WAVESHIELD_WEIGHTS_DIR: the shipped safetensors + JSON cards (read-only)
    models_dir: Path  # WAVESHIELD_MODELS: the user's registered models (`waveshield model add`)
    data_dir: Path  # WAVESHIELD_DATA_DIR: torchvision's dataset cache
    output_dir: Path  # WAVESHIELD_OUTPUT_DIR: reports, corpora
    device: str  # WAVESHIELD_DEVICE: "auto", "cpu", "cuda", "cuda:1", ...
    blob_ttl_s: int  # WAVESHIELD_BLOB_TTL: seconds an unconsumed blob lives
    checkpoint_dir: Path  # WAVESHIELD_CHECKPOINT_DIR: resumable training state
    visibility_timeout_s: int  # WAVESHIELD_VISIBILITY_TIMEOUT: an unacked task is redelivered after this
    task_time_limit_s: int  # WAVESHIELD_TASK_TIME_LIMIT: hard limit of one task (soft = 90 %)
    max_deliveries: int  # WAVESHIELD_MAX_DELIVERIES: a task redelivered more often is dropped as an error
    in_flight_mib: int  # WAVESHIELD_IN_FLIGHT_MIB: the blob MiB one job's unfinished batches may hold in Redis at most
    redis_maxmemory_mib: int  # WAVESHIELD_REDIS_MAXMEMORY: maxmemory (noeviction) of the Redis `up` and `demo` start
    keep_errors: int  # WAVESHIELD_KEEP_ERRORS: the stage errors a job keeps in Redis (all are counted)
    torch_threads: int | None  # WAVESHIELD_TORCH_THREADS: CPU threads of one worker process; None = torch's default
    redis_retry_s: int  # WAVESHIELD_REDIS_RETRY: seconds a lost Redis connection is retried before giving up
    stall_timeout_s: int  # WAVESHIELD_STALL_TIMEOUT: a followed job that makes no progress this long is given up on
    redrive_after_s: int  # WAVESHIELD_REDRIVE_AFTER: a stalled job with nothing in flight this long has its lost work re-sent
    max_item_bytes: int  # WAVESHIELD_MAX_ITEM_BYTES: a file or archive member larger than this is refused unread
    decode_workers: int  # WAVESHIELD_DECODE_WORKERS: processes decoding images at once (default: every core)
    flower_basic_auth: str | None = field(default=None, repr=False)  # FLOWER_BASIC_AUTH: user:password of Flower

    def shown(self, name: str):
        """The value of setting ``name`` as printed: passwords masked."""
        value = getattr(self, name)
        if name == "redis_url" and value:
            return masked(value)
        if name == "flower_basic_auth" and value:
            return value.partition(":")[0] + ":***"
        return str(value) if isinstance(value, Path) else value

    def as_text(self) -> str:
        """Render the settings as ``name = value`` lines, passwords masked."""
        return "\n".join(f"{f.name} = {self.shown(f.name)}" for f in fields(self))

    def as_dict(self) -> dict:
        """The settings as JSON-ready values (paths as strings), passwords masked."""
        return {f.name: self.shown(f.name) for f in fields(self)}


#: The schemes redis-py connects with.
REDIS_SCHEMES = ("redis", "rediss", "unix")
# A password in a URL's query (``?password=...``), which redis-py reads too.
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def masked(url: str) -> str:
    """``url`` as it may be shown: ``redis://user:secret@host`` -> ``redis://user:***@host``.

    Every message, log line and record that names a Redis URL shows it
    through here. It masks what a parser may never see as a password too: a
    malformed URL (``user:secret@host``, no scheme) keeps no text between
    the user and the ``@``, a user-info without a colon (``redis://secret@host``,
    which some clients take for a password) is masked whole, and so is a
    ``password=`` in the query. The user-info runs to the *last* ``@``: a
    password may hold ``/``, ``?``, ``#`` or ``@`` itself, and an ``@`` further
    on (in a query) only masks more.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    userinfo, at, tail = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = (f"{user}:***@" if colon else "***@") + tail
    return head + sep + _QUERY_PASSWORD.sub(r"\1***", rest)


def check_redis_url(url: str) -> str:
    """``url`` when redis-py can connect with it.

    Raises
    ------
    ValueError
        If it has no Redis scheme (``localhost:6379``, ``http://...``) or a port that is no number;
        the message shows it masked.
    """
    shown = masked(url)
    try:
        parts = urlsplit(url)
        parts.port  # a port that is no number raises here, not at the first command
    except ValueError:
        raise ValueError(f"REDIS_URL {shown} is not a Redis URL: it does not parse as "
                         "redis://[USER:PASSWORD@]HOST[:PORT][/DB]") from None
    if parts.scheme not in REDIS_SCHEMES or "://" not in url:
        # localhost:6379 parses as the scheme "localhost": name the URL that was meant
        hint = f"; e.g. redis://{shown}" if parts.scheme not in REDIS_SCHEMES and "://" not in url else ""
        raise ValueError(f"REDIS_URL {shown} is not a Redis URL (redis://, rediss:// or unix://){hint}")
    return url


def load(environ: dict | None = None) -> Settings:
    """Read the settings from ``environ`` (default: ``os.environ``).

    Raises
    ------
    ValueError
        If a numeric variable does not parse, ``REDIS_URL`` is no Redis URL,
        or the visibility timeout does not exceed the task time limit.
    """
    env = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        raw = env.get(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
        return value

    if "WAVESHIELD_HIGH_WATER" in env:
        raise ValueError("WAVESHIELD_HIGH_WATER (batches on the attack queue) is replaced by WAVESHIELD_IN_FLIGHT_MIB, "
                         "the blob MiB one job of any kind may hold in Redis (default 64): unset it")
    flower_basic_auth = env.get("FLOWER_BASIC_AUTH") or None
    if flower_basic_auth is not None and not all(user and password for user, _, password in
                                                 (pair.partition(":") for pair in flower_basic_auth.split(","))):
        raise ValueError("FLOWER_BASIC_AUTH must be user:password (or several, comma-separated)")
    # Checked here, so that every command (and `config`) says so, not "does not answer" at first use.
    redis_url = check_redis_url(env["REDIS_URL"]) if env.get("REDIS_URL") else None
    visibility_timeout_s = number("WAVESHIELD_VISIBILITY_TIMEOUT", 3600)
    task_time_limit_s = number("WAVESHIELD_TASK_TIME_LIMIT", 1800)
    if visibility_timeout_s <= task_time_limit_s:
        # Redis hands an unacknowledged message out again after the visibility timeout:
        # a task still running then runs twice, and the two deliveries share one
        # acknowledgement record, so the first ack can leave the second unprotected.
        raise ValueError(f"WAVESHIELD_VISIBILITY_TIMEOUT ({visibility_timeout_s} s) must exceed "
                         f"WAVESHIELD_TASK_TIME_LIMIT ({task_time_limit_s} s)")
    return Settings(
        redis_url=redis_url,
        weights_dir=Path(env.get("WAVESHIELD_WEIGHTS_DIR", _REPO_WEIGHTS)),
        models_dir=user_models_dir(env),
        data_dir=Path(env.get("WAVESHIELD_DATA_DIR", Path.home() / ".cache" / "waveshield" / "data")),
        output_dir=Path(env.get("WAVESHIELD_OUTPUT_DIR", "waveshield-out")),
        device=env.get("WAVESHIELD_DEVICE", "auto"),
        blob_ttl_s=number("WAVESHIELD_BLOB_TTL", 86400),
        checkpoint_dir=Path(env.get("WAVESHIELD_CHECKPOINT_DIR", Path.home() / ".cache" / "waveshield" / "checkpoints")),
        visibility_timeout_s=visibility_timeout_s,
        task_time_limit_s=task_time_limit_s,
        max_deliveries=number("WAVESHIELD_MAX_DELIVERIES", 5),
        in_flight_mib=number("WAVESHIELD_IN_FLIGHT_MIB", 64),
        redis_maxmemory_mib=number("WAVESHIELD_REDIS_MAXMEMORY", 1024),
        keep_errors=number("WAVESHIELD_KEEP_ERRORS", 100),
        torch_threads=number("WAVESHIELD_TORCH_THREADS", 1) if env.get("WAVESHIELD_TORCH_THREADS") else None,
        redis_retry_s=number("WAVESHIELD_REDIS_RETRY", 60),
        stall_timeout_s=number("WAVESHIELD_STALL_TIMEOUT", 600),
        redrive_after_s=number("WAVESHIELD_REDRIVE_AFTER", 30),
        max_item_bytes=number("WAVESHIELD_MAX_ITEM_BYTES", DEFAULT_MAX_ITEM_BYTES),
        decode_workers=number("WAVESHIELD_DECODE_WORKERS", os.cpu_count() or 1),
        flower_basic_auth=flower_basic_auth,
    )


def resolve_device(name: str = "auto") -> str:
    """Turn a device setting into a torch device string.

    ``"auto"`` picks CUDA when present, else the CPU.
    """
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
