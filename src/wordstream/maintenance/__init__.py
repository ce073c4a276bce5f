"""Maintenance of the engines' files, as run by the streaming_maintenance DAG and the CLI.

No Airflow here: the DAG calls these functions and logs their reports.

* :mod:`~wordstream.maintenance.reset` — a new epoch of one engine, counted from zero;
* :mod:`~wordstream.maintenance.retention` — retention of everything that grows, and a size report;
* :mod:`~wordstream.maintenance.airflow_history` — its Airflow part: our DAGs' metadata and logs.
"""

from wordstream.maintenance.airflow_history import AirflowReport, AirflowSite
from wordstream.maintenance.folders import human_bytes, tree_bytes
from wordstream.maintenance.reset import ResetError, ResetReport, epoch_engine, reset_engine
from wordstream.maintenance.retention import SIZE_PARTS, CleanupReport, cleanup, engine_sizes

__all__ = [
    "SIZE_PARTS",
    "AirflowReport",
    "AirflowSite",
    "CleanupReport",
    "ResetError",
    "ResetReport",
    "cleanup",
    "engine_sizes",
    "epoch_engine",
    "human_bytes",
    "reset_engine",
    "tree_bytes",
]
