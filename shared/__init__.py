"""waveshield's pure core: everything the pipeline computes.

Nothing here imports Celery or needs a Redis server, so every piece can be
tested and used on its own.
"""

__version__ = "0.1.0"
