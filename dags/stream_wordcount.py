"""
### Streaming word count (one DAG per engine)

Starts the long-running Spark application of one engine with `SparkSubmitOperator` through the
`spark_default` connection (`local[*]` by default; a `spark://host:7077` master runs it on a cluster).

* **stream_structured** — Structured Streaming: `readStream.text` + `groupBy(key).count()`, update mode.
* **stream_dstream** — DStream: `textFileStream` + `reduceByKey`, per-batch counts.

The task runs until the stream is stopped. A graceful stop (`streaming_maintenance` with
`action=reset`, `wordstream reset`, or the stop marker) ends it as **success**. A crashed driver is
retried and recovers from its checkpoint with exact totals. Marking the task failed or clearing it
stops the driver: no Spark process outlives the task.

Trigger form: **keys** (`words`, or `lines` for the tutorial's whole-line keys), **batch_seconds**,
**timeout_seconds** (0 = run until stopped). Results: `wordstream totals --engine <engine>`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param

from wordstream.orchestration.stream_operator import StreamSubmitOperator
from wordstream.settings import ENGINES, Settings, stream_dag_id

for engine in ENGINES:
    with DAG(
        dag_id=stream_dag_id(engine),
        description=f"Long-running {engine} word count (Spark)",
        doc_md=__doc__,
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["wordstream", "streaming"],
        default_args={
            "owner": "data-engineering",
            "retries": 3,
            "retry_delay": timedelta(seconds=20),
            "execution_timeout": None,
        },
        params={
            "keys": Param("words", type="string", enum=["words", "lines"], title="Keys",
                          description="words: split on whitespace; lines: each whole line is a key"),
            "batch_seconds": Param(Settings.from_env().batch_seconds_for(engine), type="integer", minimum=1,
                                   maximum=3600, title="Batch seconds", description="micro-batch interval"),
            "timeout_seconds": Param(0, type="integer", minimum=0, title="Timeout (seconds)",
                                     description="stop gracefully after this long; 0 = run until stopped"),
        },
    ) as dag:
        StreamSubmitOperator(task_id="run_stream", engine=engine)
    globals()[dag.dag_id] = dag
