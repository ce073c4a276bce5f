"""Developer tooling: what ``make run``, ``make cluster-up``, the tests and the benchmarks use.

Not part of the runtime: the image (``Dockerfile``) does not carry it, so it never reaches an Airflow
worker or a Spark executor. The runtime never imports it.

* :mod:`~wordstream_dev.stack` — the local Airflow stack behind ``make run`` / ``make stop``;
* :mod:`~wordstream_dev.cluster` — a Spark standalone cluster on 127.0.0.1;
* :mod:`~wordstream_dev.airflow_env` — the environment such an Airflow runs in;
* :mod:`~wordstream_dev.airflow_api` — a small client of Airflow's REST API;
* :mod:`~wordstream_dev.processes` — ports, process identities and groups, stopping, logs: shared by all
  of them, the tests and the benchmarks;
* :mod:`~wordstream_dev.spark_submit` — the one spark-submit launcher outside Airflow (tests, benchmarks,
  jobs on the local cluster);
* :mod:`~wordstream_dev.prerequisites` — Java and Chromium from Debian packages (standard library only:
  ``make setup`` runs it before the virtualenv exists).
"""
