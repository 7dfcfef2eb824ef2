# One image for every AIMQ process: the Dagster code server, webserver and daemon, each run
# container (compose) or run Job (Kubernetes), and the API. A run launched by the daemon then runs
# exactly the code and versions of the code server that defined it.
#
#   docker build -t aimq:latest .
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml and the exact pins in constraints.txt: this layer is
# rebuilt when they change, not on every code edit. Wheels only: the slim image has no compiler.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install --only-binary=:all: -c constraints.txt -r requirements.txt
COPY README.md LICENSE ./
COPY aimq_cli ./aimq_cli
COPY aimq_pipelines ./aimq_pipelines
COPY aimq_serving ./aimq_serving
COPY aimq_tabular ./aimq_tabular
# The build backend at the exact version of constraints.txt: pip's isolated build environment would
# install the newest setuptools that pyproject.toml's [build-system] allows (`-c` does not reach it),
# so install the pinned one into the venv and build without isolation.
RUN pip install -c constraints.txt setuptools \
 && pip install --no-build-isolation -c constraints.txt .

FROM python:${PYTHON_VERSION}-slim-bookworm
# tini as PID 1 forwards SIGTERM, so `docker stop`, a run termination or a pod deletion stops the
# process cleanly instead of after the kill timeout.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 aimq \
 && useradd --uid 10001 --gid aimq --home-dir /home/aimq --create-home --shell /usr/sbin/nologin aimq \
 && mkdir -p /opt/dagster/dagster_home /var/lib/aimq \
 && chown aimq:aimq /var/lib/aimq
COPY --from=build /opt/venv /opt/venv
# DAGSTER_HOME holds only dagster.yaml and workspace.yaml, mounted read-only by compose or k8s;
# everything written goes to AIMQ_DATA_DIR (a shared volume) or /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    AIMQ_DATA_DIR=/var/lib/aimq \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /home/aimq
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
# 8000 API, 3000 Dagster webserver, 4000 Dagster code server (gRPC)
EXPOSE 8000 3000 4000
ENTRYPOINT ["tini", "--"]
CMD ["uvicorn", "--factory", "aimq_serving.api.app:create_app", "--host", "0.0.0.0", "--port", "8000"]
