# syntax=docker/dockerfile:1
# CX Hub with the built-in plugins (Salesforce, Dynamics 365, SuperOffice, email, SMS). See docs/operations.md.
#
#   docker build -t cxhub .            (podman: podman build --format docker -t cxhub . keeps the HEALTHCHECK)
#   docker run --rm -p 8000:8000 -v ./cxhub.toml:/etc/cxhub/cxhub.toml:ro --env-file cxhub.env cxhub
#
# The config is a mounted file (/etc/cxhub/cxhub.toml, or CXHUB_CONFIG); secrets come from the environment
# (the config names them as env:NAME). The default command serves on 0.0.0.0:8000; `worker`, `db upgrade`,
# `check` and every other cxhub command run the same image with another command.

# --- builder: the hub's and the plugins' wheels, and a wheel of every dependency at the locked versions --------
FROM python:3.11-slim AS builder
RUN pip install --no-cache-dir --disable-pip-version-check "uv>=0.5"
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY hub ./hub
COPY plugins ./plugins
COPY deploy/build-wheels ./deploy/build-wheels
RUN UV=uv PYTHON=python deploy/build-wheels /wheels

# --- the image: Python and the installed wheels only (no compiler, no source tree, no build tools) -------------
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CXHUB_CONFIG=/etc/cxhub/cxhub.toml
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "cxhub[salesforce,dynamics,superoffice,email,sms]" \
    && groupadd --system --gid 10001 cxhub \
    && useradd --system --uid 10001 --gid cxhub --home-dir /var/lib/cxhub --create-home \
        --shell /usr/sbin/nologin cxhub \
    && mkdir -p /etc/cxhub
USER cxhub
WORKDIR /var/lib/cxhub
EXPOSE 8000
# ready = the database answers and its schema is current; a worker (no web server) turns this off in compose
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["cxhub"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
