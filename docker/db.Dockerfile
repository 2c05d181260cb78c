# PostgreSQL 15 from Debian, for machines that cannot pull `postgres` from Docker Hub (the local
# end-to-end run builds it on a debootstrapped base). It reads the same variables as the official
# image (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA, PGPORT), so the compose file's db
# service works unchanged with either image.
ARG BASE_IMAGE=scalesweep-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* /var/lib/postgresql/15 /etc/postgresql/15 \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 700 /var/lib/postgresql/data
COPY docker/db-entrypoint.sh /usr/local/bin/db-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
ENTRYPOINT ["db-entrypoint.sh"]
CMD ["postgres"]
