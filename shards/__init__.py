"""Shards stage: deduplicate scored (or crawled) records and write WebDataset shards.

Entry points (imported lazily so that ``import shards`` stays cheap):
:func:`run_shards` (``capcrawl shards``) and :func:`run_remove` (``capcrawl remove``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_shards", "run_remove", "ShardsConfig", "RemoveConfig"]

_EXPORTS = {
    "run_shards": "shards.run",
    "run_remove": "shards.remove",
    "ShardsConfig": "shards.config",
    "RemoveConfig": "shards.config",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'shards' has no attribute {name!r}")
