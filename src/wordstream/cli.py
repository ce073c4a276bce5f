"""The ``wordstream`` command line: read totals and status, and run the same maintenance code the DAGs run.

Bad arguments and missing data give one clear line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from wordstream import control, epochs, maintenance, results, staging
from wordstream.ledger import FILE_STATUSES, Ledger
from wordstream.maintenance.replay import REPLAY_CHOICES, Replay, parse_replay
from wordstream.settings import ENGINES, Settings, check_engine


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block
        raise UsageError(message)


def cmd_totals(args: argparse.Namespace, settings: Settings) -> int:
    engine = check_engine(args.engine)
    output = settings.output(engine)
    if args.epoch is not None:
        outputs = epochs.epoch_outputs(settings, engine)
        if args.epoch not in outputs:
            known = ", ".join(outputs) or "none yet"
            raise UsageError(f"unknown epoch {args.epoch!r} of {engine}; known: {known}")
        output = outputs[args.epoch]
    if results.list_results(output).empty:
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
    from wordstream.orchestration.status_view import engine_lag

    engines = [check_engine(args.engine)] if args.engine else list(ENGINES)
    statuses = [{**control.read_status(settings.state, engine), "lag": engine_lag(settings, engine)}
                for engine in engines]
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
        lag = status["lag"]
        oldest = (f" (oldest {lag['oldest_name']}, waiting {lag['oldest_age_seconds']:g} s)"
                  if lag["oldest_name"] else "")
        print(f"  {'lag':<26} {lag['files']} files not processed yet{oldest}")
        for note in lag["notes"]:
            print(f"  {'note':<26} {note}")
        if status.get("top_words"):
            top = ", ".join(f"{w} {c}" for w, c in status["top_words"][:10])
            print(f"  {'top words':<26} {top}")
    return 0


EPOCH_COLUMNS = ("name", "started", "ended", "files", "keys", "occurrences")


def cmd_epochs(args: argparse.Namespace, settings: Settings) -> int:
    engine = check_engine(args.engine)
    listed = epochs.list_epochs(settings, engine)
    if args.json:
        print(json.dumps([epoch.as_dict() for epoch in listed], indent=2, sort_keys=True))
        return 0
    rows = [[f"{epoch.name}{' (current)' if epoch.current else ''}", epoch.started or "-",
             epoch.ended or "-", "-" if epoch.files is None else str(epoch.files), str(epoch.keys),
             str(epoch.occurrences)] for epoch in listed]
    widths = [max(len(str(cell)) for cell in column) for column in zip(EPOCH_COLUMNS, *rows, strict=False)]
    for row in [list(EPOCH_COLUMNS), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_stage(args: argparse.Namespace, settings: Settings) -> int:
    try:
        staging.stage(settings, progress=print)
    except staging.StagingError as error:
        raise UsageError(str(error)) from None
    return 0


def cmd_ledger(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.ledger.exists():
        raise UsageError(f"no ledger yet at {settings.ledger} (nothing was staged; run `wordstream stage`)")
    ledger = Ledger(settings.ledger)
    with ledger.session():
        summary = ledger.summary()
        entries = ledger.entries(args.limit, status=args.status)
        quarantine = ledger.latest_quarantine(5)
    if args.json:
        print(json.dumps({"summary": summary, "entries": entries, "quarantine": quarantine},
                         indent=2, sort_keys=True))
        return 0
    files = summary["files"]
    print(f"files: {summary['total_files']} (" + ", ".join(f"{k} {v}" for k, v in files.items()) + ")")
    for engine, states in sorted(summary["deliveries"].items()):
        print(f"  {engine:<11} " + ", ".join(f"{k} {v}" for k, v in states.items()))
    print(f"latest {len(entries)} entries" + (f" with status {args.status}:" if args.status else ":"))
    for entry in entries:
        deliveries = ", ".join(f"{engine} {d['state']}" + (f"@{d['batch']}" if d["batch"] else "")
                               for engine, d in entry["deliveries"].items())
        print(f"  #{entry['id']:<6} {entry['status']:<11} {entry['name']!r}"
              + (f" -> {entry['watch_name']}" if entry["watch_name"] else "")
              + (f" [{deliveries}]" if deliveries else "")
              + (f" ({entry['reason']})" if entry["reason"] and entry["status"] != "quarantined" else ""))
    if quarantine:
        print("latest quarantine reasons:")
        for row in quarantine:
            print(f"  #{row['id']:<6} {row['name']!r}: {row['reason']}")
    return 0


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    engines = list(ENGINES) if args.all else [check_engine(args.engine)]
    for engine in engines:
        try:
            maintenance.reset_engine(settings, engine, args.wait_timeout, progress=print,
                                     replay=args.replay)
        except maintenance.ResetError as error:
            raise UsageError(str(error)) from None
    return 0


def cmd_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    """Clean up; the Airflow part when ``AIRFLOW_HOME`` names the Airflow (exit 1 if that fails)."""
    if not settings.data_dir.is_dir():
        raise UsageError(f"data directory {settings.data_dir} does not exist (check WORDSTREAM_DATA_DIR)")
    report = maintenance.cleanup(settings, progress=print, airflow=maintenance.AirflowSite.from_env())
    if report.airflow is not None and report.airflow.error:
        print(f"wordstream: error: Airflow metadata and task logs not cleaned: {report.airflow.error}",
              file=sys.stderr)
        return 1
    return 0


Command = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wordstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    totals = sub.add_parser("totals", help="every word with its total, most frequent first")
    totals.add_argument("--engine", required=True, choices=ENGINES)
    totals.add_argument("--top", type=_positive_int, default=None, help="only the N most frequent")
    totals.add_argument("--format", choices=("table", "csv"), default="table")
    totals.add_argument("--epoch", default=None, metavar="NAME",
                        help="an epoch's totals, rotated or current (see `wordstream epochs`)")
    totals.set_defaults(func=cmd_totals)

    listing = sub.add_parser("epochs", help="an engine's current and rotated epochs")
    listing.add_argument("--engine", required=True, choices=ENGINES)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_epochs)

    status = sub.add_parser("status", help="state of the streaming engines")
    status.add_argument("--engine", choices=ENGINES, default=None)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    stage = sub.add_parser("stage", help="publish the stable landing files to the engines' watch folders")
    stage.set_defaults(func=cmd_stage)

    ledger = sub.add_parser("ledger", help="what happened to every landing file")
    ledger.add_argument("--status", choices=FILE_STATUSES, default=None, help="only entries in this status")
    ledger.add_argument("--limit", type=_positive_int, default=20, help="how many latest entries (20)")
    ledger.add_argument("--json", action="store_true", help="machine-readable output")
    ledger.set_defaults(func=cmd_ledger)

    reset = sub.add_parser("reset", help="stop an engine and start a new epoch, from zero or replayed")
    which = reset.add_mutually_exclusive_group(required=True)
    which.add_argument("--engine", choices=ENGINES)
    which.add_argument("--all", action="store_true", help="every engine, one after the other")
    reset.add_argument("--wait-timeout", type=_seconds, default=120.0,
                       help="how long to wait for a running driver to stop (120)")
    reset.add_argument("--replay", type=_replay, default=parse_replay("none"),
                       help="what the new epoch is fed from the archive: none (default), all, or "
                            "since=YYYY-MM-DD[THH:MM] (UTC, by landing time)")
    reset.set_defaults(func=cmd_reset)

    clean = sub.add_parser("cleanup", help="expire what is past the retention (files, ledger, the Airflow of "
                                           "AIRFLOW_HOME), report what is left")
    clean.set_defaults(func=cmd_cleanup)

    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _replay(text: str) -> Replay:
    try:
        return parse_replay(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {REPLAY_CHOICES}, got {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
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
