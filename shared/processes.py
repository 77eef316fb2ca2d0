"""Whether a process on this host is still running: the one liveness check the producers and tests share."""

from __future__ import annotations

import os
from pathlib import Path


def running(pid: int | str) -> bool:
    """True while process ``pid`` of this host runs; a zombie (ended, not yet reaped) counts as ended.

    Reads ``/proc/PID/status`` where there is a ``/proc``; elsewhere asks the
    kernel with signal 0, which cannot tell a zombie.
    """
    try:
        pid = int(pid)
    except ValueError:
        return False
    if pid <= 0:
        return False
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return False
    return "zombie" not in state
