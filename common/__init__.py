"""The bottom layer: the record contract every stage reads and writes, and small shared helpers.

Nothing here imports a stage (``crawler``, ``filter``, ``shards``) or the application
(``capcrawl``), and nothing here imports Scrapy or torch: every stage can import it cheaply.

- :mod:`common.records`: columns, statuses and reasons, Arrow schemas (the one schema module).
- :mod:`common.layout`: where each stage's files live and how they are named.
- :mod:`common.errors`: :class:`ConfigError`, the one user-facing configuration error.
- :mod:`common.fileio`: writes under a temporary name renamed into place, with the umask's mode.
- :mod:`common.options`: options declared once on a config dataclass; the CLI's parser is built from them.
- :mod:`common.phash`: the project's one perceptual hash and its bit arithmetic.
- :mod:`common.text`: the one whitespace clean-up for text taken from pages.
"""
