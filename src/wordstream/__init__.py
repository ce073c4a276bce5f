"""wordstream: staged files in, exact streaming word counts out.

The runtime package, installed into every Python that runs the workflow: the Airflow DAGs and
plugin, the Spark applications in ``spark_apps/`` and the ``wordstream`` command line. Only
:mod:`wordstream.orchestration` imports Airflow, so the Spark driver and the CLI stay light.
``docs/architecture.md`` maps the modules to the data flow ("Modules") and states the contracts.
"""

from __future__ import annotations

from collections.abc import Callable

__version__ = "0.1.0"

# How every long operation reports progress: one line at a time (print, a logger, a test's list).
Progress = Callable[[str], None]
