# syntax=docker/dockerfile:1
# One image for every service of docker-compose.yaml: the Airflow components AND the Spark master and
# workers. The Spark driver runs inside an Airflow container (client mode, LocalExecutor) and the
# executors inside spark-worker containers; building both from this image gives them the same Python,
# the same pyspark/Spark jars and the same wordstream package, which Python workers must import.
#
# The base tag's Airflow version must equal the apache-airflow pin in requirements.txt, and its
# Python the project's (3.11); tests/unit/test_compose.py checks both.
FROM apache/airflow:3.3.2-python3.11

# Spark 4 needs Java 17+. Slim Debian images drop /usr/share/man, which the JRE's postinst expects.
# /usr/lib/jvm/java-17 is an architecture-independent name for JAVA_HOME (amd64 and arm64 alike).
USER root
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /usr/lib/jvm/java-17 \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
USER airflow

# The project's pinned runtime set, as pinned: no --upgrade, so apache-airflow stays the base's.
# The image installs with PIP_USER, hence pyspark (a complete Spark) lands in ~airflow/.local.
COPY --chown=airflow:0 requirements.txt /tmp/wordstream-requirements.txt
RUN pip install --no-cache-dir -r /tmp/wordstream-requirements.txt \
    && rm /tmp/wordstream-requirements.txt

# The project lives in AIRFLOW_HOME with the repository's layout (dags/, plugins/, spark_apps/,
# src/wordstream/, data/), so paths derived from the package location (spark_apps/) resolve the same
# way as in a checkout. An editable install keeps it that way and lets the compose file's bind mounts
# take effect without a rebuild; --no-deps: everything came pinned above. Only the runtime package is
# copied: the developer tooling (src/wordstream_dev) is not part of the image.
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow/
COPY --chown=airflow:0 src/wordstream /opt/airflow/src/wordstream
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 spark_apps /opt/airflow/spark_apps
COPY --chown=airflow:0 dags /opt/airflow/dags
RUN pip install --no-cache-dir --no-deps -e /opt/airflow \
    && mkdir -p /opt/airflow/data /opt/airflow/auth \
    && chmod g+rwx /opt/airflow/data /opt/airflow/auth

ENV JAVA_HOME=/usr/lib/jvm/java-17 \
    SPARK_HOME=/home/airflow/.local/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=python \
    WORDSTREAM_DATA_DIR=/opt/airflow/data
ENV PATH="${SPARK_HOME}/bin:${JAVA_HOME}/bin:${PATH}"

# Fail the build, not the first DAG run, if Spark, Java or the package are not where ENV says.
RUN test "$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" = "${SPARK_HOME}" \
    && test -x "${SPARK_HOME}/bin/spark-class" \
    && java -version \
    && python -c 'import wordstream.settings as s; assert str(s.REPO_DIR) == "/opt/airflow", s.REPO_DIR' \
    && ! python -c 'import wordstream_dev' 2>/dev/null
