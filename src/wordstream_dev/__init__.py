"""Developer tooling: what ``make run``, ``make cluster-up``, the tests and the benchmarks use.

Not part of the runtime: the image (``Dockerfile``) does not carry it, so it never reaches an Airflow
worker or a Spark executor. The runtime never imports it.

* :mod:`~wordstream_dev.stack` — the local Airflow stack behind ``make run`` / ``make stop``;
* :mod:`~wordstream_dev.cluster` — a Spark standalone cluster on 127.0.0.1;
* :mod:`~wordstream_dev.airflow_env` — the environment such an Airflow runs in;
* :mod:`~wordstream_dev.airflow_api` — a small client of Airflow's REST API;
* :mod:`~wordstream_dev.processes` — ports, process groups and launchers shared by all of them.
"""
