"""Option types the commands share: numbers checked before anything runs, with Click's one-line reason."""

from __future__ import annotations

import click

#: A number of images, batches, epochs or pixels: 0 or less is a mistake.
COUNT = click.IntRange(min=1)
#: A false-positive rate: strictly between 0 and 1.
RATE = click.FloatRange(0, 1, min_open=True, max_open=True)
