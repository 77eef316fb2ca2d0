"""The ``waveshield`` command line: parsing and printing only.

Commands live by what they work on: :mod:`.models` (train, tune, calibrate),
:mod:`.jobs` (evaluate, demo, up, status, report) and :mod:`.screening`
(screen, results, corpus); the work itself is in ``producers`` and ``shared``.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from shared import settings as settings_mod

# Mistakes a user can make (bad option, missing file, unreachable service; and a job id
# Redis does not hold, shared.pipeline.meta.JobNotFound): one clear line and exit status 2,
# never a traceback.
_USER_ERRORS = (ValueError, FileNotFoundError, ConnectionError)


class _Group(click.Group):
    def invoke(self, ctx):
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import OutOfMemoryError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        from producers.submit import JobFailed
        from shared.pipeline.durable import RecordsElsewhere
        from shared.pipeline.meta import JobNotFound
        from shared.store.client import RedisFull

        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a bad option or value: the same one line as every other mistake
            command = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"error: {exc.format_message().rstrip('.')} (see {command} --help)", err=True)
            sys.exit(2)
        except (*_USER_ERRORS, JobNotFound) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except (RedisConnectionError, RedisTimeoutError) as exc:  # past the retry window
            window = settings_mod.load().redis_retry_s
            click.echo(f"error: lost Redis for more than {window} s (WAVESHIELD_REDIS_RETRY): {exc}", err=True)
            sys.exit(1)
        except (JobFailed, RecordsElsewhere, RedisFull) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except OutOfMemoryError as exc:  # a write of a command that does not wait for room (screening does)
            click.echo(f"error: Redis is full ({exc}): raise its maxmemory (WAVESHIELD_REDIS_MAXMEMORY for the Redis "
                       "`waveshield up` starts) or free it, and run the command again", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="waveshield")
def main():
    """Screen images for adversarial manipulation and measure DWT defences."""
    _warnings_as_lines()


class _Lines(logging.Handler):
    """Warnings and errors logged on the stderr of the moment (``warning: ...``), as the commands' own read."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)


def _warnings_as_lines() -> None:
    """Send logged warnings to :class:`_Lines`, once per process."""
    root = logging.getLogger()
    if not any(isinstance(h, _Lines) for h in root.handlers):
        root.addHandler(_Lines(logging.WARNING))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def config(as_json):
    """Print the settings read from the environment."""
    current = settings_mod.load()
    click.echo(json.dumps(current.as_dict(), indent=2) if as_json else current.as_text())


def _register() -> None:
    # One module per command group; the group only dispatches and turns errors into one line.
    from . import jobs, model_cards, models, screening

    for module in (models, model_cards, jobs, screening):
        commands = [c for c in vars(module).values() if isinstance(c, click.Command)]
        grouped = {id(sub) for c in commands if isinstance(c, click.Group) for sub in c.commands.values()}
        for command in commands:
            if id(command) not in grouped:  # a group's subcommands stay under their group
                main.add_command(command)


_register()
