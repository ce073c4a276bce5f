"""The stream status pages inside Airflow's UI: :func:`~wordstream.orchestration.status_view.stream_view`
served as JSON and as a page.

:func:`create_app` serves the view twice, under ``/wordstream`` in Airflow's API server (registered by
``plugins/wordstream_ui_plugin.py``): ``api/<engine>`` as JSON and ``<engine>`` as a self-refreshing
HTML page (plain JavaScript and inline SVG from ``static/``; the UI must work without internet).
Airflow mounts plugin apps without any authentication, so every route here depends on Airflow's own
``get_user`` + view authorization, the same check its REST API applies: a bearer token or the UI's
``_token`` cookie. Refused requests get 401/403 as JSON, or a redirect to Airflow's login for pages.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wordstream import control
from wordstream.orchestration.status_view import stream_view
from wordstream.settings import ENGINES, Engine, Settings, check_engine

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

URL_PREFIX = "/wordstream"
STATIC_DIR = Path(__file__).with_name("static")

Access = Callable[..., Any]


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
