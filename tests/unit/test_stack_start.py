"""When the stack calls Airflow up: every component healthy and the execution API built.

Airflow's execution API (the one every task process calls to start) builds its app on its first
request and holds the API server while it does (2.7-4.9 s measured on two cores), so the stack asks
for it before it reports Airflow up. A real HTTP server on loopback stands in for the API server's
two health endpoints; it records what it was asked, in order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from wordstream_dev.airflow_api import HEALTH_COMPONENTS
from wordstream_dev.stack import Stack


class FakeHealth:
    """Answers ``/api/v2/monitor/health`` (all healthy) and ``/execution/health`` (after
    ``execution_failures`` 503s); ``asked`` lists the paths in the order they came."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.execution_failures = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.asked.append(self.path)
                if self.path == "/api/v2/monitor/health":
                    self.answer(200, {name: {"status": "healthy"} for name in HEALTH_COMPONENTS})
                elif self.path == "/execution/health" and owner.execution_failures > 0:
                    owner.execution_failures -= 1
                    self.answer(503, {"detail": "starting"})
                elif self.path == "/execution/health":
                    self.answer(200, {"status": "healthy"})
                else:
                    self.answer(404, {})

            def answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]


@pytest.fixture
def api() -> Iterator[FakeHealth]:
    fake = FakeHealth()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.mark.parametrize("failures", [0, 2])
def test_airflow_is_up_only_once_the_execution_api_answered(api: FakeHealth, failures: int,
                                                            tmp_path: Path) -> None:
    api.execution_failures = failures
    lines: list[str] = []
    stack = Stack(airflow_home=tmp_path / "home", data_dir=tmp_path / "data", run_dir=tmp_path / "run",
                  port=api.port, env={"PATH": "/usr/bin:/bin"}, progress=lines.append)
    stack.wait_healthy(timeout=30)
    assert api.asked.count("/execution/health") == failures + 1
    assert api.execution_failures == 0, "returned before the execution API answered"
    assert lines[-1].startswith("Airflow is up"), lines
