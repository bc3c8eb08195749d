# Stand-in for haproxy:2.6 where no registry can be reached: Debian 12's HAProxy 2.6,
# reading its configuration where the official image does and started the same way
# (master-worker, in the foreground, as the user haproxy). Built by deploy/standins/build.sh; never in production.
ARG DEBIAN_BASE=credit-platform-standin/debian:bookworm
FROM ${DEBIAN_BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /usr/local/etc/haproxy /var/lib/haproxy
# Unprivileged, like the official image (the stack's docker-proxy sets its own user).
USER haproxy
STOPSIGNAL SIGUSR1
ENTRYPOINT ["sh", "-c", "if [ \"$1\" = haproxy ]; then shift; set -- haproxy -W -db \"$@\"; fi; exec \"$@\"", "--"]
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
