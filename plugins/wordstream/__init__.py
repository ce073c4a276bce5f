"""wordstream: staged files in, exact streaming word counts out.

The package is shared by the Airflow DAGs (Airflow puts ``plugins/`` on ``sys.path``), the Spark
applications in ``spark_apps/`` and the ``wordstream`` command line. It never imports Airflow at
module level, so the Spark driver and the CLI stay light.
"""

from __future__ import annotations

__version__ = "0.1.0"
