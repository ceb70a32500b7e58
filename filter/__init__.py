"""The filter stage: CLIP scores of every crawled image against its text, captions filled, embeddings.

Entry point: :func:`run` (``capcrawl filter``). Options: :class:`filter.config.FilterConfig`.
Importing this package imports no torch; running the stage does.
"""

from __future__ import annotations

from typing import Any


def run(config: "FilterConfig", progress: Any = None) -> dict[str, Any]:  # noqa: F821
    """Score WORK/crawl's parts into WORK/scored and return the stats (see :func:`filter.stage.run_filter`)."""
    from .stage import run_filter

    return run_filter(config, progress)
