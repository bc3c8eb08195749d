# Stand-in for mariadb:10.11 where no registry can be reached: Debian 12's MariaDB 10.11
# with an entrypoint and a healthcheck that honour what docker-compose.yml uses of the
# official image (MARIADB_* variables, /docker-entrypoint-initdb.d, `healthcheck.sh
# --connect --innodb_initialized`). Built by deploy/standins/build.sh; never in production.
ARG DEBIAN_BASE=credit-platform-standin/debian:bookworm
FROM ${DEBIAN_BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        mariadb-server mariadb-client \
    && rm -rf /var/lib/apt/lists/* /var/lib/mysql/* \
    && mkdir -p /docker-entrypoint-initdb.d /run/mysqld \
    && chown mysql:mysql /run/mysqld /var/lib/mysql \
    && printf '[mariadbd]\nbind-address = 0.0.0.0\nskip-name-resolve\n' \
        > /etc/mysql/mariadb.conf.d/99-standin.cnf
COPY mariadb/docker-entrypoint.sh mariadb/healthcheck.sh /usr/local/bin/
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh /usr/local/bin/healthcheck.sh
VOLUME /var/lib/mysql
EXPOSE 3306
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["mariadbd"]
