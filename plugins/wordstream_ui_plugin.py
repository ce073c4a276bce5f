"""Airflow plugin: the live stream status pages, in Airflow's own UI and behind its login.

Airflow loads this file from its plugins folder and mounts the app under ``/wordstream`` in the API
server; the two menu entries (Browse → "Stream status: <engine>") show the pages in the UI's frame.
Everything else lives in :mod:`wordstream.orchestration.status_app`, importable and tested without
Airflow; the app is built on its first request, so the many processes that import plugins and never
serve them stay light.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from wordstream.orchestration.status_app import URL_PREFIX, LazyApp
from wordstream.settings import ENGINES


class WordstreamUIPlugin(AirflowPlugin):
    """Registers the status app and one navigation entry per engine."""

    name = "wordstream_ui"
    fastapi_apps: list[dict[str, Any]] = [  # noqa: RUF012 - the shape Airflow reads
        {"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "wordstream stream status"},
    ]
    external_views: list[dict[str, Any]] = [  # noqa: RUF012
        {
            "name": f"Stream status: {engine}",
            # Relative (no leading slash): resolved against Airflow's base URL, also behind a proxy.
            "href": f"{URL_PREFIX.lstrip('/')}/{engine}",
            "destination": "nav",
            "category": "browse",
            "url_route": f"wordstream-{engine}",
        }
        for engine in ENGINES
    ]
