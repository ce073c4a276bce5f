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

Trigger form: **keys** (`words`, or `lines` for the tutorial's whole-line keys), **batch_seconds**
(structured: from 0.25 s; DStream: whole seconds), **timeout_seconds** (0 = run until stopped), and
each engine's scale knobs: structured **max_files_per_trigger** or **max_bytes_per_trigger**,
**state_store**, **shuffle_partitions**; DStream **remember_seconds**. A knob its checkpoint fixed
(state store, shuffle partitions, DStream interval and remember window) is refused with a one-line
message until the engine is reset. Results: `wordstream totals --engine <engine>`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from wordstream.orchestration.stream_operator import StreamSubmitOperator, stream_params
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
        params=stream_params(engine, Settings.from_env()),
    ) as dag:
        StreamSubmitOperator(task_id="run_stream", engine=engine)
    globals()[dag.dag_id] = dag
