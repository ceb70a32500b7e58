"""``python -m filter --work WORK [options]``: the filter stage without the rest of the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from crawler.records import ConfigError
from filter.cli import add_filter_arguments, filter_config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m filter", description=__doc__)
    parser.add_argument("--work", required=True, help="work directory holding crawl/ (scored/ is written there)")
    parser.add_argument("--log-level", default="INFO")
    add_filter_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from filter.stage import run_filter

        stats = run_filter(filter_config_from_args(args, args.work))
    except ConfigError as e:
        print(f"capcrawl filter: error: {e}", file=sys.stderr)
        return 2
    json.dump(stats, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
