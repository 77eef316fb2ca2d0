"""A progress bar on stderr for the work functions' ``progress(done, total, what)`` callbacks."""

from __future__ import annotations

import sys

import click


class ProgressBar:
    """A click progress bar, opened on the first report (labelled with its ``what``) and closed on exit.

    Use as a context manager; pass the instance as ``progress``. A new
    ``what`` (the next stage, or a job's id once known) opens a new bar.
    """

    def __init__(self):
        self.bar, self.what = None, None

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.bar is None or what != self.what:
            self.close()
            self.bar, self.what = click.progressbar(length=max(total, 1), label=what, file=sys.stderr), what
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
