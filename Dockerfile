# One image for the three entry points of privpoll: the ingest (the default command), the
# sinks (`privpoll sink ...`, started by the operator) and the operator (`kopf run ...`).
# docs/deploy.md says why one image and not three.
#
# The base is pinned to an exact Python and Debian release; pin it to a digest as well
# (python:3.11.14-slim-bookworm@sha256:...) when your registry policy asks for it.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/privpoll
# Dependencies first, from the project metadata alone, so that a code change reuses this layer.
# Only the requirement list is read here: building the project from placeholder sources would
# leave a build/ folder that the real install below could take for up to date.
COPY pyproject.toml ./
RUN /opt/privpoll/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["operator"]))' > requirements.txt \
    && /opt/privpoll/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.txt
COPY README.md ./
COPY services ./services
COPY operator ./operator
RUN /opt/privpoll/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && /opt/privpoll/bin/python -m compileall -q /opt/privpoll/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="privpoll" \
      org.opencontainers.image.description="privpoll ingest, sinks and operator" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 privpoll \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin privpoll
COPY --from=build /opt/privpoll /opt/privpoll
ENV PATH=/opt/privpoll/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
# A root-owned, read-only working directory: `python -m` puts it on sys.path.
WORKDIR /opt/privpoll
EXPOSE 8000
# The ingest, as privpoll up and the chart run it (privpoll.web.gunicorn_conf).
ENV PRIVPOLL_HTTP_ADDR=0.0.0.0:8000
CMD ["gunicorn", "--config", "python:privpoll.web.gunicorn_conf"]
