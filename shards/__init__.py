"""The shards stage: deduplicate scored (or crawled) records and write WebDataset shards.

Entry points: :func:`run` (``capcrawl shards``) and :func:`remove` (``capcrawl remove``).
Options: :class:`shards.config.ShardsConfig`, :class:`shards.config.RemoveConfig`. The stage
reads files and never loads a model.
"""

from __future__ import annotations

from typing import Any


def run(config: "ShardsConfig") -> dict[str, Any]:  # noqa: F821
    """Dedup and write new shards into OUT; return the manifest (see :func:`shards.stage.run_shards`)."""
    from .stage import run_shards

    return run_shards(config)


def remove(config: "RemoveConfig") -> dict[str, Any]:  # noqa: F821
    """Apply a takedown file to OUT; return the manifest (see :func:`shards.takedown.run_remove`)."""
    from .takedown import run_remove

    return run_remove(config)
