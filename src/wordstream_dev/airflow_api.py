"""A small typed client for Airflow's REST API v2, for the stack launcher, the e2e tests and scripts.

Airflow 3 serves its public API under ``/api/v2`` and wants a bearer token, which the simple auth
manager hands out at ``POST /auth/token`` for a JSON username/password. Only what this project
drives is here: health, DAG listing and pausing, triggering runs with ``conf``, waiting for a run,
and marking or clearing a task instance (how the UI stops or restarts a stream task).

Every HTTP failure raises :class:`AirflowApiError` naming the method, URL, status and Airflow's own
``detail`` message, so a failing script says what the server said instead of a bare status code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import requests

from wordstream import Progress

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
# SQLite answers "database is locked" under bursts of writes; the API server turns that into a 500.
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "PATCH", "DELETE"})
# The components ``/api/v2/monitor/health`` reports; a stack is up when all are healthy.
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def _quiet(_line: str) -> None:
    """Default progress sink: say nothing."""


class AirflowApiError(RuntimeError):
    """An HTTP call to Airflow failed (connection refused, timeout or a non-2xx status)."""

    def __init__(self, method: str, url: str, status: int | None, detail: str, attempts: int = 1) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.detail = detail
        self.attempts = attempts
        where = f"{method} {url}"
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{where} -> HTTP {status}: {detail}{tries}" if status
                         else f"{where} failed: {detail}{tries}")


class AirflowClient:
    """Calls to one Airflow API server, authenticated with a bearer token when one is set.

    ``base_url`` is the server root (``http://127.0.0.1:8080``), without ``/api/v2``.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0,
                 session: requests.Session | None = None, retries: int = 3) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.session = session or requests.Session()
        self.token = token
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # -- authentication ----------------------------------------------------------------------
    @classmethod
    def login(cls, base_url: str, username: str, password: str, timeout: float = 30.0) -> AirflowClient:
        """A client holding a fresh token for ``username`` (valid for ``[api_auth] jwt_expiration_time``)."""
        client = cls(base_url, timeout=timeout)
        body = client._request("POST", "/auth/token", json={"username": username, "password": password},
                               idempotent=True)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise AirflowApiError("POST", client._url("/auth/token"), None, f"no access_token in {body!r}")
        client.token = token
        client.session.headers["Authorization"] = f"Bearer {token}"
        return client

    # -- plumbing ----------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 json: Any = None, timeout: float | None = None, idempotent: bool | None = None) -> Any:
        """One call; transient failures of a call safe to repeat are retried with a short backoff."""
        url = self._url(path)
        repeatable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        attempts = 1 + (self.retries if repeatable else 0)
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.request(method, url, params=params, json=json,
                                                timeout=timeout or self.timeout)
            except requests.RequestException as exc:
                if attempt < attempts:
                    time.sleep(0.5 * 2 ** (attempt - 1))
                    continue
                raise AirflowApiError(method, url, None, str(exc), attempt) from exc
            if response.ok:
                if not response.content:
                    return None
                try:
                    return response.json()
                except ValueError:
                    return response.text
            if response.status_code in TRANSIENT_STATUSES and attempt < attempts:
                time.sleep(0.5 * 2 ** (attempt - 1))
                continue
            raise AirflowApiError(method, url, response.status_code, _detail(response), attempt)
        raise AssertionError("unreachable")

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any ``/api/v2`` call not wrapped below; ``path`` starts after ``/api/v2``.

        GET/PUT/PATCH/DELETE are retried on transient errors; pass ``idempotent=True`` for a POST
        that is safe to repeat.
        """
        return self._request(method, f"/api/v2{path}", **kwargs)

    # -- health ------------------------------------------------------------------------------
    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """``GET /api/v2/monitor/health``: one entry per component with its ``status``."""
        return self._request("GET", "/api/v2/monitor/health", timeout=timeout)

    def execution_health(self, timeout: float = 60.0) -> dict[str, Any]:
        """``GET /execution/health``: the API the task processes talk to.

        Its app (Cadwyn's versioned routers) is built on its first request, and the build holds the
        API server's event loop: measured 2.7-4.9 s on two cores, during which no task can start
        and no REST call is answered. Asking once when the stack comes up pays that before any task
        waits for it.
        """
        return self._request("GET", "/execution/health", timeout=timeout)

    def version(self) -> str:
        return str(self.api("GET", "/version")["version"])

    # -- DAGs --------------------------------------------------------------------------------
    def list_dags(self) -> list[dict[str, Any]]:
        """Every DAG the server knows (all pages)."""
        return self._paged("/dags", "dags")

    def dag_ids(self) -> set[str]:
        return {dag["dag_id"] for dag in self.list_dags()}

    def import_errors(self) -> list[dict[str, Any]]:
        """DAG files that failed to parse, with Airflow's traceback in ``stack_trace``."""
        return self._paged("/importErrors", "import_errors")

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 180.0, interval: float = 2.0,
                      progress: Progress = _quiet) -> set[str]:
        """Wait until the DAG processor has registered every id; return the ones still missing.

        Gives up early, and says why, when a DAG file fails to import: waiting longer would not help.
        """
        wanted = set(dag_ids)
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while True:
            missing = wanted - self.dag_ids()
            if not missing:
                return set()
            errors = self.import_errors()
            if errors:
                for error in errors:
                    first = (error.get("stack_trace") or "").strip().splitlines()[-1:] or ["?"]
                    progress(f"DAG import error in {error.get('filename')}: {first[0]}")
                return missing
            now = time.monotonic()
            if now >= deadline:
                return missing
            if now - last_report >= 10:
                progress(f"waiting for the DAG processor to register {', '.join(sorted(missing))} ...")
                last_report = now
            time.sleep(interval)

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self.set_paused(dag_id, False)

    # -- DAG runs ----------------------------------------------------------------------------
    def trigger_dag_run(self, dag_id: str, conf: Mapping[str, Any] | None = None,
                        run_id: str | None = None, note: str | None = None) -> dict[str, Any]:
        """Start a manual run now; ``conf`` fills the DAG's Params. Returns the run (``dag_run_id``).

        The run id is chosen here (Airflow's ``manual__<time>`` form unless given), so a retried
        request after a lost answer finds the run it created instead of starting a second one.
        """
        run_id = run_id or f"manual__{datetime.now(UTC).isoformat()}"
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})}
        if note:
            body["note"] = note
        try:
            return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body, idempotent=True)
        except AirflowApiError as exc:
            if exc.status == 409 and exc.attempts > 1:  # an earlier attempt went through
                return self.get_dag_run(dag_id, run_id)
            raise

    def get_dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def list_dag_runs(self, dag_id: str, states: Iterable[str] = ()) -> list[dict[str, Any]]:
        params = {"state": list(states)} if states else None
        return self._paged(f"/dags/{dag_id}/dagRuns", "dag_runs", params)

    def wait_for_dag_run(self, dag_id: str, run_id: str, states: Iterable[str] = ("success",),
                         timeout: float = 300.0, interval: float = 2.0,
                         progress: Progress = _quiet) -> dict[str, Any]:
        """Poll until the run is in one of ``states``; raise TimeoutError or RuntimeError otherwise.

        A run that ends in a state that was not asked for (e.g. ``failed`` while waiting for
        ``success``) raises at once, with the state of every task, instead of waiting out the timeout.
        """
        wanted = set(states)
        deadline = time.monotonic() + timeout
        last_state = None
        while True:
            run = self.get_dag_run(dag_id, run_id)
            state = run["state"]
            if state in wanted:
                return run
            if state != last_state:
                progress(f"{dag_id} {run_id}: {state}")
                last_state = state
            if state in TERMINAL_RUN_STATES:
                tasks = self.task_instances(dag_id, run_id)
                summary = ", ".join(f"{ti['task_id']}={ti['state']}" for ti in tasks)
                expected = "/".join(sorted(wanted))
                raise RuntimeError(f"{dag_id} {run_id} ended {state}, not {expected} ({summary})")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{dag_id} {run_id} still {state} after {timeout:g} s")
            time.sleep(interval)

    # -- task instances ----------------------------------------------------------------------
    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._paged(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", "task_instances")

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def set_task_instance_state(self, dag_id: str, run_id: str, task_id: str, state: str,
                                note: str | None = None) -> list[dict[str, Any]]:
        """Mark a task instance ``success``, ``failed`` or ``skipped`` (a running task is then killed)."""
        body: dict[str, Any] = {"new_state": state}
        if note:
            body["note"] = note
        result = self.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json=body)
        return list(result.get("task_instances", [])) if isinstance(result, dict) else []

    def mark_task_failed(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        return self.set_task_instance_state(dag_id, run_id, task_id, "failed")

    def clear_task_instance(self, dag_id: str, run_id: str, task_id: str,
                            only_failed: bool = False) -> list[dict[str, Any]]:
        """Clear one task instance so the scheduler runs it again; returns the cleared instances."""
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": [task_id], "only_failed": only_failed,
                "reset_dag_runs": True}
        result = self.api("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)
        return list(result.get("task_instances", [])) if isinstance(result, dict) else []

    # -- helpers -----------------------------------------------------------------------------
    def _paged(self, path: str, key: str, params: Mapping[str, Any] | None = None,
               page_size: int = 100) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", path, params={**(params or {}), "limit": page_size, "offset": len(items)})
            batch = list(page.get(key) or [])
            items.extend(batch)
            total = page.get("total_entries")
            if len(batch) < page_size or (total is not None and len(items) >= total):
                return items


def _detail(response: requests.Response) -> str:
    """Airflow's error message: FastAPI puts it in ``detail`` (a string or a validation list)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
                         if isinstance(item, dict) else str(item) for item in detail)
    return str(detail)
