"""P5: what parsing each DAG file costs beyond importing Airflow.

The DAG processor re-parses every file periodically (every 10 s in this project's stack, 30 s by
Airflow's default) in a fresh child process: the child has Airflow imported already and the Airflow
modules the file names pre-imported (``[dag_processor] parsing_pre_import_modules``), then builds a
``DagBag`` of that one file and serialises its DAGs. This measures exactly that child's work, in a
fresh interpreter per file and repeat (a warm interpreter would hide the imports the file pulls in
by itself, such as the Spark provider behind ``stream_wordcount.py``):

1. untimed: ``import airflow``, the DagBag and serialisation machinery, and the file's own
   ``airflow.*`` imports, as the processor pre-imports them (their time is reported as the baseline);
2. timed: ``DagBag(dag_folder=<file>, bundle_path=<dags>, load_op_links=False)``: import the module,
   collect and validate its DAGs;
3. timed separately: serialising those DAGs, as the child does before sending them back.

Run by itself with ``--probe FILE`` it prints one JSON line; the parent runs it in an environment
from :mod:`wordstream_dev.airflow_env` (a scratch ``AIRFLOW_HOME``, so no real Airflow is touched).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Check, Context, Figure, Result
from wordstream.settings import REPO_DIR
from wordstream_dev.airflow_env import airflow_env

DAGS_DIR = REPO_DIR / "dags"
TARGET_MS = 100.0


def probe(path: Path) -> dict[str, float | int | str]:
    """Inside a fresh interpreter: time the DAG processor child's work on one file."""
    started = time.perf_counter()
    import importlib

    import airflow  # noqa: F401  (the baseline: what every parse already has)
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.file import iter_airflow_imports

    for module in iter_airflow_imports(str(path)):
        importlib.import_module(module)
    baseline = time.perf_counter() - started
    began = time.perf_counter()
    bag = DagBag(dag_folder=str(path), bundle_path=path.parent, load_op_links=False)
    parse = time.perf_counter() - began
    if bag.import_errors:
        raise SystemExit(f"import errors in {path}: {bag.import_errors}")
    began = time.perf_counter()
    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)
    serialise = time.perf_counter() - began
    return {"file": path.name, "import_airflow_s": baseline, "parse_s": parse, "serialise_s": serialise,
            "dags": len(bag.dags)}


def run_probe(ctx: Context, path: Path) -> dict[str, float | int | str]:
    home = ctx.work / "dag-parse"
    env = airflow_env(airflow_home=home / "airflow_home", data_dir=home / "data")
    env["PYTHONPATH"] = str(REPO_DIR)
    done = subprocess.run([sys.executable, "-m", "bench.dag_parse", "--probe", str(path)], env=env,
                          capture_output=True, text=True, timeout=300, check=False, cwd=REPO_DIR)
    if done.returncode != 0:
        raise RuntimeError(f"parsing {path.name} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(ctx: Context) -> Result:
    result = Result("P5", "DAG parse time per file beyond importing airflow")
    files = sorted(DAGS_DIR.glob("*.py"))
    repeats = ctx.repeats_for(7, 2)
    ctx.say(f"{len(files)} DAG files x {repeats} fresh interpreters", result.id)
    parse: dict[str, list[float]] = {path.name: [] for path in files}
    serialise: dict[str, list[float]] = {path.name: [] for path in files}
    baseline: list[float] = []
    for repeat in range(repeats):
        for path in files:  # interleaved, so load changes spread over every file alike
            found = run_probe(ctx, path)
            parse[path.name].append(float(found["parse_s"]) * 1000)
            serialise[path.name].append(float(found["serialise_s"]) * 1000)
            baseline.append(float(found["import_airflow_s"]) * 1000)
        ctx.say(f"repeat {repeat + 1}/{repeats}: " + ", ".join(
            f"{name} {values[-1]:.0f} ms" for name, values in parse.items()), result.id)
    figures = {name: Figure(f"parse {name}", "ms", tuple(values), higher_is_better=False)
               for name, values in parse.items()}
    worst = max(figures.values(), key=lambda f: f.median)
    result.figure = worst
    result.baselines = [Figure("import airflow (+ DagBag, pre-imports)", "ms", tuple(baseline),
                               higher_is_better=False)]
    result.extra = [f for name, f in figures.items() if f is not worst]
    result.extra += [Figure(f"serialise {name}", "ms", tuple(values), higher_is_better=False)
                     for name, values in serialise.items()]
    result.details["headline"] = "; ".join(
        f"{name}: {f.median:.0f} ms ({f.low:.0f}-{f.high:.0f})" for name, f in figures.items()
    ) + f" (n={repeats} each)"
    for name, figure in figures.items():
        result.checks.append(Check(f"{name} <= {TARGET_MS:.0f} ms", figure.median <= TARGET_MS,
                                   f"{figure.median:.0f} ms"))
    result.notes.append("Each parse runs in a fresh interpreter, as the DAG processor's child does; "
                        "the Airflow modules a file names are pre-imported first (Airflow's "
                        "parsing_pre_import_modules), anything else the file imports is counted.")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dag_parse")
    parser.add_argument("--probe", type=Path, required=True, help="a DAG file to parse once")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.probe.resolve())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
