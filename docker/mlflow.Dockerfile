# syntax=docker/dockerfile:1
# MLflow tracking server for the compose stack, with the PostgreSQL driver.
#
# A postgresql:// backend store needs psycopg2. The official image ghcr.io/mlflow/mlflow:v<X>
# installs plain `mlflow` without it, its -full variant adds it along with every optional extra,
# and the project image is a CUDA image of several GB. So this image is python:3.11-slim with
# two pinned packages. Keep MLFLOW_VERSION equal to the MLflow that the project installs, so
# that client and server run the same release.
FROM python:3.11-slim-bookworm

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13
LABEL org.opencontainers.image.title="mobilesam-tune-mlflow" \
      org.opencontainers.image.description="MLflow ${MLFLOW_VERSION} tracking server with psycopg2 for a PostgreSQL backend store"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

RUN pip install --no-cache-dir "mlflow==${MLFLOW_VERSION}" "psycopg2-binary==${PSYCOPG2_VERSION}" \
    && useradd --create-home --uid 1000 --user-group mlflow \
    && mkdir -p /mlflow/artifacts \
    && chown -R 1000:1000 /mlflow

# /mlflow belongs to the mlflow user, so a new named volume mounted at /mlflow/artifacts
# inherits that owner. The default arguments keep runs in /mlflow/mlflow.db (SQLite);
# docker/compose.yaml replaces them with a PostgreSQL backend store.
USER 1000:1000
WORKDIR /mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000", "--backend-store-uri", "sqlite:////mlflow/mlflow.db", \
     "--serve-artifacts", "--artifacts-destination", "/mlflow/artifacts"]
