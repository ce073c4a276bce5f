"""The stack comes up, the API answers with a token, the DAGs register, and it goes away cleanly.

The first few tests are pure (no Airflow started): the environment every Airflow of the project gets.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from wordstream.settings import DAG_IDS, REPO_DIR
from wordstream_dev.airflow_api import AirflowApiError, AirflowClient
from wordstream_dev.airflow_env import LOCAL_SPARK_CONNECTION, AirflowInstance, airflow_env
from wordstream_dev.stack import Stack

# -- the environment (no Airflow started) -------------------------------------------------------


def test_env_points_airflow_at_this_repo(tmp_path: Path) -> None:
    env = airflow_env({"PATH": "/usr/bin"}, airflow_home=tmp_path / "home", data_dir=tmp_path / "data",
                      port=18080)
    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_DIR / "dags")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(REPO_DIR / "plugins")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'home' / 'airflow.db'}"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "18080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["WORDSTREAM_DATA_DIR"] == str(tmp_path / "data")
    assert env["PATH"].split(":")[0].endswith("/bin") and env["PATH"].endswith("/usr/bin")
    assert Path(env["SPARK_HOME"], "bin", "spark-submit").exists()
    assert env["AIRFLOW_CONN_SPARK_DEFAULT"] == LOCAL_SPARK_CONNECTION


def test_env_knobs_and_an_existing_spark_connection_win() -> None:
    base = {"WORDSTREAM_AIRFLOW_PORT": "9090", "WORDSTREAM_BIND": "0.0.0.0",
            "AIRFLOW_CONN_SPARK_DEFAULT": "spark://spark-master:7077", "AIRFLOW_HOME": "/elsewhere"}
    instance = AirflowInstance.from_env(base)
    env = instance.environment(base)
    assert instance.api_url == "http://127.0.0.1:9090"  # a wildcard bind is dialled on loopback
    assert env["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert env["AIRFLOW_CONN_SPARK_DEFAULT"] == "spark://spark-master:7077"
    assert env["AIRFLOW_HOME"] == str(REPO_DIR / "airflow_home")  # a stray AIRFLOW_HOME is not ours


def test_local_connection_means_master_local_star() -> None:
    assert json.loads(LOCAL_SPARK_CONNECTION) == {"conn_type": "spark", "host": "local[*]"}


# -- the running stack --------------------------------------------------------------------------


@pytest.mark.e2e
def test_all_components_healthy(api: AirflowClient) -> None:
    health = api.health()
    assert {name: info["status"] for name, info in health.items()} == {
        "metadatabase": "healthy", "scheduler": "healthy", "triggerer": "healthy", "dag_processor": "healthy",
    }


@pytest.mark.e2e
def test_token_is_required_and_works(stack: Stack, api: AirflowClient) -> None:
    with pytest.raises(AirflowApiError) as anonymous:
        AirflowClient(stack.api_url).list_dags()
    assert anonymous.value.status == 401
    with pytest.raises(AirflowApiError) as wrong:
        AirflowClient.login(stack.api_url, "admin", "not-the-password")
    assert wrong.value.status == 401
    assert api.version().startswith("3.")


@pytest.mark.e2e
def test_our_dags_are_registered_without_import_errors(api: AirflowClient) -> None:
    missing = api.wait_for_dags(DAG_IDS, timeout=180)
    assert api.import_errors() == []
    assert not missing, f"not registered: {sorted(missing)}"
    assert set(DAG_IDS) <= api.dag_ids()


@pytest.mark.e2e
def test_start_again_is_a_no_op(stack: Stack) -> None:
    recorded = stack.recorded()
    began = time.monotonic()
    stack.start()
    assert time.monotonic() - began < 5
    assert stack.recorded()["stack_id"] == recorded["stack_id"]
    assert stack.processes(), "the running stack's processes are found"
