/*
 * basic.c -- the smallest program using connbudget_pool.h.
 *
 *   cc -std=c11 -O2 basic.c -I.. -I$(pg_config --includedir) -lpq -pthread -o basic
 *   ./basic "host=127.0.0.1 dbname=postgres" api
 *
 * Opens a pool for application "api" (its pod is this host's name), runs a
 * query on a pooled connection, and prints the pool's share and metrics.
 */
#define CBPOOL_IMPLEMENTATION
#include "connbudget_pool.h"

#include <stdio.h>
#include <stdlib.h>

int
main(int argc, char **argv)
{
    cbpool_config cfg = cbpool_config_default();
    cbpool_stats_t st;
    char err[256];
    char metrics[8192];
    cbpool *pool;
    PGconn *conn;

    cfg.conninfo = argc > 1 ? argv[1] : "";
    cfg.application_name = argc > 2 ? argv[2] : "api";
    pool = cbpool_open(&cfg, err, sizeof err);
    if (!pool) {
        fprintf(stderr, "cbpool_open: %s\n", err);
        return 1;
    }
    if (cbpool_wait_ready(pool, 10000) != CBPOOL_OK) {
        fprintf(stderr, "no connection within 10 s\n");
        cbpool_close(pool);
        return 1;
    }

    conn = CBPOOL_ACQUIRE(pool, 2000);
    if (!conn) {
        fprintf(stderr, "acquire: %s\n", cbpool_strerror(cbpool_last_error()));
        cbpool_close(pool);
        return 1;
    }
    PGresult *res = PQexec(conn, "SELECT current_setting('connbudget.pod', true)");
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        printf("connected as pod %s\n", PQgetvalue(res, 0, 0));
    PQclear(res);
    cbpool_release(pool, conn);

    cbpool_stats(pool, &st);
    printf("share %d, pool size %d..%d, %d open\n", st.share, st.min_size, st.max_size,
           st.total);
    cbpool_prometheus(pool, metrics, sizeof metrics);
    fputs(metrics, stdout);
    cbpool_close(pool);
    return 0;
}
