# tidings as a container: `docker build -t tidings .` then see the README, "Deployment".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package is built from (see .dockerignore); tzdata comes in as a
# dependency, since a slim image has no system time zone database.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tidings ./tidings
COPY engine ./engine
COPY actors ./actors
COPY transports ./transports
COPY bench ./bench
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin tidings \
    && mkdir -p /data && chown tidings:tidings /data
USER tidings
WORKDIR /data

# The embedded store lives on the volume; set TIDINGS_SERVER__STORE to use Redis instead.
ENV TIDINGS_SERVER__STORE=sqlite:////data/tidings.db
VOLUME ["/data"]
EXPOSE 8080

# slim has no curl: the probe is Python's own urllib (a 503 from /readyz raises, exit 1)
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TIDINGS_SERVER__PORT', '8080') + '/readyz', timeout=4)"]

# Listening on every address, the engine refuses to start without
# TIDINGS_SMS__AUTH_TOKEN (unsigned webhooks would let anyone forge a STOP); set it when
# running the image, or TIDINGS_SMS__ALLOW_UNSIGNED=true where nothing outside can reach it.
CMD ["tidings", "serve", "--host", "0.0.0.0"]
