"""The watched inbox: new files found through file-system events, or by walking when there are none."""

import json
import threading
import time

import pytest

from producers.screening.watch import Inbox, watch


def _until(condition, timeout_s: float = 10.0):
    """Poll ``condition()`` until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"not within {timeout_s} s")


def _named_until_quiet(inbox, quiet_s: float = 0.5, timeout_s: float = 10.0) -> set:
    """Every path the inbox's polls name, once something was named and then nothing for ``quiet_s``."""
    named, last, deadline = set(), None, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = list(inbox.candidates())
        if found:
            named.update(found)
            last = time.monotonic()
        elif last is not None and time.monotonic() - last >= quiet_s:
            return named
        time.sleep(0.05)
    pytest.fail(f"the inbox named {sorted(named)} and did not go quiet within {timeout_s} s")


def test_events_name_only_new_files_after_the_first_walk(tmp_path):
    (tmp_path / "old").mkdir()
    for i in range(50):
        (tmp_path / "old" / f"{i}.png").write_bytes(b"x")
    inbox = Inbox(tmp_path)
    try:
        assert inbox.mode == "events"
        assert len(list(inbox.candidates())) == 50  # the first poll walks: what landed before the watch
        (tmp_path / "old" / "new.png").write_bytes(b"y")
        (tmp_path / ".partial").write_bytes(b"z")  # hidden: never a candidate
        # One write is several events (created, modified, closed) that may straddle polls:
        # gather what the polls name until they have been quiet a while.
        assert _named_until_quiet(inbox) == {tmp_path / "old" / "new.png"}  # not the 50 already there
        inbox.again(tmp_path / "old" / "0.png")
        assert list(inbox.candidates()) == [tmp_path / "old" / "0.png"]
        assert list(inbox.candidates()) == []
    finally:
        inbox.close()


def test_without_events_every_poll_walks_the_folder(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"x")
    inbox = Inbox(tmp_path, events=False)
    assert inbox.mode == "polling"
    assert len(list(inbox.candidates())) == len(list(inbox.candidates())) == 3
    inbox.close()


@pytest.mark.parametrize("events", [True, False])
def test_watch_takes_each_file_once_when_it_holds_still(tmp_path, events):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    (inbox / "before.png").write_bytes(b"1")
    screened, stop = [], threading.Event()

    def screen_batch(image_set):
        records = [{"id": i} for i in image_set.ids] + [{"id": e.id} for e in image_set.errors]
        screened.extend(r["id"] for r in records)
        return records

    runner = threading.Thread(target=watch, args=(inbox, out, screen_batch),
                              kwargs={"poll_s": 0.05, "max_wait_s": 0.1, "should_stop": stop.is_set, "events": events})
    runner.start()
    try:
        _until(lambda: len(screened) == 1)
        growing = inbox / "sub" / "late.png"
        growing.parent.mkdir()
        growing.write_bytes(b"2")
        _until(lambda: len(screened) == 2)
    finally:
        stop.set()
        runner.join(10)
    assert sorted(screened) == sorted([str(inbox / "before.png"), str(growing)])
    ids = [json.loads(line)["id"] for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(screened)  # each once
