/*
 * pod.c -- one application instance ("pod") that uses connbudget_pool.h.
 *
 *   cc -std=c11 -O2 pod.c -I.. -I$(pg_config --includedir) -lpq -pthread -o pod
 *   ./pod [--metrics-port PORT] APP POD WORKERS LOADFILE STATUSFILE [CONNINFO]
 *
 * A template for a real service: a pool for application APP whose pod is
 * POD, and WORKERS threads that each take a connection, do 20 ms of work
 * on it (SELECT pg_sleep(0.02)), give it back, and pause a little.  How
 * many of the threads are busy is read from LOADFILE (a number, re-read
 * ten times a second), so that load can rise and fall.  Four times a
 * second the pod writes its pool's numbers to STATUSFILE (one line, see
 * write_status), which the demo prints.  SIGTERM shuts it down cleanly.
 *
 * With --metrics-port, the pod serves its pool's metrics in the Prometheus
 * text format (cbpool_prometheus()) at http://127.0.0.1:PORT/metrics, for
 * a Prometheus server to scrape.
 *
 * The pool sizes itself from the server: nothing here sets a pool size.
 */
#define CBPOOL_IMPLEMENTATION
#include "connbudget_pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static cbpool *pool;
static int stopping;            /* set by SIGTERM */
static int load;                /* busy workers wanted */
static long query_errors;       /* queries that failed */

static void on_sigterm(int sig)
{
    (void)sig;
    __atomic_store_n(&stopping, 1, __ATOMIC_RELAXED);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One worker thread: the shape of a request handler. */
static void *worker(void *arg)
{
    int index = (int)(intptr_t)arg;
    unsigned seed = (unsigned)index * 2654435761u;

    while (!__atomic_load_n(&stopping, __ATOMIC_RELAXED)) {
        PGconn *conn;
        PGresult *res;

        if (index >= __atomic_load_n(&load, __ATOMIC_RELAXED)) {
            sleep_ms(50);               /* this worker has nothing to do */
            continue;
        }
        conn = CBPOOL_ACQUIRE(pool, 5000);
        if (!conn)
            continue;                   /* timeout or closing: try again */
        res = PQexec(conn, "SELECT pg_sleep(0.02)");
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            __atomic_fetch_add(&query_errors, 1, __ATOMIC_RELAXED);
        PQclear(res);
        cbpool_release(pool, conn);
        sleep_ms((int)(rand_r(&seed) % 10));   /* think time */
    }
    return NULL;
}

static int read_load(const char *path)
{
    FILE *f = fopen(path, "r");
    int n = -1;
    if (f) {
        if (fscanf(f, "%d", &n) != 1)
            n = -1;
        fclose(f);
    }
    return n;
}

/* share max_size total in_use waiters acquired p99_us refused timeouts errors */
static void write_status(const char *path)
{
    cbpool_stats_t s;
    char tmp[1024];
    FILE *f;

    cbpool_stats(pool, &s);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "%d %d %d %d %d %llu %llu %llu %llu %ld\n", s.share, s.max_size, s.total,
            s.in_use, s.waiters, (unsigned long long)s.acquired,
            (unsigned long long)s.acquire_wait_us_p99,
            (unsigned long long)s.connects_refused,
            (unsigned long long)s.acquire_timeouts,
            __atomic_load_n(&query_errors, __ATOMIC_RELAXED));
    fclose(f);
    rename(tmp, path);                  /* readers never see half a line */
}

/*
 * The metrics endpoint: one HTTP/1.0 request per connection, GET /metrics
 * answered with the pool's Prometheus text, anything else with 404.  Bound
 * to loopback only; a real service would put this behind its own server.
 */
static void serve_one(int client)
{
    char request[1024];
    ssize_t n = recv(client, request, sizeof request - 1, 0);
    char *body = NULL;
    int len = 0;
    char header[256];
    int ok;

    if (n <= 0)
        return;
    request[n] = '\0';
    ok = strncmp(request, "GET /metrics ", 13) == 0 || strncmp(request, "GET /metrics?", 13) == 0;
    if (ok) {
        len = cbpool_prometheus(pool, NULL, 0);   /* the length it needs */
        body = (char *)malloc((size_t)len + 1);
        if (!body || cbpool_prometheus(pool, body, (size_t)len + 1) < 0)
            ok = 0;
    }
    snprintf(header, sizeof header,
             "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
             ok ? "200 OK" : "404 Not Found",
             ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain", ok ? len : 10);
    if (send(client, header, strlen(header), MSG_NOSIGNAL) > 0) {
        if (ok)
            (void)!send(client, body, (size_t)len, MSG_NOSIGNAL);
        else
            (void)!send(client, "not found\n", 10, MSG_NOSIGNAL);
    }
    free(body);
}

static void *metrics_server(void *arg)
{
    int listener = (int)(intptr_t)arg;
    while (!__atomic_load_n(&stopping, __ATOMIC_RELAXED)) {
        struct pollfd pfd = {listener, POLLIN, 0};
        int client;
        if (poll(&pfd, 1, 200) <= 0)
            continue;
        client = accept(listener, NULL, NULL);
        if (client < 0)
            continue;
        serve_one(client);
        close(client);
    }
    close(listener);
    return NULL;
}

static int listen_loopback(int port)
{
    struct sockaddr_in addr;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    cbpool_config cfg = cbpool_config_default();
    pthread_t *threads;
    pthread_t metrics_thread;
    char err[256];
    int workers, i, tick = 0;
    int metrics_port = 0, listener = -1;

    if (argc > 2 && strcmp(argv[1], "--metrics-port") == 0) {
        metrics_port = atoi(argv[2]);
        if (metrics_port <= 0 || metrics_port > 65535) {
            fprintf(stderr, "pod: --metrics-port wants a TCP port, not \"%s\"\n", argv[2]);
            return 2;
        }
        argv += 2;
        argc -= 2;
    }
    if (argc < 6) {
        fprintf(stderr, "usage: pod [--metrics-port PORT] APP POD WORKERS LOADFILE STATUSFILE [CONNINFO]\n");
        return 2;
    }
    workers = atoi(argv[3]);
    cfg.application_name = argv[1];
    cfg.pod = argv[2];
    cfg.conninfo = argc > 6 ? argv[6] : "";
    cfg.acquire_timeout_ms = 5000;
    pool = cbpool_open(&cfg, err, sizeof err);
    if (!pool) {
        fprintf(stderr, "pod %s: %s\n", argv[2], err);
        return 1;
    }
    signal(SIGTERM, on_sigterm);
    if (metrics_port) {
        listener = listen_loopback(metrics_port);
        if (listener < 0) {
            fprintf(stderr, "pod %s: cannot listen on 127.0.0.1:%d\n", argv[2], metrics_port);
            cbpool_close(pool);
            return 1;
        }
        pthread_create(&metrics_thread, NULL, metrics_server, (void *)(intptr_t)listener);
    }

    threads = (pthread_t *)calloc((size_t)workers, sizeof(pthread_t));
    for (i = 0; i < workers; i++)
        pthread_create(&threads[i], NULL, worker, (void *)(intptr_t)i);

    while (!__atomic_load_n(&stopping, __ATOMIC_RELAXED)) {
        int n = read_load(argv[4]);
        if (n >= 0)
            __atomic_store_n(&load, n, __ATOMIC_RELAXED);
        if (tick++ % 2 == 0)
            write_status(argv[5]);
        sleep_ms(100);
    }

    for (i = 0; i < workers; i++)
        pthread_join(threads[i], NULL);
    if (listener >= 0)
        pthread_join(metrics_thread, NULL);
    write_status(argv[5]);
    cbpool_close(pool);
    free(threads);
    return 0;
}
