"""Persistence: tables, migrations and the ``Store`` that opens them."""

from hub.store.db import Store
from hub.store.tables import utcnow

__all__ = ["Store", "utcnow"]
