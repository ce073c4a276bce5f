"""A process that dies at a chosen call of a chosen function: the crash tests' ``python -c`` scripts.

A crash test runs the code under test in a process of its own, made to die at the ``allowed + 1``-th
call of one function (``os.replace``, a ledger write, a group of files) with ``os._exit``: no
``finally``, no clean-up, as a SIGKILL at that point would leave things; then it checks what the
next run makes of the leftovers. :func:`script` is the command line of such a script, which
imports this module and calls :func:`die_after`.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT = 17  # the status of a process that died at its crash point
TESTS_DIR = Path(__file__).resolve().parent


def script(code: str, *args: object) -> list[str]:
    """``python -c code args...``, with this folder importable (``import crash_point``)."""
    prelude = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r})\n"
    return [sys.executable, "-c", prelude + code, *map(str, args)]


def die_after(owner: object, attr: str, allowed: int, *, armed: Callable[[], bool] = lambda: True,
              terminate: bool = False, last_words: Callable[..., object] | None = None) -> None:
    """Replace ``owner.attr`` so that its calls after the first ``allowed`` kill the process.

    Only calls made while ``armed()`` count. ``terminate`` sends the process a SIGTERM instead (its
    handler decides what happens; the call itself goes on). ``last_words`` gets the dying call's
    arguments first (e.g. to leave half a file, as a kill in the middle of a write does).
    """
    original = getattr(owner, attr)
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        if armed():
            calls += 1
            if calls > allowed:
                if last_words is not None:
                    last_words(*args, **kwargs)
                if terminate:
                    os.kill(os.getpid(), signal.SIGTERM)
                else:
                    os._exit(EXIT)
        return original(*args, **kwargs)

    setattr(owner, attr, wrapper)
