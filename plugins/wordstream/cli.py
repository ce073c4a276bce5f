"""The ``wordstream`` command line: read totals and status, and run the same maintenance code the DAGs run.

Bad arguments and missing data give one clear line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from wordstream import control, results
from wordstream.settings import ENGINES, Settings, check_engine


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        raise UsageError(message)


def cmd_totals(args: argparse.Namespace, settings: Settings) -> int:
    engine = check_engine(args.engine)
    output = settings.output(engine)
    if not results.batch_dirs(output):
        raise UsageError(f"no results yet for {engine} in {output} (is the stream running and fed?)")
    rows = results.ranked(results.read_totals(output, results.SEMANTICS[engine]), args.top)
    if args.format == "csv":
        sys.stdout.write(results.to_csv(rows))
    else:
        width = max((len(word) for word, _ in rows), default=4)
        print(f"{'word':<{width}}  count")
        for word, count in rows:
            print(f"{word:<{width}}  {count}")
    return 0


STATUS_COLUMNS = ("engine", "state", "pid", "batch_id", "input_rows", "input_rows_per_second",
                  "processed_rows_per_second", "batch_duration_ms", "files_processed", "updated_at")


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    engines = [check_engine(args.engine)] if args.engine else list(ENGINES)
    statuses = [control.read_status(settings.state, engine) for engine in engines]
    if args.json:
        print(json.dumps(statuses if args.engine is None else statuses[0], indent=2, sort_keys=True))
        return 0
    for status in statuses:
        print(f"{status['engine']}:")
        for column in STATUS_COLUMNS[1:]:
            if column in status:
                print(f"  {column:<26} {status[column]}")
        if status.get("reason"):
            print(f"  {'reason':<26} {status['reason']}")
        if status.get("top_words"):
            top = ", ".join(f"{w} {c}" for w, c in status["top_words"][:10])
            print(f"  {'top words':<26} {top}")
    return 0


Command = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wordstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    totals = sub.add_parser("totals", help="every word with its total, most frequent first")
    totals.add_argument("--engine", required=True, choices=ENGINES)
    totals.add_argument("--top", type=_positive_int, default=None, help="only the N most frequent")
    totals.add_argument("--format", choices=("table", "csv"), default="table")
    totals.set_defaults(func=cmd_totals)

    status = sub.add_parser("status", help="state of the streaming engines")
    status.add_argument("--engine", choices=ENGINES, default=None)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        settings = Settings.from_env()
        return int(args.func(args, settings))
    except (UsageError, ValueError, control.EngineBusyError) as error:
        print(f"wordstream: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
