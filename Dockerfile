# syntax=docker/dockerfile:1
#
# soulworker's image: `soulworker run` by default. Render's pre-deploy command
# (`soulworker migrate`) and `soulworker doctor` run in the same image.
#
# Two stages: the builder turns the source into a wheel and installs it with its dependencies
# into a virtual environment; the final image gets only that environment. The dependencies are
# the locked ones (requirements/runtime.txt, made by requirements/compile): the versions the
# tests ran, each file checked against its sha256, so a rebuild months later installs the same
# bytes or fails; the wheel itself then goes in with --no-deps, so nothing else is resolved.
# Build tools (pip's build isolation, hatchling, caches) never reach the final image, and no compiler is
# installed anywhere: every dependency ships binary wheels (psycopg-binary, ijson with its
# yajl2_c C backend), and --only-binary makes the build fail rather than silently compile or,
# worse, fall back to ijson's 10× slower pure-Python parser.
#
# The base image is pinned by its full version tag. To pin it immutably, add the digest
# (the index digest covers every platform); take it from the registry and bump both together
# (Renovate and Dependabot can do this):
#   docker buildx imagetools inspect python:3.11.17-slim-bookworm   # prints "Digest: sha256:…"
#   ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm@sha256:<that digest>
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from (see .dockerignore). pyproject.toml maps sql/ into the
# package (soulworker/sql), so `soulworker migrate` finds its files in an installed copy.
COPY requirements/runtime.txt ./requirements/
COPY pyproject.toml README.md ./
COPY soulworker ./soulworker
COPY sql ./sql

RUN python -m pip wheel --no-deps --wheel-dir /wheels .
# The venv lives at the same path in both stages: its scripts name their interpreter by path.
# It has no pip of its own; the builder's pip installs into it.
RUN python -m venv --without-pip /opt/soulworker
RUN python -m pip --python /opt/soulworker/bin/python install --only-binary=:all: \
        --require-hashes -r requirements/runtime.txt
RUN python -m pip --python /opt/soulworker/bin/python install --no-deps /wheels/soulworker-*.whl
# Smoke tests: the build fails here, not in production, if the C parser or the CLI is missing.
RUN /opt/soulworker/bin/python -c "import ijson, sys; sys.exit(ijson.backend_name != 'yajl2_c')"
RUN /opt/soulworker/bin/soulworker --version


FROM ${PYTHON_IMAGE}

# A fixed, unprivileged uid/gid: files it writes (temp exports) are private to it, and
# platforms that check "runAsNonRoot" can verify it numerically.
RUN groupadd --system --gid 10001 soulworker \
 && useradd --system --uid 10001 --gid soulworker --create-home --home-dir /home/soulworker \
        --shell /usr/sbin/nologin soulworker

COPY --from=builder /opt/soulworker /opt/soulworker

# PYTHONUNBUFFERED: log lines reach Render's log stream at once, not when a buffer fills.
# SOULWORKER_LOG_FORMAT=json: one JSON object per line, whatever a terminal check would say.
ENV PATH=/opt/soulworker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SOULWORKER_LOG_FORMAT=json

USER 10001:10001
WORKDIR /home/soulworker

# Exec form, so the daemon itself is PID 1 and receives Render's SIGTERM directly (a shell in
# between would not forward it). No init (tini / --init) is needed: the daemon installs its
# own SIGTERM/SIGINT handlers (PID 1 ignores only signals without a handler; a SIGTERM in the
# first instant of start-up, before they exist, is ignored and SIGKILL follows, which loses
# nothing as no job is held yet) and starts no child processes, so there are no zombies to
# reap. CMD rather than ENTRYPOINT: when a platform runs another command in the image
# (Render's pre-deploy `soulworker migrate`, a dockerCommand), it works as written whether
# the platform replaces CMD only or the entrypoint too; with ENTRYPOINT ["soulworker"],
# replacing CMD only would run `soulworker soulworker migrate`.
CMD ["soulworker", "run"]
