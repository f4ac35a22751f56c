/*
 * demo.c -- pods of two applications sharing one server's connection
 * budget, live.
 *
 *   demo POD_BINARY WORKDIR [SECONDS_SCALE]
 *
 * Runs the scenario below with pods of "api" (capped) and "worker" (not
 * capped), each a separate process running pod.c.  Once a second it prints
 * the budget, each application's allocation and each pod's share, pool
 * size, connections in use and waiting threads; ten times a second it
 * checks that governed connections never exceed the budget.  At the end it
 * prints a summary, and writes WORKDIR/demo.csv, WORKDIR/events.csv and a
 * gnuplot script WORKDIR/demo.gp that draws each pod's share and pool size
 * over time.  Exit status 0 only if every check held.
 *
 * The server and the pods use the libpq environment (PGHOST, PGPORT...);
 * the pods connect as the role named by CB_DEMO_ROLE (default "app").
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define MAX_PODS 8

typedef enum Action
{
    START,                      /* start a pod with a load */
    LOAD,                       /* change a pod's load */
    KILL,                       /* SIGKILL: the pod dies without a goodbye */
    STOP                        /* SIGTERM: the pod closes its pool */
} Action;

typedef struct Event
{
    double      at;             /* seconds into the demo */
    Action      action;
    const char *pod;
    int         load;
    const char *label;          /* shown in the chart */
} Event;

/*
 * The scenario: budget 80 (max_connections 120 - 40 reserved).  "api" is
 * capped at 30 with 6 guaranteed; "worker" takes what is left.
 */
static const Event scenario[] = {
    {0, START, "api-1", 12, NULL},
    {0, START, "api-2", 12, NULL},
    {0, START, "worker-1", 40, NULL},
    {7, START, "worker-2", 40, "worker-2 joins"},
    {14, START, "api-3", 12, "api-3 joins"},
    {21, KILL, "worker-1", 0, "worker-1 killed (SIGKILL)"},
    {29, STOP, "api-2", 0, "api-2 leaves"},
    {36, LOAD, "worker-2", 8, "worker-2 load falls"},
    {43, LOAD, "worker-2", 40, "worker-2 load rises"},
    {50, LOAD, "api-1", 2, "api load falls"},
    {50, LOAD, "api-3", 2, NULL},
    {57, STOP, NULL, 0, NULL},  /* the end: stop everything */
};

typedef struct Pod
{
    char        name[32];
    char        app[16];
    pid_t       pid;
    int         alive;
    int         killed;
    char        loadfile[512];
    char        statusfile[512];
    char        metrics_port[16];   /* "" without CB_DEMO_METRICS_PORT */
    /* last status line */
    int         share,
                max_size,
                total,
                in_use,
                waiters;
    unsigned long long acquired,
                p99_us,
                refused,
                timeouts;
    long        errors;
} Pod;

static Pod  pods[MAX_PODS];
static int  npods;
static const char *workdir;
static const char *pod_binary;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static Pod *
find_pod(const char *name)
{
    for (int i = 0; i < npods; i++)
        if (strcmp(pods[i].name, name) == 0)
            return &pods[i];
    return NULL;
}

static void
write_load(Pod *pod, int load)
{
    char        tmp[600];
    FILE       *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp", pod->loadfile);
    f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "%d\n", load);
    fclose(f);
    rename(tmp, pod->loadfile);
}

static void
start_pod(const char *name, int load)
{
    Pod        *pod = &pods[npods++];
    char        conninfo[128];
    const char *role = getenv("CB_DEMO_ROLE");

    memset(pod, 0, sizeof(*pod));
    snprintf(pod->name, sizeof(pod->name), "%s", name);
    snprintf(pod->app, sizeof(pod->app), "%.*s", (int) strcspn(name, "-"), name);
    snprintf(pod->loadfile, sizeof(pod->loadfile), "%s/%s.load", workdir, name);
    snprintf(pod->statusfile, sizeof(pod->statusfile), "%s/%s.status", workdir, name);
    snprintf(conninfo, sizeof(conninfo), "user=%s", role ? role : "app");
    pod->share = -1;
    write_load(pod, load);
    if (getenv("CB_DEMO_METRICS_PORT"))
    {
        /* each pod serves its pool's metrics on a port of its own */
        snprintf(pod->metrics_port, sizeof(pod->metrics_port), "%d",
                 atoi(getenv("CB_DEMO_METRICS_PORT")) + npods - 1);
        printf("  %s serves its pool's metrics at http://127.0.0.1:%s/metrics\n",
               pod->name, pod->metrics_port);
    }
    fflush(stdout);
    pod->pid = fork();
    if (pod->pid == 0)
    {
        if (pod->metrics_port[0])
            execl(pod_binary, pod_binary, "--metrics-port", pod->metrics_port, pod->app,
                  pod->name, "40", pod->loadfile, pod->statusfile, conninfo, (char *) NULL);
        else
            execl(pod_binary, pod_binary, pod->app, pod->name, "40", pod->loadfile,
                  pod->statusfile, conninfo, (char *) NULL);
        perror("exec pod");
        _exit(127);
    }
    pod->alive = 1;
}

static void
read_status(Pod *pod)
{
    FILE       *f = fopen(pod->statusfile, "r");

    if (!f)
        return;
    if (fscanf(f, "%d %d %d %d %d %llu %llu %llu %llu %ld", &pod->share, &pod->max_size,
               &pod->total, &pod->in_use, &pod->waiters, &pod->acquired, &pod->p99_us,
               &pod->refused, &pod->timeouts, &pod->errors) != 10)
        pod->share = -1;
    fclose(f);
}

static long
query_long(PGconn *conn, const char *sql)
{
    PGresult   *res = PQexec(conn, sql);
    long        v = -1;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        v = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

/* The live table: the budget, the applications, the pods. */
static void
print_table(PGconn *admin, double t, long violations)
{
    PGresult   *res;

    res = PQexec(admin, "SELECT budget, max_connections, superuser_reserved + reserved_connections "
                 "+ extension_reserved, governed, other, free FROM connbudget.budget");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        printf("\n t=%4.1fs  budget %s (max_connections %s - %s reserved)  governed %s  other %s  free %s  violations %ld\n",
               t, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
               PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4), PQgetvalue(res, 0, 5), violations);
    PQclear(res);

    res = PQexec(admin, "SELECT application_name, coalesce(max_connections::text, '-'), "
                 "min_connections, allocation, connections, pods, refused "
                 "FROM connbudget.applications");
    printf("   %-9s %4s %4s %6s %6s %5s %8s\n", "app", "cap", "min", "alloc", "conns", "pods", "refused");
    for (int i = 0; PQresultStatus(res) == PGRES_TUPLES_OK && i < PQntuples(res); i++)
        printf("   %-9s %4s %4s %6s %6s %5s %8s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
               PQgetvalue(res, i, 2), PQgetvalue(res, i, 3), PQgetvalue(res, i, 4),
               PQgetvalue(res, i, 5), PQgetvalue(res, i, 6));
    PQclear(res);

    printf("   %-9s %6s %5s %7s %8s %9s %8s\n", "pod", "share", "pool", "in use", "waiters",
           "served", "p99 ms");
    for (int i = 0; i < npods; i++)
    {
        Pod        *pod = &pods[i];

        if (!pod->alive)
            continue;
        printf("   %-9s %6d %5d %7d %8d %9llu %8.1f\n", pod->name, pod->share, pod->total,
               pod->in_use, pod->waiters, pod->acquired, pod->p99_us / 1000.0);
    }
    fflush(stdout);
}

int
main(int argc, char **argv)
{
    PGconn     *admin;
    double      t0,
                scale,
                end_at;
    size_t      next_event = 0;
    long        samples = 0,
                violations = 0,
                max_governed = 0,
                budget = -1;
    FILE       *csv,
               *events;
    char        path[600];
    int         ok = 1;
    double      next_print = 1,
                next_sample = 0;

    if (argc < 3)
    {
        fprintf(stderr, "usage: demo POD_BINARY WORKDIR [SECONDS_SCALE]\n");
        return 2;
    }
    pod_binary = argv[1];
    workdir = argv[2];
    scale = argc > 3 ? atof(argv[3]) : 1.0;
    admin = PQconnectdb("application_name=demo");
    if (PQstatus(admin) != CONNECTION_OK)
    {
        fprintf(stderr, "demo: %s", PQerrorMessage(admin));
        return 1;
    }
    snprintf(path, sizeof(path), "%s/demo.csv", workdir);
    csv = fopen(path, "w");
    snprintf(path, sizeof(path), "%s/events.csv", workdir);
    events = fopen(path, "w");
    if (!csv || !events)
    {
        fprintf(stderr, "demo: cannot write to %s\n", workdir);
        return 1;
    }
    fprintf(csv, "t pod share pool in_use waiters\n");

    end_at = scenario[sizeof(scenario) / sizeof(scenario[0]) - 1].at * scale;
    t0 = now_s();
    for (;;)
    {
        double      t = now_s() - t0;

        /* the scenario */
        while (next_event < sizeof(scenario) / sizeof(scenario[0]) &&
               scenario[next_event].at * scale <= t)
        {
            const Event *e = &scenario[next_event++];
            Pod        *pod = e->pod ? find_pod(e->pod) : NULL;

            if (e->label)
                fprintf(events, "%.2f \"%s\"\n", t, e->label);
            switch (e->action)
            {
                case START:
                    start_pod(e->pod, e->load);
                    printf("\n>> %4.1fs  %s starts (%d busy workers)\n", t, e->pod, e->load);
                    break;
                case LOAD:
                    if (pod)
                        write_load(pod, e->load);
                    printf("\n>> %4.1fs  %s: %d busy workers\n", t, e->pod, e->load);
                    break;
                case KILL:
                    if (pod && pod->alive)
                    {
                        kill(pod->pid, SIGKILL);
                        pod->alive = 0;
                        pod->killed = 1;
                    }
                    printf("\n>> %4.1fs  %s killed with SIGKILL\n", t, e->pod);
                    break;
                case STOP:
                    if (pod && pod->alive)
                    {
                        kill(pod->pid, SIGTERM);
                        waitpid(pod->pid, NULL, 0);
                        read_status(pod);
                        pod->alive = 0;
                        printf("\n>> %4.1fs  %s stops\n", t, e->pod);
                    }
                    break;
            }
        }
        if (t >= end_at)
            break;

        /* ten times a second: the budget must hold */
        if (t >= next_sample)
        {
            PGresult   *res = PQexec(admin, "SELECT governed, budget FROM connbudget.budget");

            if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
            {
                long        governed = atol(PQgetvalue(res, 0, 0));

                budget = atol(PQgetvalue(res, 0, 1));
                samples++;
                if (governed > budget)
                {
                    violations++;
                    printf("!! %4.1fs  governed connections %ld exceed the budget %ld\n",
                           t, governed, budget);
                }
                if (governed > max_governed)
                    max_governed = governed;
            }
            PQclear(res);
            for (int i = 0; i < npods; i++)
                if (pods[i].alive)
                {
                    read_status(&pods[i]);
                    fprintf(csv, "%.2f %s %d %d %d %d\n", t, pods[i].name, pods[i].share,
                            pods[i].total, pods[i].in_use, pods[i].waiters);
                }
            next_sample += 0.1;
        }
        if (t >= next_print)
        {
            print_table(admin, t, violations);
            next_print += 1;
        }
        {
            struct timespec pause = {0, 20000000};

            nanosleep(&pause, NULL);
        }
    }

    /* the end: stop the pods still running, collect their last numbers */
    for (int i = 0; i < npods; i++)
        if (pods[i].alive)
        {
            kill(pods[i].pid, SIGTERM);
            waitpid(pods[i].pid, NULL, 0);
            read_status(&pods[i]);
            pods[i].alive = 0;
        }
        else if (pods[i].killed)
            waitpid(pods[i].pid, NULL, 0);
    fclose(csv);
    fclose(events);

    {
        unsigned long long served = 0,
                    refused = 0,
                    timeouts = 0,
                    p99 = 0;
        long        errors = 0,
                    server_refused = query_long(admin,
                                                "SELECT coalesce(sum(refused), 0) FROM connbudget.applications");

        printf("\n== summary\n");
        printf("   %-9s %9s %8s %9s %9s %7s\n", "pod", "served", "p99 ms", "refused", "timeouts", "errors");
        for (int i = 0; i < npods; i++)
        {
            Pod        *pod = &pods[i];

            printf("   %-9s %9llu %8.1f %9llu %9llu %7ld%s\n", pod->name, pod->acquired,
                   pod->p99_us / 1000.0, pod->refused, pod->timeouts, pod->errors,
                   pod->killed ? "  (killed: numbers up to its death)" : "");
            served += pod->acquired;
            refused += pod->refused;
            timeouts += pod->timeouts;
            if (pod->p99_us > p99)
                p99 = pod->p99_us;
            if (!pod->killed)
                errors += pod->errors;
            if (pod->acquired == 0)
                ok = 0;
        }
        printf("   queries served: %llu\n", served);
        printf("   acquire-wait p99 (worst pod): %.1f ms\n", p99 / 1000.0);
        printf("   connects refused (backpressure): %llu seen by the pools, %ld counted by the server\n",
               refused, server_refused);
        printf("   acquire timeouts: %llu; query errors (pods not killed): %ld\n", timeouts, errors);
        printf("   budget checks: %ld samples, most governed connections %ld of a budget of %ld\n",
               samples, max_governed, budget);
        printf("   budget violations: %ld\n", violations);
        if (violations > 0 || errors > 0 || samples == 0)
            ok = 0;
        printf("   %s\n", ok ? "every check held" : "A CHECK FAILED");
    }
    PQfinish(admin);
    return ok ? 0 : 1;
}
