/* connbudget-pgbouncer - v1.0 - sizes a PgBouncer's pool from its pod's
   share of the server's connection budget.  PostgreSQL licence (connbudget's
   LICENSE).  Guide: docs/pgbouncer.md.  Build: `make`, or
   cc -std=c11 connbudget_pgbouncer.c -I$(pg_config --includedir)
      -L$(pg_config --libdir) -lpq -pthread -o connbudget-pgbouncer

   WHAT.  One controller runs beside each PgBouncer (a sidecar in its
   Kubernetes pod, or one per replica) and makes it one pod of the budget:
   it samples PgBouncer's demand (SHOW POOLS, 10 times per refresh interval,
   every 20 to 100 ms), reports it and reads the pod's share every refresh
   interval (docs/protocol.md: protocol 2, else 1), sets PgBouncer's pool to
   share - 1 (SET default_pool_size, SET max_user_connections), checks at
   every sample that PgBouncer still has it (RELOAD, SIGHUP, a restart or a
   manual SET put the file's value back: it is set again and logged), and
   on SIGTERM or SIGINT hands the share back (connbudget.demand = 'leave').
   So PgBouncers of one application split its allocation by their demands
   and never together hold more; one that stops frees its share.

   IDENTITY.  PgBouncer 1.18 cannot send connbudget.pod (no `options` in its
   startup packet), so its server connections are identified as any
   connection without one: the application by the application_name of the
   startup packet (set it in the [databases] entry) and the pod by the
   client's address, the pod belonging to its role.  The controller
   connects from the same address (PgBouncer's network namespace), as the
   same role and application, without pod or pool session: its connection is
   one of the pod's, in its anonymous pool session, and its reports are the
   pod's.  So PgBouncer may hold share - 1, and the demand reported is
   PgBouncer's + 1.  A --server naming a pod or a pool session, or without
   an application_name, is refused.  What cannot be refused is checked:
   the share says how many connections the server counts in the pod
   (connections=, connbudget 1.2), which must be at least PgBouncer's server
   connections that were up both just before and just after it was read
   (SHOW SERVERS, by backend pid and connect time) plus this one.  Fewer,
   3 refreshes in a row, means they are counted in another pod or
   application (the controller runs elsewhere, or the [databases] entry
   gives another role or application_name): warned once until it is right,
   and the metrics say so.  The sizing does not change.

   DEMAND.  Busy = sv_active + cl_waiting + sv_login over the pools of every
   database but "pgbouncer"; the demand is the busiest sample of this refresh
   interval and the 5 before, plus --headroom-pct (at least 1), within
   [--min-size, --max-size], plus 1 for the controller.  It is reported at
   every refresh, and at once when clients wait and it rose above both the
   last report and the share (at most once per refresh interval).

   SIZE.  share - 1 within [max(1, --min-size), --max-size], never 0 (1.18
   queues the clients of a pool of 0; 1.24 reads 0 as unlimited): a share of
   0 or 1 gives 1 and a warning, and the server refuses PgBouncer's connects
   beyond it (backpressure).  max_user_connections gets the same number, so
   one PgBouncer should serve one application with one server role (warned
   once if not); an entry with its own pool_size is not governed (warned).

   SHRINKING.  PgBouncer closes idle servers above its size within a third
   of a second, but under load a released server goes straight to a waiting
   client.  Still above the size a refresh interval after lowering it (one
   sample period while clients wait: then the janitor cannot help), the
   controller lowers server_lifetime (2 x sample period x target, at least
   200 ms) until the pool is down to its size, then sets it back (also on
   exit): PgBouncer closes older servers at the end of their transactions,
   at most one per server_lifetime / pool_size, never emptying the pool and
   failing no transaction.  Not RECONNECT: that closes every server within a
   transaction, and 1.18 fails waiting clients at once ("server login has
   been failing") when its pool is empty and its last login was refused --
   which a full budget does to the first re-login.  Never KILL or PAUSE.

   ANSWERS.  ok: size from it.  other (no row for the application): a
   configuration error, said once, size left alone.  left: report again.
   refused (42501, 53400): said with sqlstate and reason, last good size
   kept, asked again every 10 refresh intervals.  No connbudget (42883,
   3F000, 55000): size left alone, said once, looked for every 30 s.  A
   share is believed only as the protocol writes it (key=value words,
   base-10 integers, 0 <= min_size <= max_size <= budget <= 262143,
   refresh_ms 10..3600000); else it is an error and the last size stays.

   FAILURES.  Each kind is logged once until it recovers, and counted.  Both
   connections are made again with exponential backoff and full jitter,
   from 1 s to 30 s for PostgreSQL and to 2 s for the console.  A 53300
   refusal from connbudget (it states `connbudget: retry_ms=N`, or 1.1's
   hint) renews the pod's lease: the retries start at that pace and stay
   within twice it, else the lease would lapse and the others grow back
   into the room made for this pod.  Every query has a deadline (10 s to
   PostgreSQL, 5 s to PgBouncer); PgBouncer only ever gets simple queries,
   one statement each.  Meanwhile it serves within the last size set.

   OPTIONS (or environment; the command line wins): --server CONNINFO
   (CONNBUDGET_SERVER), --admin CONNINFO (CONNBUDGET_ADMIN), --min-size N (1),
   --max-size N (1000), --refresh-ms N (the server's), --headroom-pct N (25),
   --metrics-listen HOST:PORT, --log-level L (info), --once; CONNBUDGET_ +
   the name in capitals.  Bad arguments: exit 2.  Logs: one line per event
   on stderr.  Metrics: GET /metrics, one thread polling with deadlines.
*/

#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define CBPGB_VERSION "1.0"
#define SHARE_MAX 262143            /* PostgreSQL's MAX_BACKENDS: no share is larger */
#define REFRESH_MIN_MS 10           /* connbudget.refresh_interval's range */
#define REFRESH_MAX_MS 3600000
#define COUNT_MAX 1000000           /* the most a PgBouncer counter is believed to say */
#define BACKOFF_MAX_MS 30000
#define ADMIN_BACKOFF_MAX_MS 2000   /* a local console: cheap to try again */
#define NO_EXTENSION_RETRY_MS 30000
#define SERVER_TIMEOUT_MS 10000
#define ADMIN_TIMEOUT_MS 5000
#define PEAK_WINDOW 6               /* this refresh interval and the 5 before */
#define NAME_LEN 128

/* ---- logging: one line, one write(2), so threads never interleave ---- */

enum { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR };
static const char *const level_names[] = {"debug", "info", "warning", "error"};
static int log_threshold = LOG_INFO;

static void logmsg(int level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    if (level < log_threshold)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, level_names[level]);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    n = (int)strlen(line);
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere left to say it */
    }
}

/* ---- time and randomness ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* base_ms scaled by a factor drawn uniformly from [lo_pct, hi_pct] */
static int64_t jitter_ms(int base_ms, int lo_pct, int hi_pct)
{
    return (int64_t)base_ms * (lo_pct + (int64_t)(rng_next() % (uint64_t)(hi_pct - lo_pct + 1))) / 100;
}

/* exponential backoff with full jitter: uniform in [10, min(cap, base * 2^n)] */
static int64_t backoff_ms(int base_ms, int cap_ms, int attempt)
{
    int64_t ceiling = base_ms < 10 ? 10 : base_ms;
    for (int i = 0; i < attempt && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    return 10 + (int64_t)(rng_next() % (uint64_t)(ceiling - 9));
}

/* ---- reading what others say, strictly ---- */

/* The whole of text is a base-10 integer (digits only: no sign, no space,
   nothing after) within [lo, hi]: 0 and *out; else -1. */
static int parse_int(const char *text, long long lo, long long hi, long long *out)
{
    long long v = 0;
    int digits = 0;

    for (const char *p = text; p && *p; p++) {
        if (*p < '0' || *p > '9' || ++digits > 18)
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (digits == 0 || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Another program's text for a log line: quoted, at most 64 bytes, anything
   but printable ASCII escaped, so that it cannot forge or flood lines. */
static const char *quote(const char *in, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;

    out[n++] = '"';
    for (int i = 0; in && in[i]; i++) {
        unsigned char ch = (unsigned char)in[i];
        /* room for the longest escape, then "...", the quote and the NUL */
        if (i == 64 || n + 9 > outlen) {
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
        if (ch == '"' || ch == '\\')
            out[n++] = '\\';
        if (ch < 0x20 || ch >= 0x7f) {
            out[n++] = '\\';
            out[n++] = 'x';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        } else
            out[n++] = (char)ch;
    }
    out[n++] = '"';
    out[n] = '\0';
    return out;
}

/* A libpq message on one line: control bytes become spaces, runs of spaces one. */
static const char *one_line(const char *in, char *out, size_t outlen)
{
    size_t n = 0;
    bool space = false;

    for (; in && *in && n + 2 < outlen; in++) {
        unsigned char ch = (unsigned char)*in;
        if (ch <= ' ' || ch == 0x7f) {
            space = n > 0;
            continue;
        }
        if (space)
            out[n++] = ' ';
        space = false;
        out[n++] = (char)ch;
    }
    out[n] = '\0';
    return out;
}

/* A duration in seconds as PgBouncer shows it ("3600", "0.3") in ms, or -1. */
static int64_t seconds_to_ms(const char *text)
{
    int64_t ms = 0;
    int scale = 1000, digits = 0;
    bool point = false;

    for (const char *p = text; *p; p++) {
        if (*p == '.' && !point) {
            point = true;
            continue;
        }
        if (*p < '0' || *p > '9' || ++digits > 12)
            return -1;
        if (!point)
            ms = ms * 10 + (*p - '0') * 1000;
        else if (scale > 1)
            ms += (*p - '0') * (scale /= 10);
    }
    return digits ? ms : -1;
}

/* ---- the share (docs/protocol.md, section 4) ---- */

enum { ST_OK, ST_OTHER, ST_LEFT, ST_REFUSED };

typedef struct Share {
    int status;
    int max_size, min_size, budget, refresh_ms, allocation, pods, protocol; /* -1: not said */
    int connections;            /* the pod's governed connections, -1: not said (before 1.2) */
    char sqlstate[6];
    char reason[64];
} Share;

/* A word's value of only [a-z0-9_] (and A-Z if upper), copied: 0, else -1. */
static int copy_word(const char *v, char *out, size_t outlen, bool upper)
{
    size_t len = strlen(v);
    if (len == 0 || len >= outlen)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '0' && v[i] <= '9') || v[i] == '_' ||
              (upper && v[i] >= 'A' && v[i] <= 'Z')))
            return -1;
    memcpy(out, v, len + 1);
    return 0;
}

/* Parse connbudget.share into *s: 0, or -1 with what was wrong in why.
   Unknown words are ignored; the known ones must be right. */
static int parse_share(const char *text, Share *s, char *why, size_t whylen)
{
    static const struct { const char *key; long long lo, hi; size_t at; } ints[] = {
        {"max_size", 0, SHARE_MAX, offsetof(Share, max_size)},
        {"min_size", 0, SHARE_MAX, offsetof(Share, min_size)},
        {"budget", 0, SHARE_MAX, offsetof(Share, budget)},
        {"refresh_ms", REFRESH_MIN_MS, REFRESH_MAX_MS, offsetof(Share, refresh_ms)},
        {"allocation", 0, SHARE_MAX, offsetof(Share, allocation)},
        {"pods", 0, SHARE_MAX, offsetof(Share, pods)},
        {"protocol", 2, 1000, offsetof(Share, protocol)},
        {"connections", 0, SHARE_MAX, offsetof(Share, connections)}};
    static const char *const statuses[] = {"ok", "other", "left", "refused"};
    char status[16] = "", q[96], q2[96];
    const char *p = text;

    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        *(int *)((char *)s + ints[i].at) = -1;
    if (strlen(text) > 1024) {
        snprintf(why, whylen, "a share of %zu bytes", strlen(text));
        return -1;
    }
    while (*p) {
        size_t len = strcspn(p, " "), klen = strcspn(p, "=");
        char key[32], value[64];
        bool bad = false;
        long long v;

        if (len == 0 || klen == 0 || klen >= len) {
            snprintf(why, whylen, "a word that is not key=value in %s", quote(text, q, sizeof q));
            return -1;
        }
        if (klen >= sizeof key || len - klen - 1 >= sizeof value) {
            /* longer than any word known here: wrong for a known key, a
               later version's word (skipped) for an unknown one */
            bool known = false;
            for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
                known |= klen == strlen(ints[i].key) && strncmp(p, ints[i].key, klen) == 0;
            known |= (klen == 6 && strncmp(p, "status", 6) == 0) ||
                     (klen == 8 && strncmp(p, "sqlstate", 8) == 0) ||
                     (klen == 6 && strncmp(p, "reason", 6) == 0);
            if (known) {
                snprintf(why, whylen, "a value of %zu bytes in %s", len - klen - 1,
                         quote(text, q, sizeof q));
                return -1;
            }
            p += len;
            if (*p == ' ' && *++p == '\0') {
                snprintf(why, whylen, "a share that ends in a space");
                return -1;
            }
            continue;
        }
        memcpy(key, p, klen);
        key[klen] = '\0';
        memcpy(value, p + klen + 1, len - klen - 1);
        value[len - klen - 1] = '\0';
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
            int *field = (int *)((char *)s + ints[i].at);
            if (strcmp(key, ints[i].key) == 0)
                bad = *field != -1 || parse_int(value, ints[i].lo, ints[i].hi, &v) != 0 ||
                      (*field = (int)v) < 0;
        }
        if (strcmp(key, "status") == 0)
            bad = status[0] || copy_word(value, status, sizeof status, false) != 0;
        else if (strcmp(key, "sqlstate") == 0)
            bad = strlen(value) != 5 || copy_word(value, s->sqlstate, sizeof s->sqlstate, true) != 0;
        else if (strcmp(key, "reason") == 0)
            bad = copy_word(value, s->reason, sizeof s->reason, false) != 0;
        if (bad) {
            snprintf(why, whylen, "%s=%s is out of its range, malformed or repeated in %s", key,
                     quote(value, q, sizeof q), quote(text, q2, sizeof q2));
            return -1;
        }
        p += len;
        if (*p == ' ' && *++p == '\0') {
            snprintf(why, whylen, "a share that ends in a space");
            return -1;
        }
    }
    s->status = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(status, statuses[i]) == 0)
            s->status = i;
    if (s->status < 0) {
        snprintf(why, whylen, "status %s in %s", status[0] ? status : "missing", quote(text, q, sizeof q));
        return -1;
    }
    if ((s->status == ST_OK || s->status == ST_LEFT) &&
        (s->max_size < 0 || s->min_size < 0 || s->budget < 0 || s->refresh_ms < 0 ||
         s->min_size > s->max_size || s->max_size > s->budget)) {
        snprintf(why, whylen, "not 0 <= min_size <= max_size <= budget with a refresh_ms in %s",
                 quote(text, q, sizeof q));
        return -1;
    }
    return 0;
}

/* ---- metrics: what the control loop publishes, under one short lock ---- */

enum Kind {
    K_SERVER_UNREACHABLE, K_SERVER_REFUSED, K_REFUSED_PERMANENT, K_SHARE_QUERY, K_SHARE_INVALID,
    K_NOT_GOVERNED, K_NO_EXTENSION, K_ADMIN_UNREACHABLE, K_ADMIN_QUERY, K_ADMIN_INVALID,
    K_ADMIN_SET, K_IDENTITY_MISMATCH, NKINDS
};

static const char *const kind_names[NKINDS] = {
    "server_unreachable", "server_refused", "refused_permanent", "share_query", "share_invalid",
    "not_governed", "no_extension", "admin_unreachable", "admin_query", "admin_invalid", "admin_set",
    "identity_mismatch"};

static const char *const kind_recovered[NKINDS] = {
    "PostgreSQL is reachable again", "PostgreSQL admits the controller again",
    "the server no longer refuses this pod", "the share query works again",
    "the server's share is valid again", "the application is governed now",
    "connbudget answers now", "PgBouncer's admin console is reachable again",
    "PgBouncer's admin console answers again", "PgBouncer's answers are valid again",
    "PgBouncer accepts SET again", "the server counts PgBouncer's server connections in this pod again"};

typedef struct Metrics {
    int share, pool_size, demand, server_connections, clients_waiting, pod_connections; /* -1: unknown */
    int identity_mismatch, server_up, admin_up;
    unsigned long refreshes, size_changes, shrinks, reapplied, rises_reported, errors[NKINDS];
} Metrics;

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static Metrics metrics = {-1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, {0}};

#define METRIC_SET(field, value) \
    do { pthread_mutex_lock(&metrics_lock); metrics.field = (value); pthread_mutex_unlock(&metrics_lock); } while (0)
#define METRIC_ADD(field) \
    do { pthread_mutex_lock(&metrics_lock); metrics.field++; pthread_mutex_unlock(&metrics_lock); } while (0)

/* ---- the controller's state ---- */

typedef struct Options {
    const char *server, *admin, *metrics_listen;
    int min_size, max_size, refresh_ms /* 0: the server's */, headroom_pct;
    bool once;
} Options;

typedef struct Controller {
    Options opt;
    char server_options[512];   /* PGOPTIONS, for the server connection only */

    PGconn *server;
    int protocol;               /* 2, or 1 for connbudget 1.0 and 1.1 */
    int64_t server_retry_at, next_refresh;
    int64_t refreshed_at, rise_reported_at; /* the last refresh; the last one brought forward */
    int server_attempts, refreshes, refresh_ms;

    PGconn *admin;
    int64_t admin_retry_at, next_sample, next_databases_check, set_retry_at;
    int admin_attempts;

    int peaks[PEAK_WINDOW];     /* the busiest sample of each interval */
    int64_t peak_interval[PEAK_WINDOW];
    int reported_demand;        /* -1: none yet */

    bool have_share;            /* a status=ok share is in force */
    int share, target;          /* target -1: none */
    bool share_low_said;

    bool seen;                  /* PgBouncer as last seen: */
    int pool_size, max_user, busy, servers, waiting;
    char lifetime[24];
    int64_t lifetime_ms;
    int applied;                /* what this controller last SET, -1: nothing */
    int64_t lowered_at;         /* 0: no lowering to watch */
    bool shrinking;             /* server_lifetime lowered by this controller */
    int64_t shrink_lifetime_ms;
    char lifetime_saved[24];
    bool users_said;
    char warned_db[16][NAME_LEN];
    int nwarned_db;

    int identity_short;         /* refreshes in a row the pod's count was short */

    bool failing[NKINDS];
} Controller;

/* A failure: counted always, logged once per kind until it recovers. */
static void fail(Controller *c, int kind, int level, const char *fmt, ...)
{
    char text[1536];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    METRIC_ADD(errors[kind]);
    logmsg(c->failing[kind] ? LOG_DEBUG : level, "%s", text);
    c->failing[kind] = true;
}

static void recovered(Controller *c, int kind)
{
    if (c->failing[kind])
        logmsg(LOG_INFO, "%s", kind_recovered[kind]);
    c->failing[kind] = false;
}

static int refresh_ms_or_default(const Controller *c)
{
    return c->refresh_ms > 0 ? c->refresh_ms : 1000;
}

static int sample_period_ms(const Controller *c)
{
    int p = refresh_ms_or_default(c) / 10;
    return p > 100 ? 100 : p < 20 ? 20 : p;
}

/* The server publishes at most once per publish period (docs/protocol.md). */
static int publish_period_ms(int refresh_ms)
{
    int p = refresh_ms / 10;
    return p < 10 ? 10 : p > 1000 ? 1000 : p;
}

/* ---- signals: a flag, and a byte in a pipe that wakes the loop ---- */

static volatile sig_atomic_t stop_requested = 0;
static int wake_pipe[2] = {-1, -1};

static void on_stop_signal(int sig)
{
    int saved = errno;
    (void)sig;
    stop_requested = 1;
    if (write(wake_pipe[1], "x", 1) < 0) {
        /* the pipe is full: the loop is awake anyway */
    }
    errno = saved;
}

static void sleep_until(int64_t deadline)
{
    int64_t wait = deadline - now_ms();
    struct pollfd p = {wake_pipe[0], POLLIN, 0};
    char drain[64];

    if (wait > 0 && !stop_requested &&
        poll(&p, 1, wait > INT_MAX ? INT_MAX : (int)wait) > 0 && (p.revents & POLLIN))
        while (read(wake_pipe[0], drain, sizeof drain) > 0)
            ;
}

/* ---- libpq with deadlines ---- */

/* Wait until fd is readable (or writable) or the deadline passes: 1 ready, 0 not. */
static int wait_fd(int fd, bool for_write, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        struct pollfd p = {fd, (short)(for_write ? POLLOUT : POLLIN), 0};
        int r;
        if (left <= 0)
            return 0;
        if ((r = poll(&p, 1, (int)(left > 1000 ? 1000 : left))) > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return 0;
    }
}

/* Connect within timeout_ms (the last value is a conninfo to expand).  NULL
   on failure with libpq's message in msg, verbose so that it names the
   SQLSTATE ("FATAL:  53300: ..."). */
static PGconn *connect_within(const char *const *keys, const char *const *values, int timeout_ms,
                              char *msg, size_t msglen)
{
    int64_t deadline = now_ms() + timeout_ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    PGconn *conn = PQconnectStartParams(keys, values, 1);

    if (!conn) {
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);
    while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        if ((st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING) &&
            !wait_fd(PQsocket(conn), st == PGRES_POLLING_WRITING, deadline)) {
            snprintf(msg, msglen, "timed out after %d ms", timeout_ms);
            PQfinish(conn);
            return NULL;
        }
        st = PQconnectPoll(conn);
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(msg, msglen, "%s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetErrorVerbosity(conn, PQERRORS_DEFAULT);
    return conn;
}

/* One statement within timeout_ms: with parameters (extended protocol, for
   PostgreSQL) when nparams >= 0, else a simple query (all PgBouncer's
   console speaks).  The last result, or NULL if it could not be sent or
   timed out (the caller then drops the connection). */
static PGresult *run(PGconn *conn, const char *sql, int nparams, const char *const *params,
                     int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    PGresult *last = NULL, *res;

    if (!(nparams >= 0 ? PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0)
                       : PQsendQuery(conn, sql)))
        return NULL;
    for (;;) {
        int flushed = PQflush(conn);
        if (flushed < 0)
            break;
        if (flushed == 1) {
            if (!wait_fd(PQsocket(conn), true, deadline))
                break;
            continue;
        }
        while (!PQisBusy(conn)) {
            if (!(res = PQgetResult(conn)))
                return last;
            PQclear(last);
            last = res;
        }
        if (!wait_fd(PQsocket(conn), false, deadline) || !PQconsumeInput(conn))
            break;
    }
    PQclear(last);
    return NULL;
}

static const char *result_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

/* The primary message of an error result (or the connection's), on one line. */
static const char *result_message(PGconn *conn, const PGresult *res, char *out, size_t outlen)
{
    const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    return one_line(m ? m : PQerrorMessage(conn), out, outlen);
}

/* ---- PostgreSQL: connect, report and read ---- */

/* A refusal's stated pace: "connbudget: retry_ms=N" in its context, else
   connbudget 1.1's hint; 0 if it states none. */
static int refusal_pace_ms(const char *msg)
{
    static const char *const marks[] = {"connbudget: retry_ms=", "Pools re-read their share every "};
    for (int i = 0; i < 2; i++) {
        const char *p = strstr(msg, marks[i]);
        char digits[12];
        size_t n = 0;
        long long v;
        for (p = p ? p + strlen(marks[i]) : ""; *p >= '0' && *p <= '9' && n < sizeof digits - 1; p++)
            digits[n++] = *p;
        digits[n] = '\0';
        /* the number must end its word: "1000abc" or a 12th digit is no pace */
        if (isalnum((unsigned char)*p) || *p == '_')
            continue;
        if (parse_int(digits, REFRESH_MIN_MS, REFRESH_MAX_MS, &v) == 0)
            return (int)v;
    }
    return 0;
}

static void server_drop(Controller *c, int retry_base_ms, int retry_max_ms)
{
    if (c->server)
        PQfinish(c->server);
    c->server = NULL;
    c->server_retry_at = now_ms() + backoff_ms(retry_base_ms, retry_max_ms, c->server_attempts++);
    METRIC_SET(server_up, 0);
}

static void server_connect(Controller *c)
{
    const char *keys[4] = {"connect_timeout"}, *values[4] = {"10"};
    char msg[2048], line[600], q1[96], q2[96], q3[96];
    const char *fatal, *st = "";
    int n = 1;

    if (c->server_options[0]) {
        keys[n] = "options";
        values[n++] = c->server_options;
    }
    keys[n] = "dbname";
    values[n++] = c->opt.server;
    keys[n] = values[n] = NULL;
    if (!(c->server = connect_within(keys, values, SERVER_TIMEOUT_MS, msg, sizeof msg))) {
        one_line(msg, line, sizeof line);
        if ((fatal = strstr(msg, "FATAL:  ")) && strlen(fatal) > 13 && fatal[13] == ':')
            st = fatal + 8;
        if (strncmp(st, "53300", 5) == 0) {
            /* connbudget's refusal renews the pod's lease: ask again within
               it (2 x its pace), or the others grow back into the room made */
            int pace = refusal_pace_ms(msg);
            fail(c, K_SERVER_REFUSED, LOG_WARNING, "PostgreSQL refused the controller's connection "
                 "(53300, backpressure): retrying from %d ms on: %s", pace ? pace : 1000, line);
            server_drop(c, pace ? pace : 1000, pace ? 2 * pace : BACKOFF_MAX_MS);
        } else if (strncmp(st, "42501", 5) == 0 || strncmp(st, "53400", 5) == 0) {
            fail(c, K_REFUSED_PERMANENT, LOG_ERROR, "PostgreSQL refused the controller's connection "
                 "for good (%.5s): retrying every 10 refresh intervals: %s", st, line);
            server_drop(c, 0, BACKOFF_MAX_MS);
            c->server_retry_at = now_ms() + 10LL * refresh_ms_or_default(c);
        } else {
            fail(c, K_SERVER_UNREACHABLE, LOG_ERROR, "cannot connect to PostgreSQL: %s", line);
            server_drop(c, 1000, BACKOFF_MAX_MS);
        }
        return;
    }
    recovered(c, K_SERVER_UNREACHABLE);
    recovered(c, K_SERVER_REFUSED);
    c->server_attempts = c->refreshes = 0;
    c->next_refresh = now_ms();
    logmsg(LOG_INFO, "connected to PostgreSQL %s as role %s, application %s (the pod is this "
           "address's, as PgBouncer's server connections')",
           quote(PQparameterStatus(c->server, "server_version"), q3, sizeof q3), quote(PQuser(c->server), q1, sizeof q1),
           quote(PQparameterStatus(c->server, "application_name"), q2, sizeof q2));
    METRIC_SET(server_up, 1);
}

static int64_t current_interval(const Controller *c)
{
    return now_ms() / refresh_ms_or_default(c);
}

static void note_busy(Controller *c, int busy)
{
    int64_t k = current_interval(c);
    int slot = (int)(k % PEAK_WINDOW);
    if (c->peak_interval[slot] != k) {
        c->peak_interval[slot] = k;
        c->peaks[slot] = 0;
    }
    if (busy > c->peaks[slot])
        c->peaks[slot] = busy;
}

/* The busiest sample of this interval and the 5 before, plus headroom,
   within [min, max], plus this controller's connection. */
static int demand_now(const Controller *c)
{
    int64_t k = current_interval(c);
    int busy = 0, headroom, demand;

    for (int i = 0; i < PEAK_WINDOW; i++)
        if (c->peak_interval[i] > k - PEAK_WINDOW && c->peaks[i] > busy)
            busy = c->peaks[i];
    headroom = (busy * c->opt.headroom_pct + 99) / 100;
    demand = busy + (headroom > 1 ? headroom : 1);
    if (demand < c->opt.min_size)
        demand = c->opt.min_size;
    if (demand > c->opt.max_size)
        demand = c->opt.max_size;
    return demand + 1;
}

/* An error answer that the protocol names: 0 (handled), else -1. */
static int share_error(Controller *c, PGresult *res)
{
    const char *st = result_sqlstate(res);
    char m[400];

    result_message(c->server, res, m, sizeof m);
    if (c->protocol == 2 && (strcmp(st, "42704") == 0 || strcmp(st, "42602") == 0)) {
        logmsg(LOG_INFO, "the server has no connbudget.share (%s): speaking protocol 1 "
               "(connbudget.pool_share())", st);
        c->protocol = 1;
        c->next_refresh = now_ms();
    } else if (strcmp(st, "42883") == 0 || strcmp(st, "3F000") == 0 || strcmp(st, "55000") == 0) {
        fail(c, K_NO_EXTENSION, LOG_WARNING, "no usable connbudget on this server (%s: %s): "
             "PgBouncer's pool size is left as it is; looking again every 30 s", st, m);
        c->next_refresh = now_ms() + NO_EXTENSION_RETRY_MS;
        c->protocol = 2;
        c->have_share = false;
        METRIC_SET(share, -1);
    } else if (strcmp(st, "42501") == 0 || strcmp(st, "53400") == 0) {
        fail(c, K_REFUSED_PERMANENT, LOG_ERROR, "the server refuses this pod's report (%s: %s): "
             "keeping the last good size, asking again every 10 refresh intervals", st, m);
        c->next_refresh = now_ms() + 10LL * refresh_ms_or_default(c);
    } else {
        fail(c, K_SHARE_QUERY, LOG_ERROR, "the share query failed (%s): %s", st[0] ? st : "no sqlstate", m);
        return -1;
    }
    return 0;
}

/* Protocol 2's answer (one share) or protocol 1's (one row of exactly
   these four columns, integers) into *s: 0, else -1 and why. */
static int read_answer(const Controller *c, PGresult *res, Share *s, char *why, size_t whylen)
{
    static const char *const cols[] = {"max_size", "min_size", "budget", "refresh_ms"};
    int *fields[4] = {&s->max_size, &s->min_size, &s->budget, &s->refresh_ms};
    char q[96];

    if (PQntuples(res) != 1 || PQnfields(res) != (c->protocol == 2 ? 2 : 4)) {
        snprintf(why, whylen, "%d rows of %d columns", PQntuples(res), PQnfields(res));
        return -1;
    }
    if (c->protocol == 2) {
        if (PQgetisnull(res, 0, 1) || PQfformat(res, 1) != 0 ||
            (size_t)PQgetlength(res, 0, 1) != strlen(PQgetvalue(res, 0, 1))) {
            snprintf(why, whylen, "a share that is NULL, binary or has a NUL byte");
            return -1;
        }
        return parse_share(PQgetvalue(res, 0, 1), s, why, whylen);
    }
    memset(s, 0, sizeof *s);
    s->status = ST_OK;
    s->allocation = s->pods = s->connections = -1;
    for (int i = 0; i < 4; i++) {
        long long v;
        if (strcmp(PQfname(res, i), cols[i]) != 0 || PQfformat(res, i) != 0 || PQgetisnull(res, 0, i) ||
            parse_int(PQgetvalue(res, 0, i), i == 3 ? REFRESH_MIN_MS : 0, i == 3 ? REFRESH_MAX_MS : SHARE_MAX, &v)) {
            snprintf(why, whylen, "pool_share() column %d %s: %s", i + 1, cols[i],
                     PQgetisnull(res, 0, i) ? "NULL" : quote(PQgetvalue(res, 0, i), q, sizeof q));
            return -1;
        }
        *fields[i] = (int)v;
    }
    if (s->min_size > s->max_size || s->max_size > s->budget) {
        snprintf(why, whylen, "not 0 <= min_size <= max_size <= budget");
        return -1;
    }
    return 0;
}

/* What a valid share means for PgBouncer.  True if its status set the pace
   of the next refresh itself. */
static bool take_share(Controller *c, const Share *s, int demand)
{
    int lo = c->opt.min_size > 1 ? c->opt.min_size : 1;
    char q[96];

    if (s->refresh_ms > 0 && c->opt.refresh_ms == 0)
        c->refresh_ms = s->refresh_ms;
    if (s->status == ST_OTHER) {
        fail(c, K_NOT_GOVERNED, LOG_ERROR, "the server does not govern this connection "
             "(status=other): application %s has no row in connbudget.application_limits; "
             "PgBouncer's pool size is left as it is",
             quote(PQparameterStatus(c->server, "application_name"), q, sizeof q));
        c->have_share = false;
        METRIC_SET(share, -1);
        return false;
    }
    if (s->status == ST_REFUSED) {
        fail(c, K_REFUSED_PERMANENT, LOG_ERROR, "the server refuses this pod (status=refused "
             "sqlstate=%s reason=%s): keeping the last good size, asking again every 10 refresh "
             "intervals", s->sqlstate[0] ? s->sqlstate : "?", s->reason[0] ? s->reason : "?");
        c->next_refresh = now_ms() + 10LL * refresh_ms_or_default(c);
        return true;
    }
    if (s->status == ST_LEFT) {
        logmsg(LOG_INFO, "the server says this pod left: reporting again");
        c->next_refresh = now_ms() + publish_period_ms(refresh_ms_or_default(c));
        return true;
    }
    recovered(c, K_NOT_GOVERNED);
    recovered(c, K_REFUSED_PERMANENT);
    if (!c->have_share)
        logmsg(LOG_INFO, "joined the budget: share %d (demand %d of which 1 is this controller; "
               "application allocation %d over %d pods; budget %d; refresh every %d ms)",
               s->max_size, demand, s->allocation, s->pods, s->budget, refresh_ms_or_default(c));
    c->have_share = true;
    c->share = s->max_size;
    c->target = c->share - 1 > c->opt.max_size ? c->opt.max_size : c->share - 1;
    if (c->target < lo) {
        if (!c->share_low_said)
            logmsg(LOG_WARNING, "the pod's share is %d, below what PgBouncer needs (pool size %d "
                   "plus this controller's connection): pool size %d; the server refuses "
                   "PgBouncer's connects beyond the share (backpressure)", c->share, lo, lo);
        c->target = lo;
        c->share_low_said = true;
    } else if (c->share_low_said) {
        logmsg(LOG_INFO, "the pod's share is %d again, enough for PgBouncer", c->share);
        c->share_low_said = false;
    }
    METRIC_SET(share, c->share);
    return false;
}

static int servers_snapshot(Controller *c, uint64_t **keys);   /* PgBouncer's side, below */

static int compare_keys(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The identity check: PgBouncer's server connections that were up both
   before and after the share was read were counted by the server at that
   moment, in this pod if PgBouncer is where the controller is; the pod's
   connections= then includes them and this controller's own.  Fewer, 3
   refreshes in a row, is a wrong identity: said once, until it is right. */
static void check_identity(Controller *c, uint64_t *before, int nbefore, uint64_t *after,
                           int nafter, int counted)
{
    int held = 0;
    char q[96];

    if (nbefore > 1)
        qsort(before, (size_t)nbefore, sizeof *before, compare_keys);
    if (nafter > 1)
        qsort(after, (size_t)nafter, sizeof *after, compare_keys);
    for (int i = 0, j = 0; i < nbefore && j < nafter;) {
        if (before[i] == after[j])
            held++;
        if (before[i] <= after[j])
            i++;
        else
            j++;
    }
    if (counted >= held + 1) {
        if (c->failing[K_IDENTITY_MISMATCH])
            logmsg(LOG_INFO, "%s (%d connections, PgBouncer's %d server connections and this "
                   "controller's among them)", kind_recovered[K_IDENTITY_MISMATCH], counted, held);
        c->failing[K_IDENTITY_MISMATCH] = false;
        c->identity_short = 0;
        METRIC_SET(identity_mismatch, 0);
        return;
    }
    if (++c->identity_short < 3)
        return;
    fail(c, K_IDENTITY_MISMATCH, LOG_WARNING, "the server counts %d connections in this pod, fewer "
         "than PgBouncer's %d server connections plus this controller's (%d refreshes in a row): "
         "PgBouncer's connections are counted in another pod or application, so the share read "
         "here does not govern them; run the controller from PgBouncer's address (the same "
         "Kubernetes pod or network namespace), and give PgBouncer's [databases] entries this "
         "controller's role and application_name %s", counted, held, c->identity_short,
         quote(PQparameterStatus(c->server, "application_name"), q, sizeof q));
    METRIC_SET(identity_mismatch, 1);
}

/* Report the demand and read the share: one round trip. */
static void refresh(Controller *c)
{
    char demand_text[16], why[512];
    const char *params[1] = {demand_text};
    int demand = demand_now(c), interval, handled = -1, nbefore = -1, nafter = -1;
    bool changed = demand != c->reported_demand;
    uint64_t *before = NULL, *after = NULL;
    PGresult *res;
    Share share;

    snprintf(demand_text, sizeof demand_text, "%d", demand);
    /* PgBouncer's server connections just before the share is read, and
       just after (below), for the identity check */
    if (c->protocol == 2 && c->admin)
        nbefore = servers_snapshot(c, &before);
    res = run(c->server, c->protocol == 2
              ? "SELECT pg_catalog.set_config('connbudget.demand', $1, false), "
                "pg_catalog.current_setting('connbudget.share')"
              : "SELECT max_size, min_size, budget, refresh_ms FROM connbudget.pool_share($1::int)",
              1, params, SERVER_TIMEOUT_MS);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (PQstatus(c->server) != CONNECTION_OK || !res)
            fail(c, K_SERVER_UNREACHABLE, LOG_ERROR, "lost the connection to PostgreSQL: %s",
                 res ? result_message(c->server, res, why, sizeof why) : "no answer in time");
        else
            handled = share_error(c, res);
        PQclear(res);
        free(before);
        if (handled != 0)
            server_drop(c, 1000, BACKOFF_MAX_MS);
        return;
    }
    recovered(c, K_SHARE_QUERY);
    recovered(c, K_NO_EXTENSION);
    METRIC_ADD(refreshes);
    METRIC_SET(demand, demand);
    c->reported_demand = demand;
    c->refreshed_at = now_ms();
    c->refreshes++;
    interval = refresh_ms_or_default(c);
    if (read_answer(c, res, &share, why, sizeof why) != 0) {
        fail(c, K_SHARE_INVALID, LOG_ERROR, "the server's answer is not a share (%s): keeping "
             "the last good size", why);
        c->next_refresh = now_ms() + jitter_ms(interval, 90, 110);
    } else {
        recovered(c, K_SHARE_INVALID);
        METRIC_SET(pod_connections, share.connections);
        if (nbefore >= 0 && share.status == ST_OK && share.connections >= 0 && c->admin &&
            (nafter = servers_snapshot(c, &after)) >= 0)
            check_identity(c, before, nbefore, after, nafter, share.connections);
        else
            c->identity_short = 0;      /* no check this time: the next 3 in a row decide */
        if (!take_share(c, &share, demand)) {
            interval = refresh_ms_or_default(c);    /* the pace of docs/protocol.md, section 2 */
            c->next_refresh = now_ms() + (c->refreshes == 1 ? jitter_ms(interval, 10, 100)
                                          : changed ? publish_period_ms(interval)
                                          : c->have_share && c->share == 0 ? jitter_ms(interval, 100, 120)
                                          : jitter_ms(interval, 90, 110));
        }
    }
    PQclear(res);
    free(before);
    free(after);
}

/* Hand the pod's share back before exiting (docs/protocol.md, section 7). */
static void leave(Controller *c)
{
    PGresult *res;

    if (!c->server || c->reported_demand < 0 || c->failing[K_NO_EXTENSION])
        return;
    res = run(c->server, c->protocol == 2 ? "SET connbudget.demand = 'leave'" : "SELECT connbudget.pool_share(0)",
              -1, NULL, SERVER_TIMEOUT_MS);
    if (res && (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK))
        logmsg(LOG_INFO, "left the budget: this pod's share goes to the others (PgBouncer's "
               "server connections count until they close)");
    else
        logmsg(LOG_WARNING, "could not leave the budget: the pod's share is freed when its lease "
               "ends (connbudget.pod_ttl)");
    PQclear(res);
}

/* ---- PgBouncer: the admin console ---- */

static void admin_drop(Controller *c)
{
    int base = refresh_ms_or_default(c) < 1000 ? refresh_ms_or_default(c) : 1000;
    if (c->admin)
        PQfinish(c->admin);
    c->admin = NULL;
    c->seen = false;
    c->admin_retry_at = now_ms() + backoff_ms(base, ADMIN_BACKOFF_MAX_MS, c->admin_attempts++);
    METRIC_SET(admin_up, 0);
}

static void admin_connect(Controller *c)
{
    const char *keys[3] = {"connect_timeout", "dbname", NULL};
    const char *values[3] = {"5", c->opt.admin, NULL};
    char msg[2048], line[600];

    if (!(c->admin = connect_within(keys, values, ADMIN_TIMEOUT_MS, msg, sizeof msg))) {
        fail(c, K_ADMIN_UNREACHABLE, LOG_ERROR, "cannot connect to PgBouncer's admin console: %s",
             one_line(msg, line, sizeof line));
        admin_drop(c);
        return;
    }
    recovered(c, K_ADMIN_UNREACHABLE);
    c->admin_attempts = 0;
    c->next_sample = c->next_databases_check = now_ms();
    logmsg(LOG_INFO, "connected to PgBouncer's admin console");
    METRIC_SET(admin_up, 1);
}

/* A statement to the console: its result if it is what was wanted (tuples
   for SHOW), else NULL, said and counted (the connection dropped if gone). */
static PGresult *admin_run(Controller *c, const char *sql, bool tuples, int kind)
{
    PGresult *res = run(c->admin, sql, -1, NULL, ADMIN_TIMEOUT_MS);
    char m[400];

    if (!res || PQstatus(c->admin) != CONNECTION_OK) {
        fail(c, K_ADMIN_QUERY, LOG_ERROR, "lost PgBouncer's admin console during %s: %s", sql,
             result_message(c->admin, res, m, sizeof m));
        PQclear(res);
        admin_drop(c);
        return NULL;
    }
    if (PQresultStatus(res) != (tuples ? PGRES_TUPLES_OK : PGRES_COMMAND_OK)) {
        fail(c, kind, LOG_ERROR, "PgBouncer refused %s: %s%s", sql, result_message(c->admin, res, m, sizeof m),
             kind == K_ADMIN_SET ? " (is the --admin user in admin_users?); retrying every refresh interval" : "");
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Column name of a console answer, or -1 (said). */
static int column(Controller *c, PGresult *res, const char *what, const char *name)
{
    int col = PQfnumber(res, name);
    if (col < 0 || PQfformat(res, col) != 0) {
        fail(c, K_ADMIN_INVALID, LOG_ERROR, "%s has no column %s: is this PgBouncer?", what, name);
        return -1;
    }
    return col;
}

/* SHOW SERVERS: one key per server connection that is past its login
   (PgBouncer has its backend's pid, which the server sends after admitting
   and counting it): the pid and a hash of connect_time, so that a closed
   connection and a new one are never taken for each other.  The count,
   with the keys in *keys (freed by the caller), or -1 (said). */
static int servers_snapshot(Controller *c, uint64_t **keys)
{
    static const char *const names[] = {"database", "remote_pid", "connect_time"};
    int col[3], n = 0;
    PGresult *res = admin_run(c, "SHOW SERVERS", true, K_ADMIN_QUERY);

    *keys = NULL;
    if (!res)
        return -1;
    for (int i = 0; i < 3; i++)
        if ((col[i] = column(c, res, "SHOW SERVERS", names[i])) < 0) {
            PQclear(res);
            return -1;
        }
    if (PQntuples(res) > 0 && !(*keys = malloc((size_t)PQntuples(res) * sizeof **keys))) {
        PQclear(res);
        return -1;
    }
    for (int row = 0; row < PQntuples(res); row++) {
        uint32_t hash = 2166136261u;
        long long pid;

        if (strcmp(PQgetvalue(res, row, col[0]), "pgbouncer") == 0 ||
            parse_int(PQgetvalue(res, row, col[1]), 1, INT_MAX, &pid) != 0)
            continue;                   /* logging in, or not a server */
        for (const char *p = PQgetvalue(res, row, col[2]); *p; p++)
            hash = (hash ^ (unsigned char)*p) * 16777619u;
        (*keys)[n++] = (uint64_t)pid << 32 | hash;
    }
    PQclear(res);
    return n;
}

/* SHOW POOLS: busy, server connections, waiting clients, validated. */
static int sample_pools(Controller *c)
{
    static const char *const names[] = {"database", "user", "cl_waiting", "sv_active", "sv_idle",
                                        "sv_used", "sv_tested", "sv_login"};
    int col[8];
    long long busy = 0, servers = 0, waiting = 0;
    char user0[NAME_LEN] = "", q1[96], q2[96];
    PGresult *res = admin_run(c, "SHOW POOLS", true, K_ADMIN_QUERY);

    if (!res)
        return -1;
    for (int i = 0; i < 8; i++)
        if ((col[i] = column(c, res, "SHOW POOLS", names[i])) < 0) {
            PQclear(res);
            return -1;
        }
    for (int row = 0; row < PQntuples(res); row++) {
        const char *user = PQgetvalue(res, row, col[1]);
        long long v[6];                 /* cl_waiting, sv_active, sv_idle, sv_used, sv_tested, sv_login */

        if (strcmp(PQgetvalue(res, row, col[0]), "pgbouncer") == 0)
            continue;                   /* the admin console itself */
        for (int i = 0; i < 6; i++)
            if (parse_int(PQgetvalue(res, row, col[2 + i]), 0, COUNT_MAX, &v[i]) != 0) {
                fail(c, K_ADMIN_INVALID, LOG_ERROR, "SHOW POOLS: %s is %s, not a count: the sample "
                     "is not taken", names[2 + i], quote(PQgetvalue(res, row, col[2 + i]), q1, sizeof q1));
                PQclear(res);
                return -1;
            }
        waiting += v[0];
        busy += v[1] + v[0] + v[5];
        servers += v[1] + v[2] + v[3] + v[4] + v[5];
        if (busy > COUNT_MAX || servers > COUNT_MAX || waiting > COUNT_MAX) {
            fail(c, K_ADMIN_INVALID, LOG_ERROR, "SHOW POOLS: more than %d connections or clients "
                 "in all: the sample is not taken", COUNT_MAX);
            PQclear(res);
            return -1;
        }
        if (!user0[0])
            snprintf(user0, sizeof user0, "%s", user);
        else if (strcmp(user0, user) != 0 && !c->users_said) {
            logmsg(LOG_WARNING, "PgBouncer has pools of more than one server user (%s and %s): "
                   "max_user_connections bounds each user, so together they may hold more than the "
                   "pod's share; serve one application with one server role (user= in [databases])",
                   quote(user0, q1, sizeof q1), quote(user, q2, sizeof q2));
            c->users_said = true;
        }
    }
    PQclear(res);
    c->busy = (int)busy;
    c->servers = (int)servers;
    c->waiting = (int)waiting;
    note_busy(c, (int)busy);
    pthread_mutex_lock(&metrics_lock);
    metrics.server_connections = (int)servers;
    metrics.clients_waiting = (int)waiting;
    pthread_mutex_unlock(&metrics_lock);
    return 0;
}

/* SHOW CONFIG: the sizes and the server_lifetime in force now. */
static int sample_config(Controller *c)
{
    PGresult *res = admin_run(c, "SHOW CONFIG", true, K_ADMIN_QUERY);
    long long pool_size = -1, max_user = -1;
    int64_t lifetime_ms = -1;
    int key, value;
    char q[96];

    if (!res)
        return -1;
    if ((key = column(c, res, "SHOW CONFIG", "key")) >= 0 && (value = column(c, res, "SHOW CONFIG", "value")) >= 0)
        for (int row = 0; row < PQntuples(res); row++) {
            const char *k = PQgetvalue(res, row, key), *v = PQgetvalue(res, row, value);
            bool bad = false;
            if (strcmp(k, "default_pool_size") == 0)
                bad = parse_int(v, 0, INT_MAX, &pool_size) != 0;
            else if (strcmp(k, "max_user_connections") == 0)
                bad = parse_int(v, 0, INT_MAX, &max_user) != 0;
            else if (strcmp(k, "server_lifetime") == 0) {
                bad = strlen(v) >= sizeof c->lifetime || (lifetime_ms = seconds_to_ms(v)) < 0;
                if (!bad)
                    snprintf(c->lifetime, sizeof c->lifetime, "%s", v);
            }
            if (bad) {
                fail(c, K_ADMIN_INVALID, LOG_ERROR, "SHOW CONFIG: %s is %s, not a number", k, quote(v, q, sizeof q));
                pool_size = -1;
                break;
            }
        }
    PQclear(res);
    if (pool_size < 0 || max_user < 0 || lifetime_ms < 0) {
        fail(c, K_ADMIN_INVALID, LOG_ERROR, "SHOW CONFIG has no valid default_pool_size, "
             "max_user_connections and server_lifetime");
        return -1;
    }
    c->pool_size = (int)pool_size;
    c->max_user = (int)max_user;
    c->lifetime_ms = lifetime_ms;
    c->seen = true;
    METRIC_SET(pool_size, c->pool_size);
    return 0;
}

/* SHOW DATABASES: an entry with a pool_size of its own is not governed. */
static void check_databases(Controller *c)
{
    PGresult *res = admin_run(c, "SHOW DATABASES", true, K_ADMIN_QUERY);
    int name, size;
    char q[96];

    if (!res)
        return;
    if ((name = column(c, res, "SHOW DATABASES", "name")) >= 0 &&
        (size = column(c, res, "SHOW DATABASES", "pool_size")) >= 0)
        for (int row = 0; row < PQntuples(res); row++) {
            const char *db = PQgetvalue(res, row, name);
            long long pool_size;
            bool said = false;
            if (strcmp(db, "pgbouncer") == 0 || parse_int(PQgetvalue(res, row, size), 0, INT_MAX, &pool_size) != 0 ||
                pool_size == c->pool_size)
                continue;
            for (int i = 0; i < c->nwarned_db && !said; i++)
                said = strcmp(c->warned_db[i], db) == 0;
            if (said || c->nwarned_db == 16)
                continue;
            snprintf(c->warned_db[c->nwarned_db++], NAME_LEN, "%s", db);
            logmsg(LOG_WARNING, "database %s has pool_size=%lld in PgBouncer's [databases] entry, "
                   "which wins over default_pool_size: it is not governed (remove pool_size there)",
                   quote(db, q, sizeof q), pool_size);
        }
    PQclear(res);
}

/* SET one of PgBouncer's settings (quoted when it has a point): 0, else -1. */
static int admin_set(Controller *c, const char *key, const char *value)
{
    char sql[96];
    PGresult *res;

    snprintf(sql, sizeof sql, strchr(value, '.') ? "SET %s = '%s'" : "SET %s = %s", key, value);
    if (!(res = admin_run(c, sql, false, K_ADMIN_SET)))
        return -1;
    PQclear(res);
    return 0;
}

static int admin_set_int(Controller *c, const char *key, int value)
{
    char text[16];
    snprintf(text, sizeof text, "%d", value);
    return admin_set(c, key, text);
}

/* Bring PgBouncer to the target, or back to it after a reset. */
static void apply(Controller *c)
{
    int64_t now = now_ms();
    int old = c->pool_size;

    if (!c->admin || !c->seen || !c->have_share || c->target < 1)
        return;
    if (c->pool_size == c->target && c->max_user == c->target) {
        recovered(c, K_ADMIN_SET);
        return;
    }
    if (now < c->set_retry_at)
        return;
    if (c->applied == c->target)
        logmsg(LOG_WARNING, "PgBouncer's default_pool_size is %d and max_user_connections %d, not the "
               "%d this controller set (a RELOAD, SIGHUP, restart or manual SET reset them): setting "
               "them again", c->pool_size, c->max_user, c->target);
    if ((c->pool_size != c->target && admin_set_int(c, "default_pool_size", c->target) != 0) || !c->admin ||
        (c->max_user != c->target && admin_set_int(c, "max_user_connections", c->target) != 0)) {
        c->set_retry_at = now + refresh_ms_or_default(c);
        return;
    }
    recovered(c, K_ADMIN_SET);
    if (c->applied == c->target)
        METRIC_ADD(reapplied);
    else if (old != c->target) {
        logmsg(LOG_INFO, "pool size %d -> %d (share %d, demand %d of which 1 is this controller)",
               old, c->target, c->share, c->reported_demand);
        METRIC_ADD(size_changes);
    }
    c->applied = c->pool_size = c->max_user = c->target;
    METRIC_SET(pool_size, c->target);
    if (c->target < old || c->servers > c->target)
        c->lowered_at = now;
}

/* Put server_lifetime back as it was before shrinking. */
static void shrink_done(Controller *c, const char *why)
{
    if (admin_set(c, "server_lifetime", c->lifetime_saved) != 0)
        return;                 /* said; tried again at the next sample */
    logmsg(LOG_INFO, "%s: server_lifetime back to %s s", why, c->lifetime_saved);
    c->shrinking = false;
}

/* Server connections still above the target a refresh interval after it
   was lowered: lower server_lifetime until they are down to it (see the
   top of this file for why, and why not RECONNECT). */
static void shrink(Controller *c)
{
    int64_t lifetime = 2LL * sample_period_ms(c) * c->target;
    char text[24], why[96];

    if (!c->admin || !c->seen)
        return;
    if (c->shrinking) {
        if (c->lifetime_ms != c->shrink_lifetime_ms) {
            logmsg(LOG_INFO, "PgBouncer's server_lifetime is %s s again, not the one this "
                   "controller set to shrink the pool (a RELOAD or a restart)", c->lifetime);
            c->shrinking = false;
        } else if (c->servers <= c->target) {
            snprintf(why, sizeof why, "down to %d server connections (pool size %d)", c->servers, c->target);
            shrink_done(c, why);
            c->lowered_at = 0;
        }
        return;
    }
    if (c->lowered_at == 0 || c->servers <= c->target) {
        c->lowered_at = 0;
        return;
    }
    /* clients waiting: the janitor cannot help, so one sample (still above,
       still waiting) is enough */
    if (c->pool_size != c->target ||
        now_ms() - c->lowered_at < (c->waiting > 0 ? sample_period_ms(c) : refresh_ms_or_default(c)))
        return;
    if (lifetime < 200)
        lifetime = 200;
    if (lifetime >= c->lifetime_ms)
        return;                 /* PgBouncer's own is shorter already */
    snprintf(text, sizeof text, "%lld.%03lld", (long long)(lifetime / 1000), (long long)(lifetime % 1000));
    snprintf(c->lifetime_saved, sizeof c->lifetime_saved, "%s", c->lifetime);
    if (admin_set(c, "server_lifetime", text) != 0)
        return;
    c->shrinking = true;
    c->lifetime_ms = c->shrink_lifetime_ms = lifetime;
    logmsg(LOG_INFO, "%d server connections are still above the pool size %d %lld ms after it was "
           "lowered%s: server_lifetime %s s (was %s) until they are down to it; each closes at the end "
           "of its transaction, one at a time", c->servers, c->target, (long long)(now_ms() - c->lowered_at),
           c->waiting > 0 ? " with clients waiting" : "", text, c->lifetime_saved);
    METRIC_ADD(shrinks);
}

/* Clients wait and the demand rose above both the last report and the
   share: the next refresh is now, not up to an interval later (docs/protocol.md,
   section 2), at most once per refresh interval and no sooner than a publish
   period after the last refresh. */
static void report_rise(Controller *c)
{
    int64_t now = now_ms();
    int interval = refresh_ms_or_default(c), demand;

    if (!c->server || !c->have_share || c->waiting <= 0 || c->reported_demand < 0 || c->next_refresh <= now ||
        now - c->rise_reported_at < interval || now - c->refreshed_at < publish_period_ms(interval))
        return;
    demand = demand_now(c);
    if (demand <= c->reported_demand || demand <= c->share)
        return;
    logmsg(LOG_DEBUG, "%d clients waiting: the demand of %d (reported %d, share %d) is reported now",
           c->waiting, demand, c->reported_demand, c->share);
    c->rise_reported_at = now;
    c->next_refresh = now;
    METRIC_ADD(rises_reported);
}

/* One sample: SHOW POOLS and SHOW CONFIG (a reset is seen within a sample),
   then what follows from them. */
static void sample(Controller *c)
{
    c->next_sample = now_ms() + sample_period_ms(c);
    if (sample_pools(c) != 0 || !c->admin || sample_config(c) != 0)
        return;
    recovered(c, K_ADMIN_QUERY);
    recovered(c, K_ADMIN_INVALID);
    if (c->have_share && c->pool_size == c->target && now_ms() >= c->next_databases_check) {
        check_databases(c);
        c->next_databases_check = now_ms() + refresh_ms_or_default(c);
    }
    apply(c);
    shrink(c);
    report_rise(c);
}

/* ---- the metrics listener: one thread, one scraper at a time, deadlines ---- */

static int metrics_fd = -1;
static int metrics_stop[2] = {-1, -1};

static int format_metrics(char *out, size_t outlen)
{
    static const char *const gauges[][2] = {
        {"share", "The pod's share of the budget (PgBouncer's pool plus this controller)."},
        {"pool_size", "PgBouncer's default_pool_size as last seen."},
        {"demand", "The demand last reported, this controller's connection included."},
        {"server_connections", "PgBouncer's server connections (SHOW POOLS)."},
        {"clients_waiting", "PgBouncer's clients waiting for a server connection."},
        {"pod_connections", "The governed connections the server counts in this pod (connections= of the share)."},
        {"identity_mismatch", "1 while the server counts fewer connections in this pod than PgBouncer's "
         "server connections plus this controller's: they are not governed by the share read here."}};
    static const char *const counters[][2] = {
        {"refreshes_total", "Reports of the demand answered with a share."},
        {"size_changes_total", "Changes of PgBouncer's pool size."},
        {"shrinks_total", "Times server_lifetime was lowered to shrink PgBouncer under load."},
        {"reapplied_total", "Sizes set again after PgBouncer reset them."},
        {"rises_reported_total", "Refreshes brought forward: clients waited and the demand rose above the last "
         "report and the share."}};
    Metrics m;
    size_t n = 0;
    int w;

    pthread_mutex_lock(&metrics_lock);
    m = metrics;
    pthread_mutex_unlock(&metrics_lock);
    int gauge_values[] = {m.share, m.pool_size, m.demand, m.server_connections, m.clients_waiting,
                          m.pod_connections, m.identity_mismatch};
    unsigned long counter_values[] = {m.refreshes, m.size_changes, m.shrinks, m.reapplied, m.rises_reported};

#define EMIT(...) \
    if ((w = snprintf(out + n, outlen - n, __VA_ARGS__)) > 0 && (size_t)w < outlen - n) \
        n += (size_t)w
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++) {
        EMIT("# HELP connbudget_pgbouncer_%s %s\n# TYPE connbudget_pgbouncer_%s gauge\n", gauges[i][0],
             gauges[i][1], gauges[i][0]);
        if (gauge_values[i] < 0) {
            EMIT("connbudget_pgbouncer_%s NaN\n", gauges[i][0]);
        } else {
            EMIT("connbudget_pgbouncer_%s %d\n", gauges[i][0], gauge_values[i]);
        }
    }
    EMIT("# HELP connbudget_pgbouncer_up Whether the connection to PostgreSQL (server) and to "
         "PgBouncer's admin console (admin) is up.\n# TYPE connbudget_pgbouncer_up gauge\n"
         "connbudget_pgbouncer_up{connection=\"server\"} %d\n"
         "connbudget_pgbouncer_up{connection=\"admin\"} %d\n", m.server_up, m.admin_up);
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
        EMIT("# HELP connbudget_pgbouncer_%s %s\n# TYPE connbudget_pgbouncer_%s counter\n"
             "connbudget_pgbouncer_%s %lu\n", counters[i][0], counters[i][1], counters[i][0],
             counters[i][0], counter_values[i]);
    }
    EMIT("# HELP connbudget_pgbouncer_errors_total Failures by kind.\n"
         "# TYPE connbudget_pgbouncer_errors_total counter\n");
    for (int k = 0; k < NKINDS; k++) {
        EMIT("connbudget_pgbouncer_errors_total{kind=\"%s\"} %lu\n", kind_names[k], m.errors[k]);
    }
#undef EMIT
    return (int)n;
}

/* Read a request and answer it, within 2 seconds in all. */
static void serve_scrape(int fd)
{
    int64_t deadline = now_ms() + 2000;
    char req[4096], body[8192], head[256];
    size_t got = 0;
    int body_len, head_len;
    bool found;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (got < sizeof req - 1) {
        ssize_t r = recv(fd, req + got, sizeof req - 1 - got, 0);
        if (r > 0) {
            req[got += (size_t)r] = '\0';
            if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
                break;
        } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
                   !wait_fd(fd, false, deadline))
            break;
    }
    req[got] = '\0';
    found = strncmp(req, "GET /metrics ", 13) == 0 || strncmp(req, "GET /metrics?", 13) == 0;
    body_len = found ? format_metrics(body, sizeof body)
                     : snprintf(body, sizeof body, "not found: only GET /metrics is served\n");
    head_len = snprintf(head, sizeof head, "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4; "
                        "charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
                        found ? "200 OK" : "404 Not Found", body_len);
    for (int part = 0; part < 2; part++) {
        const char *buf = part == 0 ? head : body;
        size_t len = (size_t)(part == 0 ? head_len : body_len), sent = 0;
        while (sent < len) {
            ssize_t w = send(fd, buf + sent, len - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if ((w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
                     !wait_fd(fd, true, deadline))
                return;
        }
    }
}

static void *metrics_thread(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p[2] = {{metrics_fd, POLLIN, 0}, {metrics_stop[0], POLLIN, 0}};
        if ((poll(p, 2, -1) < 0 && errno != EINTR) || p[1].revents)
            break;
        if (p[0].revents & POLLIN) {
            int fd = accept(metrics_fd, NULL, NULL);
            if (fd >= 0) {
                serve_scrape(fd);
                close(fd);
            }
        }
    }
    return NULL;
}

/* Listen on "host:port" ("[v6]:port"; ":port" for every address). */
static int metrics_listen(const char *spec, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    struct addrinfo hints, *ai = NULL;
    size_t hlen = colon ? (size_t)(colon - spec) : 0;
    int rc, one = 1;

    if (!colon || colon[1] == '\0' || hlen >= sizeof host) {
        snprintf(err, errlen, "--metrics-listen %s is not HOST:PORT", spec);
        return -1;
    }
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai)) != 0) {
        snprintf(err, errlen, "--metrics-listen %s: %s", spec, gai_strerror(rc));
        return -1;
    }
    metrics_fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (metrics_fd < 0 || setsockopt(metrics_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(metrics_fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(metrics_fd, 16) != 0) {
        snprintf(err, errlen, "--metrics-listen %s: %s", spec, strerror(errno));
        if (metrics_fd >= 0)
            close(metrics_fd);
        metrics_fd = -1;
    } else
        fcntl(metrics_fd, F_SETFL, fcntl(metrics_fd, F_GETFL) | O_NONBLOCK);
    freeaddrinfo(ai);
    return metrics_fd >= 0 ? 0 : -1;
}

/* ---- the command line ---- */

static const char usage_text[] =
    "Usage: connbudget-pgbouncer --server CONNINFO --admin CONNINFO [options]\n"
    "Sizes a PgBouncer's pool from its pod's share of the connbudget budget.\n\n"
    "  --server CONNINFO     PostgreSQL, reached as PgBouncer's [databases] entry reaches\n"
    "                        it: same host, role and application_name, no connbudget.pod\n"
    "  --admin CONNINFO      PgBouncer's admin console (dbname=pgbouncer, a user in admin_users)\n"
    "  --min-size N          smallest pool size (default 1)\n"
    "  --max-size N          largest pool size (default 1000)\n"
    "  --refresh-ms N        refresh interval (default: the server's)\n"
    "  --headroom-pct N      headroom on the demand (default 25)\n"
    "  --metrics-listen A:P  serve Prometheus metrics at http://A:P/metrics\n"
    "  --log-level L         debug, info (default), warning or error\n"
    "  --once                sample, report and size once, then exit\n"
    "  --help, --version\n\n"
    "Each option may be given as an environment variable instead: CONNBUDGET_SERVER,\n"
    "CONNBUDGET_ADMIN, CONNBUDGET_MIN_SIZE, CONNBUDGET_MAX_SIZE, CONNBUDGET_REFRESH_MS,\n"
    "CONNBUDGET_HEADROOM_PCT, CONNBUDGET_METRICS_LISTEN, CONNBUDGET_LOG_LEVEL.\n";

static void bad_usage(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "connbudget-pgbouncer: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'connbudget-pgbouncer --help'.\n");
    exit(2);
}

static const char *const option_names[] = {"server", "admin", "min-size", "max-size", "refresh-ms",
                                           "headroom-pct", "metrics-listen", "log-level"};
static const char *const option_envs[] = {"CONNBUDGET_SERVER", "CONNBUDGET_ADMIN", "CONNBUDGET_MIN_SIZE",
                                          "CONNBUDGET_MAX_SIZE", "CONNBUDGET_REFRESH_MS",
                                          "CONNBUDGET_HEADROOM_PCT", "CONNBUDGET_METRICS_LISTEN",
                                          "CONNBUDGET_LOG_LEVEL"};

/* Option i (index in option_names), given as shown (for messages). */
static void set_option(Options *o, int i, const char *value, const char *shown)
{
    static const int lo[] = {0, 0, 0, 1, REFRESH_MIN_MS, 0}, hi[] = {0, 0, SHARE_MAX, SHARE_MAX, REFRESH_MAX_MS, 1000};
    int *ints[] = {NULL, NULL, &o->min_size, &o->max_size, &o->refresh_ms, &o->headroom_pct};
    long long v;

    if (i == 0)
        o->server = value;
    else if (i == 1)
        o->admin = value;
    else if (i <= 5) {
        if (parse_int(value, lo[i], hi[i], &v) != 0)
            bad_usage("%s must be an integer from %d to %d, not \"%s\"", shown, lo[i], hi[i], value);
        *ints[i] = (int)v;
    } else if (i == 6)
        o->metrics_listen = value[0] ? value : NULL;
    else {
        log_threshold = -1;
        for (int l = 0; l < 4; l++)
            if (strcmp(value, level_names[l]) == 0)
                log_threshold = l;
        if (log_threshold < 0)
            bad_usage("%s must be debug, info, warning or error, not \"%s\"", shown, value);
    }
}

static bool names_a_pod(const char *options)
{
    return options && (strstr(options, "connbudget.pod") || strstr(options, "connbudget.pool_session"));
}

/* The two connection strings parse, and say what they must. */
static void check_conninfo(Controller *c, bool server, const char *conninfo)
{
    char *err = NULL, line[400];
    const char *appname = NULL, *options = NULL, *dbname = NULL, *env = getenv("PGAPPNAME");
    PQconninfoOption *info = PQconninfoParse(conninfo, &err);

    if (!info)
        bad_usage("--%s is not a libpq connection string: %s", server ? "server" : "admin",
                  one_line(err ? err : "out of memory", line, sizeof line));
    for (PQconninfoOption *o = info; o->keyword; o++) {
        if (o->val && strcmp(o->keyword, "application_name") == 0)
            appname = o->val;
        else if (o->val && strcmp(o->keyword, "options") == 0)
            options = o->val;
        else if (o->val && strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
    }
    if (server && (names_a_pod(options) || names_a_pod(c->server_options)))
        bad_usage("--server (or PGOPTIONS) must not give connbudget.pod or connbudget.pool_session: "
                  "the pod is PgBouncer's, named by this address");
    if (server && (!appname || !appname[0]) && !(env && env[0]))
        bad_usage("--server must set application_name, the same as PgBouncer's [databases] entry");
    if (!server && options && options[0])
        bad_usage("--admin must not give options: PgBouncer refuses them");
    if (!server && (!dbname || strcmp(dbname, "pgbouncer") != 0))
        bad_usage("--admin must name dbname=pgbouncer, PgBouncer's admin console");
    PQconninfoFree(info);
}

static void parse_command_line(Controller *c, int argc, char **argv)
{
    Options *o = &c->opt;
    const char *pgoptions = getenv("PGOPTIONS");

    o->min_size = 1;
    o->max_size = 1000;
    o->headroom_pct = 25;
    for (int i = 0; i < 8; i++)
        if (getenv(option_envs[i]) && getenv(option_envs[i])[0])
            set_option(o, i, getenv(option_envs[i]), option_envs[i]);
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a], *eq = strchr(arg, '='), *value;
        char shown[40];
        int i = -1;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (strcmp(arg, "--version") == 0) {
            printf("connbudget-pgbouncer %s (protocol 2)\n", CBPGB_VERSION);
            exit(0);
        }
        if (strcmp(arg, "--once") == 0) {
            o->once = true;
            continue;
        }
        snprintf(shown, sizeof shown, "%.*s", (int)(eq ? (size_t)(eq - arg) : strlen(arg)), arg);
        for (int k = 0; k < 8 && strncmp(shown, "--", 2) == 0; k++)
            if (strcmp(shown + 2, option_names[k]) == 0)
                i = k;
        if (i < 0)
            bad_usage(strncmp(arg, "--", 2) == 0 ? "unknown option \"%s\"" : "unexpected argument \"%s\"", arg);
        if (!eq && a + 1 >= argc)
            bad_usage("%s needs a value", shown);
        value = eq ? eq + 1 : argv[++a];
        set_option(o, i, value, shown);
    }
    if (!o->server || !o->server[0])
        bad_usage("--server (or CONNBUDGET_SERVER) is required");
    if (!o->admin || !o->admin[0])
        bad_usage("--admin (or CONNBUDGET_ADMIN) is required");
    if (o->min_size > o->max_size)
        bad_usage("--min-size (%d) is larger than --max-size (%d)", o->min_size, o->max_size);
    /* PGOPTIONS goes to PostgreSQL only: PgBouncer's console refuses options */
    if (pgoptions && pgoptions[0]) {
        snprintf(c->server_options, sizeof c->server_options, "%s", pgoptions);
        unsetenv("PGOPTIONS");
    }
    check_conninfo(c, true, o->server);
    check_conninfo(c, false, o->admin);
}

/* ---- main: the control loop ---- */

/* --once: one sample, one report and read, one size; 0 if all went. */
static int run_once(Controller *c)
{
    admin_connect(c);
    server_connect(c);
    if (!c->admin || !c->server)
        return 1;
    sample(c);
    if (c->server)
        refresh(c);
    apply(c);
    printf("share %d, demand %d, pool size %d\n", c->have_share ? c->share : -1, c->reported_demand,
           c->seen ? c->pool_size : -1);
    return c->have_share && c->admin && c->seen && c->pool_size == c->target ? 0 : 1;
}

int main(int argc, char **argv)
{
    static Controller ctl;
    Controller *c = &ctl;
    struct sigaction sa;
    sigset_t block, old;
    pthread_t thread;
    bool thread_started = false;
    char err[512];
    int status = 0;

    parse_command_line(c, argc, argv);
    c->protocol = 2;
    c->refresh_ms = c->opt.refresh_ms;
    c->reported_demand = c->target = c->applied = -1;
    rng_state ^= (uint64_t)now_ms() * 2654435761u ^ (uint64_t)getpid() << 20 ^ (uint64_t)time(NULL);
    if (rng_state == 0)
        rng_state = 88172645463325252ULL;
    if (pipe(wake_pipe) != 0 || pipe(metrics_stop) != 0) {
        logmsg(LOG_ERROR, "pipe: %s", strerror(errno));
        return 1;
    }
    fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK);
    fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK);
    signal(SIGPIPE, SIG_IGN);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (c->opt.once)
        status = run_once(c);
    else {
        if (c->opt.metrics_listen) {
            if (metrics_listen(c->opt.metrics_listen, err, sizeof err) != 0) {
                logmsg(LOG_ERROR, "%s", err);
                return 1;
            }
            /* the stop signals are the control loop's, not the listener's */
            sigemptyset(&block);
            sigaddset(&block, SIGTERM);
            sigaddset(&block, SIGINT);
            pthread_sigmask(SIG_BLOCK, &block, &old);
            thread_started = pthread_create(&thread, NULL, metrics_thread, NULL) == 0;
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            if (!thread_started) {
                logmsg(LOG_ERROR, "cannot start the metrics listener");
                return 1;
            }
        }
        logmsg(LOG_INFO, "connbudget-pgbouncer %s started (min %d, max %d, headroom %d%%%s)", CBPGB_VERSION,
               c->opt.min_size, c->opt.max_size, c->opt.headroom_pct, c->opt.metrics_listen ? ", metrics served" : "");
        while (!stop_requested) {
            int64_t wake;

            if (!c->admin && now_ms() >= c->admin_retry_at)
                admin_connect(c);
            if (!c->server && now_ms() >= c->server_retry_at && !stop_requested)
                server_connect(c);
            if (c->admin && now_ms() >= c->next_sample)
                sample(c);
            if (c->server && now_ms() >= c->next_refresh && !stop_requested) {
                refresh(c);
                apply(c);
            }
            wake = c->admin ? c->next_sample : c->admin_retry_at;
            if (c->server && c->next_refresh < wake)
                wake = c->next_refresh;
            if (!c->server && c->server_retry_at < wake)
                wake = c->server_retry_at;
            sleep_until(wake);
        }
        logmsg(LOG_INFO, "stopping");
        if (c->shrinking && c->admin)
            shrink_done(c, "stopping while shrinking the pool");
        leave(c);
    }

    if (thread_started) {
        if (write(metrics_stop[1], "x", 1) < 0) {
            /* the thread cannot be told: it ends with the process */
        }
        pthread_join(thread, NULL);
    }
    if (metrics_fd >= 0)
        close(metrics_fd);
    PQfinish(c->server);
    PQfinish(c->admin);
    close(wake_pipe[0]);
    close(wake_pipe[1]);
    close(metrics_stop[0]);
    close(metrics_stop[1]);
    return status;
}
