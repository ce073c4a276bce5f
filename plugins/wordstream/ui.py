"""Live status of the streaming engines, as JSON and as a page inside Airflow's UI.

:func:`stream_view` gathers everything an operator wants to see about one engine in one dict: its
state (from the stop/status protocol), the last batches with their rates, the lag (files staged into
its watch folder and not processed yet), the ledger's counts with the latest quarantine reasons, and
the top words from the persisted results. It only reads: it never creates a folder, the ledger
database or a status file, so looking at a fresh installation leaves it fresh.

:func:`create_app` serves that dict twice, under ``/wordstream`` in Airflow's API server (see
``plugins/wordstream_ui_plugin.py``): ``api/<engine>`` as JSON and ``<engine>`` as a self-refreshing
HTML page (plain JavaScript and inline SVG from ``ui_static/``; the UI must work without internet).
Airflow mounts plugin apps without any authentication, so every route here depends on Airflow's own
``get_user`` + view authorization, the same check its REST API applies: a bearer token or the UI's
``_token`` cookie. Refused requests get 401/403 as JSON, or a redirect to Airflow's login for pages.
"""

from __future__ import annotations

import html
import json
import os
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wordstream import control, results
from wordstream.ledger import DELIVERY_STATES, FILE_STATUSES, Ledger
from wordstream.settings import ENGINES, Engine, Settings, check_engine

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

URL_PREFIX = "/wordstream"
TOP_WORDS = 20
QUARANTINE_SHOWN = 5
REFRESH_SECONDS = 3
STATIC_DIR = Path(__file__).with_name("ui_static")

Access = Callable[..., Any]


# -- the data -----------------------------------------------------------------------------------
def stream_view(settings: Settings, engine: str, now: datetime | None = None) -> dict[str, Any]:
    """Everything the status page of ``engine`` shows, JSON-ready.

    ``now`` is injectable so ages (lag, "since") are testable. Missing pieces (no status file, no
    ledger, no results yet) are reported in ``notes`` instead of raising: the page must work on a
    machine where nothing ever ran.
    """
    name = check_engine(engine)
    now = now or datetime.now(UTC)
    notes: list[str] = []
    status = _status(settings, name, notes)
    ledger = _ledger_view(settings, name, notes)
    return {
        "engine": name,
        "engines": list(ENGINES),
        "generated_at": now.isoformat(timespec="milliseconds"),
        "refresh_seconds": REFRESH_SECONDS,
        "status": status,
        "recent_batches": _recent_batches(status),
        "lag": _lag(settings, name, ledger.pop("unprocessed"), now),
        "ledger": ledger,
        "results": _results_view(settings, name, notes),
        "notes": notes,
    }


STATUS_FIELDS = (
    "state", "lock_held", "pid", "reason", "keys", "started_at", "stopped_at", "updated_at", "batch_id",
    "batch_time", "input_rows", "input_rows_per_second", "processed_rows_per_second",
    "batch_duration_ms", "files_in_batch", "files_processed",
)


def _status(settings: Settings, engine: Engine, notes: list[str]) -> dict[str, Any]:
    """The protocol's status (lock-corrected), reduced to the fields the page shows, plus ``since``."""
    try:
        raw = control.read_status(settings.state, engine)
    except (OSError, ValueError) as error:  # unreadable file: say so, keep the rest of the page
        raw = {"state": "unknown", "reason": f"status file unreadable: {error}", "lock_held": False}
        notes.append(f"The status file of {engine} could not be read.")
    status = {field: raw.get(field) for field in STATUS_FIELDS}
    status["recent_batches"] = list(raw.get("recent_batches") or [])
    state = status["state"]
    if state == "never started":
        notes.append(f"No {engine} stream has run yet: start it with the stream_{engine} DAG.")
        status["since"] = None
    elif state in control.LIVE_STATES:
        status["since"] = status["started_at"]
    else:  # stopped / failed: since it ended (a killed driver wrote no stopped_at)
        status["since"] = status["stopped_at"] or status["updated_at"]
    if state in control.LIVE_STATES and status["batch_id"] is None:
        notes.append(f"The {engine} stream is {state} and has not finished a batch yet.")
    return status


RECENT_FIELDS = ("batch_id", "time", "input_rows", "input_rows_per_second", "processed_rows_per_second",
                 "batch_duration_ms")


def _recent_batches(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The driver's last batches, oldest first; a status from before that list holds the last one."""
    recent = status.pop("recent_batches")
    if not recent and status.get("batch_id") is not None:
        recent = [{**status, "time": status.get("batch_time")}]
    return [{field: batch.get(field) for field in RECENT_FIELDS}
            for batch in recent if isinstance(batch, dict)]


def _ledger_view(settings: Settings, engine: Engine, notes: list[str]) -> dict[str, Any]:
    files = {status: 0 for status in FILE_STATUSES}
    deliveries = {state: 0 for state in DELIVERY_STATES}
    view: dict[str, Any] = {"exists": False, "files": files, "total_files": 0, "deliveries": deliveries,
                            "latest_quarantine": [], "unprocessed": []}
    if not settings.ledger.exists():  # never create the database just by looking
        notes.append("No file has been staged yet (the ledger is empty).")
        return view
    try:
        ledger = _open_ledger(settings.ledger)
        summary = ledger.summary()
        quarantine = ledger.latest_quarantine(QUARANTINE_SHOWN)
        unprocessed = ledger.unprocessed(engine)
    except sqlite3.Error as error:
        _LEDGERS.pop(settings.ledger, None)
        notes.append(f"The ledger could not be read: {error}.")
        return view
    files.update(summary["files"])
    deliveries.update(summary["deliveries"].get(engine, {}))
    view.update(
        exists=True, total_files=summary["total_files"], unprocessed=unprocessed,
        latest_quarantine=[{"name": row["name"], "reason": row["reason"], "at": row["updated_at"]}
                           for row in quarantine],
    )
    return view


# One Ledger per database: a Ledger creates its schema on first use (a short write transaction),
# which a page refreshing every few seconds should not repeat.
_LEDGERS: dict[Path, Ledger] = {}


def _open_ledger(path: Path) -> Ledger:
    ledger = _LEDGERS.get(path)
    if ledger is None:
        ledger = _LEDGERS[path] = Ledger(path)
    return ledger


def _lag(settings: Settings, engine: Engine, unprocessed: list[str], now: datetime) -> dict[str, Any]:
    """Files waiting for ``engine``: the ledger names them, their mtime in the watch folder dates them.

    Staging sets a published file's mtime to the moment it appeared, so the oldest mtime is how long
    the engine has kept someone waiting. A name without a file (still being copied, or removed by
    hand) is counted but cannot be dated.
    """
    watch = settings.watch(engine)
    oldest_name: str | None = None
    oldest_mtime: float | None = None
    for name in unprocessed:
        try:
            mtime = (watch / name).stat().st_mtime
        except OSError:
            continue
        if oldest_mtime is None or mtime < oldest_mtime:
            oldest_name, oldest_mtime = name, mtime
    age = None if oldest_mtime is None else max(0.0, round(now.timestamp() - oldest_mtime, 1))
    oldest_at = None if oldest_mtime is None else (
        datetime.fromtimestamp(oldest_mtime, UTC).isoformat(timespec="milliseconds"))
    return {"files": len(unprocessed), "oldest_name": oldest_name, "oldest_at": oldest_at,
            "oldest_age_seconds": age}


def _results_view(settings: Settings, engine: Engine, notes: list[str]) -> dict[str, Any]:
    semantics = results.SEMANTICS[engine]
    output = settings.output(engine)
    totals, batches = _cached_totals(output, semantics)
    if not batches:
        notes.append(f"No results yet in {output}.")
    return {
        "semantics": semantics,
        "batches": batches,
        "distinct_words": len(totals),
        "total_count": sum(totals.values()),
        "top_words": [[word, count] for word, count in results.ranked(totals, TOP_WORDS)],
    }


# Totals of one output folder, recomputed only when its batch folders change: a dstream output has
# one folder per batch, and re-reading all of them on every refresh would cost more than the stream.
_TOTALS: dict[Path, tuple[tuple[tuple[str, int], ...], dict[str, int]]] = {}
_TOTALS_LOCK = threading.Lock()


def _cached_totals(output: Path, semantics: results.Semantics) -> tuple[dict[str, int], int]:
    folders = results.batch_dirs(output)
    signature = tuple((folder.name, _mtime_ns(folder)) for folder in folders)
    with _TOTALS_LOCK:
        cached = _TOTALS.get(output)
        if cached is not None and cached[0] == signature:
            return cached[1], len(folders)
    try:
        totals = results.read_totals(output, semantics)
    except (OSError, ValueError):  # a folder replaced under us (a replayed batch): next refresh
        return (cached[1] if cached else {}), len(folders)
    with _TOTALS_LOCK:
        _TOTALS[output] = (signature, totals)
    return totals, len(folders)


def _mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


# -- the web app --------------------------------------------------------------------------------
def airflow_access() -> Access:
    """Airflow's own check, as its REST API applies it: a valid JWT, and the right to see the UI.

    Imported here, not at module level, so the data function and its tests need no Airflow.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    return requires_access_view(AccessView.WEBSITE)


def airflow_login_url(next_url: str) -> str:
    """Where Airflow's auth manager signs a user in and then sends them back to ``next_url``."""
    from airflow.api_fastapi.app import get_auth_manager

    return str(get_auth_manager().get_url_login(next_url=next_url))


def create_app(access: Access | None = None, settings: Callable[[], Settings] = Settings.from_env,
               login_url: Callable[[str], str] = airflow_login_url) -> FastAPI:
    """The FastAPI app mounted at :data:`URL_PREFIX`; ``access`` defaults to :func:`airflow_access`.

    Page links and fetches are relative, so the app works under any prefix and behind Airflow's
    ``[api] base_url``.
    """
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(
        title="wordstream stream status", docs_url=None, redoc_url=None, openapi_url=None,
        dependencies=[Depends(access or airflow_access())],
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, error: StarletteHTTPException) -> Response:
        """A page asked for without a session goes to the login; an API call gets the status code."""
        wants_page = "/api/" not in request.url.path
        if error.status_code == 401 and wants_page and request.method == "GET":
            return RedirectResponse(login_url(str(request.url)), status_code=307)
        return await http_exception_handler(request, error)

    def engine_or_404(engine: str) -> Engine:
        try:
            return check_engine(engine)
        except ValueError as error:
            raise HTTPException(status_code=404, detail=str(error)) from None

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        """The engines, each with its state, linking to their pages."""
        current = settings()
        items = "".join(
            f'<li><a href="{engine}">{engine}</a> — '
            f"{html.escape(str(control.read_status(current.state, engine).get('state')))}</li>"
            for engine in ENGINES
        )
        return HTMLResponse(_page_shell("wordstream streams", f"<h1>wordstream streams</h1><ul>{items}</ul>"))

    @app.get("/api/{engine}")
    def view_json(engine: str) -> JSONResponse:
        return JSONResponse(stream_view(settings(), engine_or_404(engine)),
                            headers={"Cache-Control": "no-store"})

    @app.get("/{engine}", response_class=HTMLResponse)
    def view_page(engine: str) -> HTMLResponse:
        name = engine_or_404(engine)
        return HTMLResponse(render_page(stream_view(settings(), name)), headers={"Cache-Control": "no-store"})

    return app


class LazyApp:
    """An ASGI app that builds the real one (:func:`create_app`) on its first request.

    Airflow imports plugin files in every process, the scheduler, the DAG processor and each task
    (for macros), but only the API server serves them: importing FastAPI and Airflow's security
    module there alone keeps most of a second off every task start.
    """

    def __init__(self, factory: Callable[[], ASGIApp] = create_app) -> None:
        self.factory = factory
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = self.factory()  # the event loop runs one request at a time up to here
        await self._app(scope, receive, send)


def render_page(view: dict[str, Any]) -> str:
    """The page template with the first view embedded, so it shows data before its first fetch."""
    template = (STATIC_DIR / "stream.html").read_text(encoding="utf-8")
    # JSON inside <script>: "<" escaped so no value can close the element.
    embedded = json.dumps(view, sort_keys=True).replace("<", "\\u003c")
    return (template.replace("{{ENGINE}}", html.escape(view["engine"]))
            .replace("{{VIEW_JSON}}", embedded))


def _page_shell(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<link rel="stylesheet" href="static/stream.css"></head><body>{body}</body></html>')
