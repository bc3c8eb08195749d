# Stand-in for python:3.11-slim where no registry can be reached (the stack test on a
# machine without one): Debian 12's own python3.11 in a venv that is first on PATH, so
# `python`, `pip` and the console scripts pip installs resolve as in the official image.
# Built by deploy/standins/build.sh on the Debian base it imports; never used in production.
ARG DEBIAN_BASE=credit-platform-standin/debian:bookworm
FROM ${DEBIAN_BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:$PATH \
    LANG=C.UTF-8
CMD ["python3"]
