"""docker-compose.yaml, Dockerfile and .env.example agree with each other and with requirements.txt.

No Docker engine needed: the file is read as YAML and checked for what would otherwise only fail at
``docker compose up`` (a missing service, an image mismatch between driver and executors, a secret
with a default, a variable .env.example forgets). If the Compose client is installed, ``docker
compose config`` validates the file against the Compose specification as well.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from wordstream_dev.airflow_env import LOG_LEVELS, RESPONSIVE_TIMINGS

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
REQUIREMENTS = REPO / "requirements.txt"

AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer")
SPARK_SERVICES = ("spark-master", "spark-worker")
EXPECTED_SERVICES = ("postgres", *AIRFLOW_SERVICES, *SPARK_SERVICES)
ONE_SHOT_SERVICES = ("airflow-init",)
DATA_MOUNT = "/opt/airflow/data"
SECRET_WORDS = ("PASSWORD", "SECRET", "KEY", "TOKEN")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; "$${" is a literal "${".
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")
REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}$")


def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(compose_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def container_paths(service: dict[str, Any]) -> dict[str, str]:
    """Container path → source of every volume of a service (short and long syntax)."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = str(volume.get("source", "")), str(volume["target"])
        mounts[target] = source
    return mounts


def required_variables(text: str) -> set[str]:
    return {m["name"] for m in VARIABLE.finditer(text) if m["op"] in (":?", "?")}


def all_variables(text: str) -> set[str]:
    return {m["name"] for m in VARIABLE.finditer(text)}


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_compose_is_yaml_with_the_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert sorted(services) == sorted(EXPECTED_SERVICES)


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name


def test_airflow_and_spark_services_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    """The driver (in Airflow) and the executors (in spark-worker) must run the same Python and Spark."""
    images = {(str(services[name].get("image")), repr(services[name].get("build")))
              for name in (*AIRFLOW_SERVICES, *SPARK_SERVICES)}
    assert len(images) == 1, images
    image, build = images.pop()
    assert "Dockerfile" in build, "the shared image is built from the project's Dockerfile"
    assert image != "None"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", name
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_depends_on_targets_exist_with_conditions(services: dict[str, dict[str, Any]]) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name
            assert spec.get("condition") in conditions, f"{name} → {target}"
            expected = "service_completed_successfully" if target in ONE_SHOT_SERVICES else "service_healthy"
            assert spec["condition"] == expected, f"{name} → {target}"


def test_airflow_waits_for_init_and_postgres(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        assert "postgres" in services[name]["depends_on"], name
        if name not in ONE_SHOT_SERVICES:
            assert "airflow-init" in services[name]["depends_on"], name
    assert "spark-master" in services["spark-worker"]["depends_on"]


def test_data_directory_is_shared_at_the_same_path(services: dict[str, dict[str, Any]]) -> None:
    """Paths in the app's arguments are resolved on driver and executors alike: same mount, same path."""
    sources = set()
    for name in (*AIRFLOW_SERVICES, *SPARK_SERVICES):
        mounts = container_paths(services[name])
        assert DATA_MOUNT in mounts, f"{name} does not mount {DATA_MOUNT}"
        sources.add(mounts[DATA_MOUNT])
        assert environment(services[name]).get("WORDSTREAM_DATA_DIR") == DATA_MOUNT, name
    assert sources == {"./data"}


def test_airflow_services_mount_dags_and_plugins(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        mounts = container_paths(services[name])
        assert mounts.get("/opt/airflow/dags") == "./dags", name
        assert mounts.get("/opt/airflow/plugins") == "./plugins", name


def test_every_service_running_python_of_ours_mounts_the_runtime_package(
        services: dict[str, dict[str, Any]]) -> None:
    """Drivers and executors import wordstream from the image's editable install of src/wordstream."""
    for name in (*AIRFLOW_SERVICES, *SPARK_SERVICES):
        mounts = container_paths(services[name])
        assert mounts.get("/opt/airflow/src/wordstream") == "./src/wordstream", name
        assert "./src/wordstream_dev" not in mounts.values(), name


def test_airflow_configuration(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"), name
        assert "@postgres:" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        # what the maintenance task hands its metadata clean (a task's own URL is a dummy)
        assert env["WORDSTREAM_METADB_CONN"] == env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false", name
        assert "spark://spark-master:7077" in env["AIRFLOW_CONN_SPARK_DEFAULT"], name
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager"), name
        for key in ("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME",
                    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL"):  # as `make run` sets them
            assert env[key] == RESPONSIVE_TIMINGS[key], (name, key)
        for key, value in LOG_LEVELS.items():
            assert env[key] == value, (name, key)
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert "airflow db migrate" in " ".join(services["airflow-init"]["command"])


def test_spark_services_run_the_standalone_daemons(services: dict[str, dict[str, Any]]) -> None:
    master = " ".join(services["spark-master"]["command"])
    worker = " ".join(services["spark-worker"]["command"])
    assert "org.apache.spark.deploy.master.Master" in master and "--port 7077" in master
    assert "org.apache.spark.deploy.worker.Worker spark://spark-master:7077" in worker
    assert services["spark-master"].get("hostname") == "spark-master"


def test_spark_worker_is_scalable(services: dict[str, dict[str, Any]]) -> None:
    """`--scale spark-worker=N` fails with a fixed container name or a fixed host port."""
    worker = services["spark-worker"]
    assert "container_name" not in worker
    for port in worker.get("ports") or []:
        assert ":" not in str(port), f"fixed host port {port}"


def test_no_secret_has_a_literal_or_default_value(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in environment(service).items():
            if key.endswith("_FILE"):  # the path of a secret, not the secret
                assert value.startswith("/"), f"{name}: {key}"
                continue
            if any(word in key.upper() for word in SECRET_WORDS):
                assert REQUIRED_REFERENCE.match(value), f"{name}: {key} must be ${{VAR:?message}}"
            for credentials in re.findall(r"://[^/@\s:]+:([^@\s]+)@", value):
                assert REQUIRED_REFERENCE.match(credentials), f"{name}: {key} has a literal password"


def test_secrets_are_required_variables() -> None:
    required = required_variables(compose_text())
    assert {"POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
            "AIRFLOW_ADMIN_PASSWORD"} <= required
    for match in VARIABLE.finditer(compose_text()):
        if any(word in match["name"] for word in SECRET_WORDS):
            assert match["op"] in (":?", "?"), f"{match['name']} must not have a default"


def test_env_example_lists_every_variable_and_no_secret_value() -> None:
    example = env_example()
    text = compose_text()
    missing = all_variables(text) - set(example)
    assert not missing, f".env.example does not list {sorted(missing)}"
    for name in required_variables(text):
        assert example[name] == "", f".env.example must leave {name} empty"
    example_text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name in required_variables(text):  # each secret says how to make one
        before = example_text.split(f"\n{name}=")[0].splitlines()[-1]
        assert before.startswith("#"), f"{name} has no comment above it"


def test_dockerfile_base_matches_the_pins() -> None:
    text = "\n".join(line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#"))
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(froms) == 1, froms
    match = re.fullmatch(r"apache/airflow:(?P<airflow>[0-9.]+)-python(?P<python>[0-9.]+)", froms[0])
    assert match, froms[0]
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", REQUIREMENTS.read_text(), flags=re.MULTILINE))
    assert match["airflow"] == pins["apache-airflow"]
    assert match["python"] == "3.11"
    assert f"python{match['python']}/site-packages/pyspark" in text, "SPARK_HOME must follow the Python"
    assert "openjdk-17-jre-headless" in text
    assert re.search(r"pip install [^\n]*-r [^\n]*requirements", text)
    assert "--upgrade" not in text and " -U " not in text
    assert "--no-deps" in text
    for variable in ("JAVA_HOME", "SPARK_HOME", "PATH"):
        assert re.search(rf"^(ENV\s+|\s+){variable}=", text, flags=re.MULTILINE), variable
    assert re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)[-1] == "airflow"


def compose_command() -> list[str] | None:
    """A Compose v2 client (plugin or standalone); it parses and validates files without an engine."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        probe = subprocess.run([*command, "version", "--short"], capture_output=True, text=True,
                               check=False, timeout=30)
        major = re.match(r"v?(\d+)\.", probe.stdout.strip())
        if probe.returncode == 0 and major and int(major[1]) >= 2:
            return command
    return None


def run_compose_config(command: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
    # Only the env file may supply variables: the caller's shell must not fill a gap by accident.
    variables = all_variables(compose_text())
    env = {key: value for key, value in os.environ.items() if key not in variables}
    return subprocess.run(
        [*command, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "--env-file", str(env_file),
         "config", "--quiet"],
        capture_output=True, text=True, check=False, timeout=60, env=env,
    )


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 client here (the docker CLI has no compose plugin); "
                    "the YAML checks above still ran")
    env_file = tmp_path / "filled.env"
    filled = {name: value or f"test-{name.lower()}" for name, value in env_example().items()}
    env_file.write_text("".join(f"{name}={value}\n" for name, value in filled.items()))
    result = run_compose_config(command, env_file)
    assert result.returncode == 0, result.stderr

    # Without the secrets it refuses, and says where to set them.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = run_compose_config(command, empty)
    assert refused.returncode != 0
    assert "in .env" in refused.stderr
