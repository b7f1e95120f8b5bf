"""``python -m hub`` is ``cxhub``."""

from hub.cli import app

app()
