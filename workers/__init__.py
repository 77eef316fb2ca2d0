"""The Celery app: ``celery -A workers worker -Q attack`` (or dwt, classify, collect)."""

from .app import app

__all__ = ["app"]
