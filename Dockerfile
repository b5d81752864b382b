# Airflow image with the pipeline's locked dependencies and dbt in its own virtualenv.
FROM apache/airflow:3.3.0-python3.11

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libmariadb-dev \
 && rm -rf /var/lib/apt/lists/*
USER airflow

COPY --chown=airflow:root requirements.txt requirements-dbt.txt pyproject.toml README.md /opt/recsys/
RUN pip install --no-cache-dir -r /opt/recsys/requirements.txt \
 && python -m venv /opt/recsys/.venv-dbt \
 && /opt/recsys/.venv-dbt/bin/pip install --no-cache-dir -r /opt/recsys/requirements-dbt.txt

# the checkout less what .dockerignore leaves out: secrets (.env), Airflow homes, run folders, .git, environments
COPY --chown=airflow:root . /opt/recsys/
RUN pip install --no-cache-dir --no-deps -e /opt/recsys

ENV RECSYS_DBT_EXECUTABLE=/opt/recsys/.venv-dbt/bin/dbt \
    RECSYS_DBT_PROJECT_DIR=/opt/recsys/dbt_project
