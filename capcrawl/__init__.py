"""capcrawl's application layer: the command line, the pipeline, the demo and the report.

It sits on top of the three stages (``crawler``, ``filter``, ``shards``) and the shared
contract (``common``); none of them imports it (an import-linter contract in CI holds that).
"""
