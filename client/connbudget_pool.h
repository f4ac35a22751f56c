/* connbudget_pool.h - v1.6 - a libpq connection pool sized by the server's
   connection budget.  PostgreSQL licence (see end of file).

   Do this:
       #define CBPOOL_IMPLEMENTATION
   before you include this file in *one* C or C++ file to create the
   implementation.  Other files include it without the define.

       #define CBPOOL_IMPLEMENTATION
       #include "connbudget_pool.h"

   Build: cc -std=c11 app.c -I$(pg_config --includedir) -lpq -pthread
   (include this header before any system header in the implementation
   file, or add -D_GNU_SOURCE on Linux, -D_POSIX_C_SOURCE=200809L
   elsewhere; with only the POSIX define on Linux, follow_cpu does
   nothing)

   CONTENTS

     The documentation, in this comment:
       EXAMPLE                         ten lines
       WHAT IT DOES
       THREAD SAFETY
       MORE THREADS THAN CONNECTIONS   the hand-off and its bound
       OPTIONS                         compile time: opt-outs and tunables
       CONFIGURATION                   cbpool_config, with defaults and why
       API
       STATISTICS AND METRICS
       CIRCUIT BREAKER
       PERMANENT REFUSALS              42501, 53400: CBPOOL_EREFUSED
       DEADLINES
       CREDENTIALS
       HOOKS
       TRANSACTIONS WITH RETRY         cbpool_run()
       CLUSTERS
       LAYOUT                          where the code is, and why one file
       REVISION HISTORY
       LICENCE                         at the end of the file

     The code, in data-flow order; each section opens with a banner
     comment "== [tag] what it holds ====" (search for "== [share]", say):
       [api]       public declarations (always)
       [config]    tunables, cbpool_config_default(), configuration checks
       [state]     struct cbpool: one sub-struct per subsystem, with who
                   writes it; what each subsystem offers the others
       [base]      clock, randomness, logging, libpq helpers
       [handoff]   the lock-free path: park, keep, take back, drain
       [slots]     acquire and release: connections, idle stack, waiters
       [maint]     maintenance: one round in named steps, and its thread
       [share]     the budget: size, demand, the refresh's state machine,
                   the protocol (report, read, leave)
       [connect]   connect attempts and their outcomes
       [breaker]   circuit breaker, backoff, permanent refusals
       [life]      cbpool_open(), cbpool_close()
       [run]       cbpool_run() and the transaction runner (CBPOOL_NO_RUN)
       [metrics]   cbpool_stats(), the Prometheus text (CBPOOL_NO_PROMETHEUS)
       [member]    what a cluster needs from a host's pool (CBPOOL_NO_CLUSTER)
       [cluster]   the router: one pool per host (CBPOOL_NO_CLUSTER)

   EXAMPLE

       cbpool_config cfg = cbpool_config_default();
       char err[256];
       cfg.conninfo = "host=db.internal dbname=shop";
       cfg.application_name = "api";            // the budget it draws from
       cbpool *pool = cbpool_open(&cfg, err, sizeof err);
       if (!pool) { fprintf(stderr, "%s\n", err); exit(1); }

       PGconn *conn = cbpool_acquire(pool, 2000);        // NULL on timeout/error
       if (conn) {
           PGresult *res = PQexec(conn, "SELECT 1");
           PQclear(res);
           cbpool_release(pool, conn);                     // always give it back
       }
       cbpool_close(pool);

   WHAT IT DOES

   The pool asks the server how many connections its pod may hold every
   refresh interval, reporting its demand (connections in use + waiting
   threads, with headroom), and keeps itself within [min, share].  It is
   the reference implementation of the protocol of docs/protocol.md: in
   any database of the server, it sets connbudget.demand and reads
   connbudget.share (protocol 2, connbudget 1.2); a server that does not
   know them (connbudget 1.1 or older) is asked with
   connbudget.pool_share() instead (protocol 1), and protocol 2 is tried
   again every 30 s.
     - it never opens a connection beyond its share;
     - when the share drops it closes idle connections at once, retires
       over-share connections as they are released, and abandons connects
       still under way beyond it;
     - against a server without the extension, or one that does not
       govern it (status "other"), it uses max_size (10 if max_size is 0)
       and logs that once;
     - when it closes it hands its share back (connbudget.demand =
       'leave'; with protocol 1 a demand of 0), so the pods that stay get
       it a publish period later, not connbudget.pod_ttl later;
     - it believes no answer: a size is taken only from one row whose
       numbers are integers, 0 <= min_size <= max_size <= budget <= 262143
       (PostgreSQL's MAX_BACKENDS) and refresh_ms from 10 to 3600000 (the
       range of connbudget.refresh_interval), each written in base 10 and
       nothing else (an optional '-' and digits: no '+', no space, nothing
       after), and for protocol 2 words key=value with a known status.
       Anything else -- another number of rows or columns, NULL, "abc",
       "5x", "99999999999", a function of that name someone else created
       in a database without the extension -- is an error and no size:
       logged as a warning (id "budget-invalid", saying what was wrong)
       once per kind of failure until a valid answer comes again, counted
       in budget_errors, and the pool keeps the share it had (before its
       first answer, the one connection it starts with) and the
       connection the answer came on.  A share the server withdrew
       (status "refused": the pod's role lost the application) is logged
       once as an error ("share-refused") and the pool keeps what it had.
       A 53300 refusal whose stated pace is not such a number is logged
       ("pace-invalid") and counted in budget_errors the same way, and the
       pool keeps its own pace.
   It identifies itself at connect time with application_name and
   connbudget.pod (options='-c connbudget.pod=<pod>').  The call is made on
   a connection idle for a while, or else by the next thread that releases
   a connection, on that connection before it lets it go (one round trip
   per refresh interval), so that no busy thread finds its connection
   taken.

   Beyond sizing it does what a production pool does: FIFO waiters with an
   acquire timeout and a cap on waiters (fail fast beyond it), bounded
   barging when there are more threads than connections, validation
   of connections idle for a while, dead-connection detection before every
   hand-out, rollback of open transactions on release, lifetimes with
   jitter, idle timeouts, leak detection, non-blocking connects with a
   deadline, exponential backoff with full jitter, SQLSTATE 53300 treated
   as backpressure, 42501 and 53400 as refusals that will not change by
   themselves (CBPOOL_EREFUSED), a transaction runner that retries idempotent work on
   serialization failures, deadlocks and lost connections, and metrics in
   Prometheus text format.

   THREAD SAFETY

   Every function may be called from any thread.  A PGconn returned by
   cbpool_acquire() belongs to the calling thread until it passes it to
   cbpool_release(); libpq connections must not be used by two threads at
   once.  cbpool_open() refuses a libpq built without thread safety
   (PQisthreadsafe()).  A background thread does the connecting, closing
   and share refreshing; set cfg.background = 0 to do without it and call
   cbpool_maintain() from your event loop (acquire then also drives it
   while it waits).

   Acquire and release take no lock in the common case: a clean release
   while nobody waits parks the connection, and the same thread's next
   acquire takes it back with one atomic compare-and-swap.  A connection
   may still be released on another thread than the one that acquired it;
   that release takes the lock.

   MORE THREADS THAN CONNECTIONS

   Threads that find no connection wait in line and are served first come,
   first served: a connection released while threads wait is handed to
   the one that has waited longest, which is woken only then.  Handing
   over on every release costs a sleep and a wake-up per query, so a thread
   that releases a connection while others wait and comes straight back
   for another (within 100 us of its previous release) may take its own
   connection back, without the lock and without waking anyone, up to
   cfg.barge_limit times in a row; the next release of that connection
   then hands it to the first waiter.  This is the only way to skip the
   line: a thread that was not holding the connection queues behind the
   others, and the threads in line are served in the order they came.
   The bound:
     - each connection is taken back at most barge_limit times in a row
       while threads wait, and goes to the first thread in line at the
       latest on its next release (or, if that release retires it, its
       replacement does), so the first thread in line waits at most
       barge_limit hold times longer than under strict FIFO;
     - a kept connection that its thread has not taken back yet goes to
       the first thread in line at the pool's next hand-off or new waiter,
       and otherwise within about 2 ms (the maintenance thread looks
       every millisecond while threads wait, and hands on what has been
       kept for 100 us), or about 10 ms in a pool whose threads have long
       all come back (the look slows down, by doubling, to about every 9 ms
       while it finds nothing to hand on, and speeds up again when it
       does), so a thread that does not come back costs the waiters
       little.
   cfg.barge_limit = 0 hands over on every release (strict FIFO).

   A thread that a connection is handed to has slept while others used
   it, and the scheduler wakes it on whichever CPU it likes; the
   connection's backend, on a local server, runs where the connection's
   last user ran, and a client thread and its backend on different CPUs
   pay an interrupt between processors on every round trip.  So with
   cfg.follow_cpu (default 1; Linux) a release notes its CPU, and the
   thread handed the connection after waiting moves there once: its
   affinity mask is set to that CPU alone and at once back to what it was,
   so the mask stays what the application made it, and a thread that may
   not run on that CPU is not moved.  Nothing moves without a hand-off.

   OPTIONS (compile time)

       CBPOOL_IMPLEMENTATION   emit the implementation in this translation unit
       CBPOOL_STATIC           make every function static (private to one file)
       CBPOOL_ASSERT(x)        your assert; default assert() from <assert.h>

     Opt-outs: each removes its declarations and its implementation.  The
     sizes are the text of the implementation's object file (gcc 12, -O2,
     x86-64), about 77 kB with everything:
       CBPOOL_NO_CLUSTER       no cbpool_cluster_* (and no [member] hook):
                               saves about 15 kB
       CBPOOL_NO_RUN           no cbpool_run(), cbpool_tx_*, cbpool_run_opts
                               (nor cbpool_cluster_run): saves about 4 kB
       CBPOOL_NO_PROMETHEUS    no cbpool_prometheus() (nor
                               cbpool_cluster_prometheus): saves about 11 kB
       all three               about 50 kB: saves about 27 kB

     Tunables.  Those marked (d) may be #defined before the implementation
     is included; the others are fixed by the protocol, the server's
     ranges or the pool's own bookkeeping.
       CBPOOL__COME_BACK_NS (d)    100 us: a release keeps its connection
                                   for its thread only if the thread came
                                   back this soon after its previous
                                   release (about what waking a waiter
                                   costs; a thread doing other work meanwhile
                                   would leave the connection unused)
       CBPOOL__KEEP_NS (d)         = COME_BACK_NS: maintenance hands on a
                                   connection kept this long to a waiter
       CBPOOL__WATCH_NS (d)        1 ms: how often maintenance looks at kept
                                   connections while threads wait
       CBPOOL__WATCH_MAX_NS (d)    16 ms: the look slows down to this while
                                   it finds nothing to hand on (many pools in
                                   one process must not each wake a thousand
                                   times a second)
       CBPOOL__RECHECK_NS (d)      1 ms: a connection back for less than this
                                   gets no socket check on acquire (it was
                                   alive a moment ago; the check costs a
                                   system call on every acquire of a busy pool)
       CBPOOL__SPINS (d)           64: tries of the pool's lock before
                                   sleeping on it (its critical sections are
                                   a few hundred nanoseconds)
       CBPOOL__PATIENCE_MS (d)     100: a due refresh waits at most this
                                   long (and at most one refresh interval)
                                   for a connection to come back before it
                                   takes an idle one or opens one
       CBPOOL__MAINT_POLL_MS (d)   250: the maintenance thread looks at least
                                   this often (idle and lifetime checks, the
                                   pool closing)
       CBPOOL__MAX_ATTEMPTS (d)    16: connects under way at once, plus one
                                   (bounds a growth step; a step of 15
                                   connects is already a burst for a server)
       CBPOOL__MAX_HOSTS (d)       64: hosts in a cluster's conninfo
       CBPOOL__ASK_NS (d)          100 ms: while no host fits an access, the
                                   cluster asks every host to check its role
                                   at most this often
       CBPOOL__HIST_BUCKETS        120: acquire-wait buckets 2^(1/4) apart,
                                   1 us to about 15 minutes (stats layout)
       CBPOOL__PEAK_WINDOW         5: refresh intervals of demand history
                                   (docs/protocol.md, section 3)
       CBPOOL__PROBE_NS            30 s: a pool that speaks protocol 1 tries
                                   2 again this often (docs/protocol.md, 5)
       CBPOOL__NO_EXTENSION_MS     30000: without a usable connbudget, look
                                   again this often (docs/protocol.md, 5)
       CBPOOL__FIXED_SIZE          10: max_size 0 without a share
       CBPOOL__REFUSED_INTERVALS   10, and CBPOOL__REFUSED_MS 10000: a
                                   permanent refusal is retried no sooner
                                   than 10 refresh intervals, or 10 s before
                                   the interval is known (docs/protocol.md, 6)
       CBPOOL__MAX_BACKENDS        262143, CBPOOL__REFRESH_MIN_MS 10,
                                   CBPOOL__REFRESH_MAX_MS 3600000,
                                   CBPOOL__SHARE_MAX 4096: what a server can
                                   truthfully answer (PostgreSQL's
                                   MAX_BACKENDS, the range of
                                   connbudget.refresh_interval, the longest
                                   share text read)
     Inside one maintenance round, at most 64 idle connections close, 8
     leaks are reported and 4 server notices are kept for the log; the rest
     wait for the next round (a millisecond to 250 ms later).  A waiting
     acquire looks again at least every second (20 ms without the
     maintenance thread, which it then drives); handing the share back on
     close waits at most 1 s (or validate_timeout_ms); a cluster's acquire
     that finds no host for its access looks again every 5 ms; a growth
     step's pause is drawn from 0 to 20 ms (a tenth of a shorter refresh
     interval).

   CONFIGURATION  (cbpool_config_default() fills in every default)

       conninfo            ""      libpq connection string or URI; the usual
                                   PG* environment variables apply (options
                                   in conninfo, else PGOPTIONS, are passed on
                                   before the pool's own -c connbudget.pod)
       application_name    NULL    the application whose budget the pool uses;
                                   NULL: taken from conninfo, else PGAPPNAME,
                                   else "cbpool"; 1 to 63 bytes
       pod                 NULL    this pod's id (1-63 printable ASCII bytes);
                                   NULL: the host name, which is the pod name
                                   in Kubernetes
       min_idle            1       idle connections kept ready; the pool also
                                   keeps the server's min_size.  At least one
                                   connection is kept so that the share can
                                   be refreshed, none while the share is 0
                                   (then one is opened once per refresh
                                   interval to ask again)
       max_size            0       the application's own upper bound; 0: as
                                   large as the budget allows (10 without the
                                   extension)
       acquire_timeout_ms  30000   default for cbpool_acquire(pool, -1);
                                   long enough to ride out a server restart
       max_waiters         0       threads allowed to wait at once; beyond it
                                   acquire fails at once (backpressure);
                                   0: no limit
       barge_limit         16      while threads wait, how many times in a
                                   row a thread may take back the connection
                                   it just released (see MORE THREADS THAN
                                   CONNECTIONS); the first thread in line
                                   waits at most this many hold times more
                                   than under strict FIFO.  16 because on 2
                                   cores it is the smallest that carries at
                                   least 0.8 of what 4 dedicated connections
                                   do with 8 or 32 threads on 4 connections
                                   (8: about 0.75 with 8 threads; 0: 0.3-0.4),
                                   the least served thread still getting
                                   about 0.9 of the busiest one's queries;
                                   each doubling beyond gains less and
                                   doubles the p99 wait.  0: hand every
                                   release to the first waiter
       follow_cpu          1       1: a thread handed a connection after
                                   waiting moves to the CPU the connection
                                   was released on, next to its backend on
                                   a local server (Linux; the thread's
                                   affinity mask is left as it was); 0:
                                   never
       idle_timeout_ms     600000  close connections idle this long (beyond
                                   the minimum); 0: never
       max_lifetime_ms     1800000 retire connections this old, minus up to
                                   lifetime_jitter_pct percent at random, so
                                   they do not all retire at once; 0: never
       lifetime_jitter_pct 5
       validate_idle_ms    1000    a connection idle longer than this is
                                   checked with a round trip before it is
                                   handed out (one idle for 1 ms or more gets
                                   a cheaper check, for a closed socket);
                                   -1: never
       validate_timeout_ms 5000    deadline of that check and of share
                                   refreshes
       leak_threshold_ms   0       report a connection held longer than this,
                                   once, with where it was acquired; 0: off
       refresh_ms          0       how often to re-read the share; 0: what
                                   the server says (connbudget.refresh_interval)
       connect_timeout_ms  5000    deadline of one connect attempt; doubled
                                   after each attempt that timed out, up to
                                   8 times this (at most a minute, unless
                                   this is longer), back to this once a
                                   server answers (see CIRCUIT BREAKER)
       backoff_initial_ms  100     first retry delay after a failed connect;
                                   doubled per failure, up to
       backoff_max_ms      5000    ... this; each delay is drawn uniformly
                                   from [0, delay] (full jitter)
       headroom_pct        25      demand reported = (in use + waiters) plus
                                   this percentage, at least one more
       background          1       run the maintenance thread
       breaker_failures    5       connects failed in a row as unreachable
                                   (refused, reset, timed out, the server
                                   shutting down or starting up; never 53300
                                   or a failed login) that open the circuit
                                   breaker (see CIRCUIT BREAKER); 0: no
                                   breaker.  5 because with the default
                                   backoff they take about 1.5 s against a
                                   stopped server, and one or two failures
                                   happen in any restart
       breaker_after_ms    3000    ... or failures in a row for this long,
                                   whichever comes first, so that a server
                                   that does not answer at all opens it at
                                   the first timed-out connect
       breaker_open_ms     1000    how long the circuit stays open before one
                                   probe connect; doubled by each failed
                                   probe up to 8 times this, each period
                                   drawn from 80% to 120% of it (so a fleet
                                   does not probe in step).  1 s: a restarted
                                   server is used again within about 1-10 s
       log_debug           0       1: also log connect, close, acquire and
                                   release events at CBPOOL_LOG_DEBUG (ids
                                   "connect", "close", "acquire", "release")
       hooks               {NULL}  lifecycle callbacks (see HOOKS)
       credentials         {NULL}  {func, user_data}: the password or conninfo
                                   for each new connection (see CREDENTIALS)
       logger              {NULL}  {func, user_data}; NULL: warnings and
                                   errors to stderr.  Called outside the
                                   pool's lock; must not call cbpool_close().
                                   Server notices on pooled connections
                                   come here too, id "notice"
       allocator           {NULL}  {alloc_fn, free_fn, user_data}; NULL:
                                   malloc/free

   API

       cbpool_config cbpool_config_default(void);
       cbpool *cbpool_open(const cbpool_config *cfg, char *err, size_t errlen);
           NULL and a message in err on invalid configuration.  Does not
           wait for the server: the pool connects in the background.
       PGconn *cbpool_acquire(cbpool *pool, int timeout_ms);
           timeout_ms < 0: cfg.acquire_timeout_ms.  NULL on timeout or error;
           cbpool_last_error() says which: CBPOOL_ETIMEOUT,
           CBPOOL_EBACKPRESSURE (max_waiters), CBPOOL_ECLOSED,
           CBPOOL_EUNAVAILABLE (see CIRCUIT BREAKER), CBPOOL_EREFUSED (see
           PERMANENT REFUSALS), CBPOOL_EINVAL.
       PGconn *CBPOOL_ACQUIRE(pool, timeout_ms);
           the same, remembering __FILE__:__LINE__ for leak reports.
       PGconn *cbpool_acquire_until(cbpool *pool, int64_t deadline_us);
           the same with an absolute deadline on cbpool_clock_us(); one
           already passed fails at once (CBPOOL_ETIMEOUT), taking nothing.
       int64_t cbpool_clock_us(void);
           the pool's clock (CLOCK_MONOTONIC), in microseconds.
       void cbpool_release(cbpool *pool, PGconn *conn);
           rolls back an open or failed transaction; discards a broken
           connection; releasing into the wrong pool, or twice while the
           connection is still idle in the pool, is reported and ignored
           (once it was handed out again, a second release cannot be told
           from the new owner's: do not release twice).
       int  cbpool_wait_ready(cbpool *pool, int timeout_ms);
           wait until the pool holds a connection; 0 or a CBPOOL_E* code
           (CBPOOL_EREFUSED at once while the server refuses the pool for
           good).
       void cbpool_maintain(cbpool *pool);   (only with cfg.background = 0)
       void cbpool_stats(cbpool *pool, cbpool_stats_t *out);
       int  cbpool_prometheus(cbpool *pool, char *buf, size_t len);
           snprintf-like: returns the length the text needs (not with
           CBPOOL_NO_PROMETHEUS).
       void cbpool_close(cbpool *pool);
           waiters return NULL at once; idle connections close; connections
           still out are reported and closed when released.
       cbpool_error cbpool_last_error(void);    this thread's last failure
       const char  *cbpool_strerror(cbpool_error e);

     Not with CBPOOL_NO_CLUSTER:
       cbpool_cluster_config cbpool_cluster_config_default(void);
       cbpool_cluster *cbpool_cluster_open(const cbpool_cluster_config *cfg,
                                           char *err, size_t errlen);
           one pool per host of cfg->pool.conninfo (see CLUSTERS).
       PGconn *cbpool_cluster_acquire(cbpool_cluster *cl, int access,
                                      int timeout_ms);
           access CBPOOL_READ or CBPOOL_WRITE; NULL as cbpool_acquire(),
           CBPOOL_EUNAVAILABLE when no host can take this access.
       void cbpool_cluster_release(cbpool_cluster *cl, PGconn *conn);
       int  cbpool_cluster_run(cbpool_cluster *cl, int access, cbpool_tx_fn fn,
                               void *arg, cbpool_run_opts *opts);
           cbpool_run() on the cluster: each attempt takes a connection for
           this access anew, so a retried write goes to the new primary
           (not with CBPOOL_NO_RUN).
       int  cbpool_cluster_hosts(const cbpool_cluster *cl);
       int  cbpool_cluster_host_stats(cbpool_cluster *cl, int host,
                                      cbpool_host_stats *out);
       int  cbpool_cluster_prometheus(cbpool_cluster *cl, char *buf, size_t len);
           every host's pool metrics with a host label, and each host's
           role, down state and lag; snprintf-like (not with
           CBPOOL_NO_PROMETHEUS).
       cbpool *cbpool_cluster_pool(cbpool_cluster *cl, int host);
       void cbpool_cluster_close(cbpool_cluster *cl);

   STATISTICS AND METRICS

   cbpool_stats() fills a cbpool_stats_t: gauges (total, idle, in_use,
   connecting, waiters, max_size, min_size, share, budget, demand,
   extension, breaker_state), the acquire-wait percentiles of a log-scale
   histogram (acquire_wait_us_p50, _p99; buckets 2^(1/4) apart from 1 us
   to about 15 minutes, each reported as its upper bound, so an acquire
   that did not wait reports about 1 us) and the longest wait
   (acquire_wait_us_max), and counters since open.  For contention:
   acquire_timeouts, acquire_rejected
   (max_waiters), handoffs (acquires served by a hand-off after waiting in
   line), barged_acquires (connections taken straight back while others
   waited), barges_expired (kept connections handed to a waiter before
   their thread came back for them) and handoffs_moved (hand-offs after
   which the thread moved to the connection's CPU, follow_cpu).  Many
   barged acquires per hand-off and a low p50 mean threads mostly keep
   their connections; a p99 near the acquire timeout means the pool is too
   small for its threads.  budget_errors counts pool_share() calls that
   failed or answered nonsense (and refusals stating a pace that is not
   one), host_check_errors the same for a cluster
   host's role and lag check.  connects_refused counts 53300 refusals
   (backpressure), refusals_permanent the 42501 and 53400 ones (see
   PERMANENT REFUSALS).
   cbpool_prometheus() writes all of it in the Prometheus text format
   (cbpool_handoffs_total, cbpool_barged_acquires_total, ...): total as
   cbpool_connections{state="idle"|"in_use"|"connecting"}, the closed_*
   counters as cbpool_closed_total{reason=...}, the wait percentiles as
   the summary cbpool_acquire_wait_seconds.

   CIRCUIT BREAKER

   While the server cannot be reached, waiting for a connection only holds
   the caller's thread.  After breaker_failures connects in a row failed as
   unreachable, or such failures for breaker_after_ms, the circuit opens:
   threads waiting for a connection return at once, and an acquire that
   finds no idle connection fails at once with CBPOOL_EUNAVAILABLE instead
   of waiting out its timeout.  Idle connections that still pass their
   checks are still handed out.  After breaker_open_ms (with jitter) one
   probe connect half-opens it: success closes it, and the pool grows back
   from that connection in steps of 1, 2, 4, ... connects with a random
   pause between steps (as at start-up), not all at once; failure opens it
   again for twice as long (up to 8 times).  Each connect that timed out
   (the server took the connection but did not answer in time: busy, in
   crash recovery, or swamped by every pool reconnecting at once) doubles
   the next attempt's deadline, up to 8 times connect_timeout_ms (at most
   a minute unless connect_timeout_ms is longer), so that a slow server is
   eventually waited for instead of given up on just before it answers;
   any answer from a server sets it back.  A refusal with 53300 is
   backpressure from a server that is there: it never counts, and neither
   does a failed login.  cbpool_run() does not retry while the circuit is
   open.  Stats: breaker_state, breaker_openings, breaker_fast_failures.

   PERMANENT REFUSALS

   A connect refused with 42501 (the role may not claim the application,
   or the pod belongs to another role) or 53400 (the role holds
   connbudget.max_pods_per_role pods or pool sessions, or the server's pod
   table is full) will not succeed by itself: the server refuses this
   pool's identity, not its size.  Such a refusal is counted
   (refusals_permanent, cbpool_refusals_permanent_total), logged as an
   error once per distinct message (id "refused-permanently"), and the
   pool tries again no sooner than 10 refresh intervals (10 s while it
   does not know the interval), where a 53300 keeps its backoff at the
   server's pace.  Once such a refusal happened and the pool holds no
   connection, acquires (and threads already waiting) fail at once with
   CBPOOL_EREFUSED, and cbpool_wait_ready() returns it, instead of waiting
   out their timeout; a connection the pool still holds is handed out as
   usual.  The pool connects by itself once the rule that refused it
   changes (its next try after the pause), which clears the state, as
   does any other answer of the server to a connect.  cbpool_run() does
   not retry it.

   DEADLINES

   cbpool_acquire_until() and cbpool_run_opts.deadline_us take an absolute
   deadline on cbpool_clock_us().  cbpool_run() starts no attempt (first or
   retry) once the deadline has passed (CBPOOL_ETIMEOUT; an attempt whose
   BEGIN comes back after it is rolled back before fn runs), waits for a
   connection no longer than the deadline, and sends the time left with
   BEGIN as SET LOCAL statement_timeout, so the server gives up no later
   than the caller; each later statement of fn through cbpool_tx_exec() or
   cbpool_tx_exec_params() sets it again to the time left, and one that
   would start after the deadline is not sent: it fails with 57014
   (query_canceled) and the work is rolled back.  A retry whose backoff
   would end past the deadline is not made: cbpool_run() returns the last
   attempt's result (its sqlstate in opts).  A deadline too far away to
   count in nanoseconds (INT64_MAX, say) is no deadline, and the time
   left sent as statement_timeout is at most INT_MAX ms.

   CREDENTIALS

   cfg.credentials.func(user_data, &secret) is called before every new
   connection, on the maintenance thread (with background = 0, on the
   thread that calls cbpool_maintain() or waits in acquire) and outside
   the pool's lock; it
   may block (read a file, ask a vault, fetch a cloud IAM token).  It fills
   secret.password and/or secret.conninfo ("key=value ...", which overrides
   cfg.conninfo for that connection: another user, an sslkey) and returns
   0, or fills secret.error and returns non-zero: a failed connect, logged
   with that error as "connect-failed", backed off and counted by the
   breaker.  Connections already open are not dropped when the secret
   changes; they retire by max_lifetime_ms.  The pool wipes the secret
   after each connect.

   HOOKS

   cfg.hooks = {on_connect, on_close, on_acquire, on_release, user_data},
   each optional: a connect with its duration (or its error), a close with
   its reason (CBPOOL_CLOSE_IDLE, _LIFETIME, _BROKEN, _OVER_SHARE,
   _POOL_CLOSED; cbpool_close_reason_name() names them) and the
   connection's age, an acquire with the time waited, a release with the
   time held.  They run outside the pool's lock on the thread of the event,
   acquire and release on the caller's, before the connection is handed
   back; they must not call cbpool_close() but may call cbpool_stats().
   Unset, they cost one predictable branch per acquire and release; set,
   a release takes the lock once more to find the connection's hold time.
   cfg.log_debug sends the same events to the logger at CBPOOL_LOG_DEBUG.

   TRANSACTIONS WITH RETRY

       int cbpool_run(cbpool *pool, cbpool_tx_fn fn, void *arg,
                      cbpool_run_opts *opts);

   runs fn in a transaction (BEGIN ... COMMIT) on a pooled connection.  fn
   runs its statements with cbpool_tx_exec() or checks its own results with
   cbpool_tx_check(), which remember a failure's SQLSTATE, and returns 0 to
   commit or anything else to roll back.  When opts->idempotent is set, a
   failure by serialization (40001), deadlock (40P01) or a lost connection
   is retried, with opts->max_attempts attempts in all (5 if 0), with
   exponential backoff and full jitter.  A connection lost before fn ran is retried even without
   it.  Returns 0 once committed; otherwise what the last attempt gave:
   fn's non-zero value, or a negative CBPOOL_E* code.  opts->attempts and
   opts->sqlstate tell what happened.

   CLUSTERS

   A primary and its hot standbys are servers with budgets of their own.
   cbpool_cluster_open() opens one pool per host named in conninfo
   ("host=a,b,c port=5432,5432,5433"), each connecting to its host alone and
   sized by that host's share, all with the same application and pod:

       cbpool_cluster_config cc = cbpool_cluster_config_default();
       cc.pool.conninfo = "host=db-a,db-b,db-c dbname=shop";
       cc.pool.application_name = "api";
       cbpool_cluster *cl = cbpool_cluster_open(&cc, err, sizeof err);
       PGconn *conn = cbpool_cluster_acquire(cl, CBPOOL_READ, 1000);
       ...
       cbpool_cluster_release(cl, conn);

   CBPOOL_WRITE hands out a connection to the primary; CBPOOL_READ one to a
   standby that is up and replays within max_lag_ms, the one with the most
   room left in its share (share minus in use minus waiters) first (and
   the one this thread used last while its connection is free, which
   keeps the lock-free path), or to the primary when no standby is usable
   and reads_on_primary is set.  Each host's pool checks its host's role
   and replay lag at each share refresh and every check_ms, and keeps at
   least one connection for it; an answer that is not one row of "t" or
   "f", a lag >= 0 and a timeline >= 0 changes neither role nor lag (said
   once as a warning, id "host-invalid", and counted in
   host_check_errors).  A host whose connect fails as unreachable is
   down: acquires waiting on it return, and go to another host.  While
   no host fits, an acquire waits (asking every host to check its role at
   once, every 100 ms) until its timeout, then fails with
   CBPOOL_EUNAVAILABLE; when every host is down it fails at once.  So a
   promoted standby takes the writes within about a check of its promotion.
   Lag is 0 when a standby has replayed all it received, otherwise the age
   of the last transaction it replayed (the two servers' clocks must
   agree).  target_session_attrs in conninfo is ignored: the cluster
   routes.  cbpool_cluster_run() is cbpool_run() with the host chosen
   again for each attempt.  cbpool_cluster_pool() gives one host's pool.

   LAYOUT

   The implementation is one section per subsystem (see CONTENTS), in the
   order data flows through a pool: its configuration, its state, the
   lock-free hand-off, acquire and release, maintenance, the share,
   connecting and the breaker, open and close, then what is built on the
   pool (transactions, metrics, clusters).  struct cbpool holds one
   sub-struct per subsystem, each written only by that subsystem's
   functions (cbpool__fast_*, cbpool__slots_*, cbpool__maint_*,
   cbpool__share_*, cbpool__connect_*, cbpool__breaker_*, cbpool__member_*;
   counters through CBPOOL__COUNT), as the comment at each says; the
   functions one subsystem offers the others are declared together at the
   end of [state].  The share refresh is one state machine (share.state,
   cbpool__share_to_locked).  The pool calls no cluster code: a cluster's
   host pool has a [member] hook (a few cbpool__member_* functions, no-ops
   with CBPOOL_NO_CLUSTER), and cbpool_run() takes its connections from a
   source that the cluster can supply.

   The cluster stays in this file, behind CBPOOL_NO_CLUSTER, rather than
   in a connbudget_cluster.h of its own.  Measured (gcc 12, x86-64, CPU
   time of a unit that includes the implementation): the cluster is about
   880 of its 6,200 lines (790 of them implementation); the unit compiles
   in 1.33 s with it and 1.05 s without it at -O2 (0.26 s and 0.23 s at
   -O0); its object's text is 77 kB with it and 62 kB without.  A header
   of its own would save a user who does not want the cluster nothing that
   the define does not, and it would need the pool's private parts
   (cbpool__acquire() with a deadline, the thread's last connection for
   the lock-free read path, the lock and the share for a host's room, the
   member hook): either made public, or the second header included after
   the first's implementation in the same unit, which breaks the one file,
   one define that makes this header easy to vendor.

   REVISION HISTORY

       1.6  (2026-12-07) the implementation is laid out by subsystem: one
                         sub-struct of struct cbpool per subsystem, written
                         only by its family of functions; tagged section
                         banners listed in CONTENTS; maintenance in named
                         steps; the share refresh as one state machine;
                         the cluster on a narrow [member] hook.  Opt-outs
                         CBPOOL_NO_CLUSTER, CBPOOL_NO_RUN and
                         CBPOOL_NO_PROMETHEUS; the tunables documented in
                         OPTIONS, several overridable.  A permanent
                         refusal of a connect (42501, 53400) is its own
                         error, CBPOOL_EREFUSED: waiting acquirers fail at
                         once while no connection is held, it is counted
                         (refusals_permanent,
                         cbpool_refusals_permanent_total), logged once as
                         an error ("refused-permanently"), and retried no
                         sooner than 10 refresh intervals (10 s before the
                         interval is known).  Connects under way beyond a
                         share that dropped are abandoned, not finished and
                         closed
       1.5  (2026-12-06) protocol 2: the share in any database, by
                         connbudget.demand and connbudget.share, with
                         pool_share() as the fallback for connbudget 1.1;
                         the share is handed back on close; a refusal's
                         pace is read from its context field
                         ("connbudget: retry_ms=N"), then from its hint.
                         The pool believes no answer: the share, the host
                         check and a refusal's stated pace are read by one
                         strict parser (whole base-10 integers, in range);
                         anything else is logged ("budget-invalid",
                         "host-invalid"), counted (budget_errors, the new
                         host_check_errors and host_check_errors_total) and
                         not taken, where one column crashed it, "abc"
                         shrank it to 0 and "99999999999" overflowed
       1.4  (2026-12-02) PGAPPNAME and PGOPTIONS are read as libpq reads
                         them; the acquire-wait histogram reaches about 15
                         minutes (was 14 s); the Prometheus text adds
                         extension, acquire_wait_max_seconds,
                         rollbacks_on_release_total, validations_failed_total
                         and misuse_total; a deadline too far away to count
                         in nanoseconds is no deadline
       1.3  (2026-12-02) follow_cpu: a thread handed a connection moves
                         to the CPU it was released on (handoffs_moved);
                         barge_limit 16 by default (was 8)
       1.2  (2026-12-02) clusters: one pool per host, reads over standbys
                         within each host's share and lag threshold, writes
                         to the primary, followed through promotion;
                         cbpool_cluster_run; metrics per host
                         (cbpool_cluster_prometheus)
       1.1  (2026-12-01) more threads than connections: a thread that
                         releases a connection while others wait may take
                         it straight back, without the lock, up to
                         barge_limit (8) times in a row, then it goes to the
                         first waiter; waiters no longer wake the
                         maintenance thread unless it can open a
                         connection; stats and metrics count hand-offs,
                         barged acquires and expired take-backs; a circuit
                         breaker (CBPOOL_EUNAVAILABLE), deadlines
                         (cbpool_acquire_until, cbpool_run_opts.deadline_us,
                         statement_timeout), a credentials callback,
                         lifecycle hooks and debug events
       1.0  (2026-11-22) first release
*/
/* The implementation uses POSIX (clock_gettime, poll, pipe), and on Linux
   sched_getcpu() and sched_setaffinity() for follow_cpu: under -std=c11
   ask for them, which only works before the first system header.  Include
   this header first in the implementation file, or compile with
   -D_GNU_SOURCE (Linux) or -D_POSIX_C_SOURCE=200809L.  Without the GNU
   declarations the pool works the same, without follow_cpu. */
#if defined(CBPOOL_IMPLEMENTATION) && !defined(_POSIX_C_SOURCE) && \
    !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#ifdef __linux__
#define _GNU_SOURCE
#else
#define _POSIX_C_SOURCE 200809L
#endif
#endif

#ifndef CONNBUDGET_POOL_H
#define CONNBUDGET_POOL_H

/* == [api] public declarations =========================================== */

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#ifdef CBPOOL_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define CBPOOL_DEF static __attribute__((unused))
#else
#define CBPOOL_DEF static
#endif
#else
#define CBPOOL_DEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cbpool cbpool;

typedef enum cbpool_error {
    CBPOOL_OK = 0,
    CBPOOL_ETIMEOUT = -1,       /* no connection within the timeout */
    CBPOOL_EBACKPRESSURE = -2,  /* max_waiters threads already waiting */
    CBPOOL_ECLOSED = -3,        /* the pool is closed or closing */
    CBPOOL_EINVAL = -4,         /* NULL or invalid argument */
    CBPOOL_EQUERY = -5,         /* BEGIN/COMMIT failed (cbpool_run) */
    CBPOOL_EUNAVAILABLE = -6,   /* the server is unreachable: the circuit
                                   breaker is open, no idle connection */
    CBPOOL_EREFUSED = -7        /* the server refuses this pool's identity
                                   (42501, 53400) and no connection is held;
                                   it will not change by itself */
} cbpool_error;

typedef enum cbpool_log_level {
    CBPOOL_LOG_ERROR = 0,
    CBPOOL_LOG_WARN = 1,
    CBPOOL_LOG_INFO = 2,
    CBPOOL_LOG_DEBUG = 3
} cbpool_log_level;

/* id: a stable message id ("connect-failed", "leak", ...); message: text */
typedef void (*cbpool_log_fn)(void *user_data, cbpool_log_level level,
                              const char *id, const char *message);

typedef struct cbpool_logger {
    cbpool_log_fn func;
    void *user_data;
} cbpool_logger;

/*
 * Lifecycle hooks: each is optional, called outside the pool's lock on the
 * thread where the event happens (connect and close mostly on the
 * maintenance thread; acquire and release on the caller's).  They must not
 * call cbpool_close() on their pool; they may call cbpool_stats().
 */
typedef enum cbpool_close_reason {
    CBPOOL_CLOSE_IDLE = 0,        /* idle beyond idle_timeout_ms */
    CBPOOL_CLOSE_LIFETIME = 1,    /* max_lifetime_ms reached */
    CBPOOL_CLOSE_BROKEN = 2,      /* dead, failed validation or reset */
    CBPOOL_CLOSE_OVER_SHARE = 3,  /* beyond the pod's share */
    CBPOOL_CLOSE_POOL_CLOSED = 4  /* cbpool_close() */
} cbpool_close_reason;

typedef struct cbpool_hooks {
    /* a connect finished after duration_us: conn on success, or NULL and
       error (the first line of libpq's message) on failure */
    void (*on_connect)(void *user_data, PGconn *conn, uint64_t duration_us,
                       const char *error);
    /* a connection is about to be closed, lifetime_us after its connect */
    void (*on_close)(void *user_data, PGconn *conn, cbpool_close_reason reason,
                     uint64_t lifetime_us);
    /* handed to the caller after waiting wait_us (0: no wait) */
    void (*on_acquire)(void *user_data, PGconn *conn, uint64_t wait_us);
    /* given back after being held for hold_us */
    void (*on_release)(void *user_data, PGconn *conn, uint64_t hold_us);
    void *user_data;
} cbpool_hooks;

/*
 * Rotating credentials: called before each new connection (on the
 * maintenance thread, outside the lock).  Fill password and/or conninfo
 * (extra "key=value ..." that overrides cfg.conninfo for this connection)
 * and return 0; or fill error and return non-zero, which counts as a
 * failed connect (logged with the error, backed off, and counted by the
 * circuit breaker: a pool that cannot get its credentials cannot reach its
 * server either).  The pool wipes the struct after use.
 */
typedef struct cbpool_secret {
    char password[256];
    char conninfo[1024];
    char error[256];
} cbpool_secret;

typedef struct cbpool_credentials {
    int (*func)(void *user_data, cbpool_secret *out);
    void *user_data;
} cbpool_credentials;

typedef struct cbpool_allocator {
    void *(*alloc_fn)(size_t size, void *user_data);
    void (*free_fn)(void *ptr, void *user_data);
    void *user_data;
} cbpool_allocator;

typedef struct cbpool_config {
    const char *conninfo;
    const char *application_name;
    const char *pod;
    int min_idle;
    int max_size;
    int acquire_timeout_ms;
    int max_waiters;
    int barge_limit;
    int follow_cpu;
    int idle_timeout_ms;
    int max_lifetime_ms;
    int lifetime_jitter_pct;
    int validate_idle_ms;
    int validate_timeout_ms;
    int leak_threshold_ms;
    int refresh_ms;
    int connect_timeout_ms;
    int backoff_initial_ms;
    int backoff_max_ms;
    int headroom_pct;
    int background;
    int breaker_failures;
    int breaker_after_ms;
    int breaker_open_ms;
    int log_debug;
    cbpool_logger logger;
    cbpool_allocator allocator;
    cbpool_hooks hooks;
    cbpool_credentials credentials;
} cbpool_config;

typedef struct cbpool_stats_t {
    /* gauges */
    int total;              /* open connections (idle + in use) */
    int idle;
    int in_use;
    int connecting;         /* connect attempts under way */
    int waiters;            /* threads waiting in acquire */
    int max_size;           /* the pool's current upper bound */
    int min_size;           /* connections it keeps */
    int share;              /* the server's share for this pod, -1 unknown */
    int budget;             /* the server's budget, -1 unknown */
    int demand;             /* reported at the last refresh, -1 before */
    int extension;          /* 1 server has connbudget, 0 not, -1 unknown */
    int breaker_state;      /* CBPOOL_BREAKER_CLOSED, _OPEN or _HALF_OPEN */
    /* counters since open */
    uint64_t acquired;
    uint64_t acquire_timeouts;
    uint64_t acquire_rejected;      /* max_waiters backpressure */
    uint64_t handoffs;              /* acquires served by a hand-off after
                                       waiting in line */
    uint64_t barged_acquires;       /* connections taken straight back by the
                                       thread that released them while
                                       others waited (barge_limit) */
    uint64_t barges_expired;        /* kept connections handed to a waiter
                                       before their thread came back */
    uint64_t handoffs_moved;        /* hand-offs after which the thread moved
                                       to the connection's CPU (follow_cpu) */
    uint64_t acquire_wait_us_p50;   /* wait of successful acquires */
    uint64_t acquire_wait_us_p99;
    uint64_t acquire_wait_us_max;
    uint64_t connects;
    uint64_t connect_failures;
    uint64_t connects_refused;      /* 53300: server-side backpressure */
    uint64_t refusals_permanent;    /* 42501, 53400: connects refused for
                                       good (see CBPOOL_EREFUSED) */
    uint64_t closed_idle;
    uint64_t closed_lifetime;
    uint64_t closed_broken;
    uint64_t closed_over_share;
    uint64_t rollbacks_on_release;
    uint64_t validations_failed;
    uint64_t budget_refreshes;
    uint64_t budget_errors;         /* share refreshes that failed or
                                       answered nonsense */
    uint64_t leaks_detected;
    uint64_t misuse;                /* NULL, double or foreign releases */
    uint64_t breaker_openings;      /* the circuit opened (from closed) */
    uint64_t breaker_fast_failures; /* acquires failed with
                                       CBPOOL_EUNAVAILABLE */
    uint64_t host_check_errors;     /* a cluster's host: role and lag checks
                                       that failed or answered nonsense */
} cbpool_stats_t;

#define CBPOOL_BREAKER_CLOSED 0     /* connects go ahead */
#define CBPOOL_BREAKER_OPEN 1       /* unreachable: no connects, fail fast */
#define CBPOOL_BREAKER_HALF_OPEN 2  /* one probe connect under way */

#ifndef CBPOOL_NO_RUN
typedef struct cbpool_tx cbpool_tx;
typedef int (*cbpool_tx_fn)(cbpool_tx *tx, void *arg);

typedef struct cbpool_run_opts {
    int idempotent;         /* may fn run more than once? */
    int max_attempts;       /* 0: 5 */
    int acquire_timeout_ms; /* 0: the pool's */
    const char *begin;      /* NULL: "BEGIN" */
    int64_t deadline_us;    /* 0: none; else cbpool_clock_us() time by which
                               the work must be done */
    /* out */
    int attempts;
    char sqlstate[6];       /* of the last failure, "" if none */
} cbpool_run_opts;
#endif /* CBPOOL_NO_RUN */

CBPOOL_DEF cbpool_config cbpool_config_default(void);
CBPOOL_DEF cbpool *cbpool_open(const cbpool_config *cfg, char *err, size_t errlen);
CBPOOL_DEF PGconn *cbpool_acquire(cbpool *pool, int timeout_ms);
CBPOOL_DEF PGconn *cbpool_acquire_at(cbpool *pool, int timeout_ms,
                                     const char *file, int line);
CBPOOL_DEF PGconn *cbpool_acquire_until(cbpool *pool, int64_t deadline_us);
CBPOOL_DEF int64_t cbpool_clock_us(void);
CBPOOL_DEF const char *cbpool_close_reason_name(cbpool_close_reason reason);
CBPOOL_DEF void cbpool_release(cbpool *pool, PGconn *conn);
CBPOOL_DEF int cbpool_wait_ready(cbpool *pool, int timeout_ms);
CBPOOL_DEF void cbpool_maintain(cbpool *pool);
CBPOOL_DEF void cbpool_stats(cbpool *pool, cbpool_stats_t *out);
#ifndef CBPOOL_NO_PROMETHEUS
CBPOOL_DEF int cbpool_prometheus(cbpool *pool, char *buf, size_t len);
#endif
CBPOOL_DEF void cbpool_close(cbpool *pool);
CBPOOL_DEF cbpool_error cbpool_last_error(void);
CBPOOL_DEF const char *cbpool_strerror(cbpool_error e);

#ifndef CBPOOL_NO_RUN
CBPOOL_DEF int cbpool_run(cbpool *pool, cbpool_tx_fn fn, void *arg,
                          cbpool_run_opts *opts);
CBPOOL_DEF PGconn *cbpool_tx_conn(cbpool_tx *tx);
CBPOOL_DEF PGresult *cbpool_tx_exec(cbpool_tx *tx, const char *sql);
CBPOOL_DEF PGresult *cbpool_tx_exec_params(cbpool_tx *tx, const char *sql,
                                           int nparams,
                                           const char *const *values);
CBPOOL_DEF int cbpool_tx_check(cbpool_tx *tx, const PGresult *res);
CBPOOL_DEF int cbpool_tx_attempt(cbpool_tx *tx);
#endif /* CBPOOL_NO_RUN */

#ifndef CBPOOL_NO_CLUSTER
/* clusters: one pool per host (see CLUSTERS) */

typedef struct cbpool_cluster cbpool_cluster;

#define CBPOOL_READ 1           /* a standby (or the primary, see below) */
#define CBPOOL_WRITE 2          /* the primary */

#define CBPOOL_HOST_UNKNOWN 0   /* not checked yet, or down since */
#define CBPOOL_HOST_PRIMARY 1   /* accepts writes */
#define CBPOOL_HOST_STANDBY 2   /* in recovery, or read-only */

typedef struct cbpool_cluster_config {
    cbpool_config pool;     /* every host's pool; conninfo names the hosts;
                               background must be 1, and the logger gets
                               messages prefixed with the host */
    int max_lag_ms;         /* 5000: a standby replaying later than this
                               gets no reads; -1: lag is not checked */
    int check_ms;           /* 1000: role and lag checks at least this often
                               (10 to 3600000) */
    int reads_on_primary;   /* 1: reads go to the primary while no standby
                               is usable; 0: they wait for one */
} cbpool_cluster_config;

typedef struct cbpool_host_stats {
    char host[256];         /* as in conninfo */
    char port[32];          /* "" for libpq's default */
    int role;               /* CBPOOL_HOST_* */
    int down;               /* its last connect found it unreachable */
    int lag_ms;             /* replay lag at the last check, -1 unknown */
    int readable;           /* CBPOOL_READ may go there now */
    int writable;           /* CBPOOL_WRITE goes there now */
    cbpool_stats_t pool;    /* its pool */
} cbpool_host_stats;

CBPOOL_DEF cbpool_cluster_config cbpool_cluster_config_default(void);
CBPOOL_DEF cbpool_cluster *cbpool_cluster_open(const cbpool_cluster_config *cfg,
                                               char *err, size_t errlen);
CBPOOL_DEF PGconn *cbpool_cluster_acquire(cbpool_cluster *cl, int access, int timeout_ms);
CBPOOL_DEF void cbpool_cluster_release(cbpool_cluster *cl, PGconn *conn);
#ifndef CBPOOL_NO_RUN
CBPOOL_DEF int cbpool_cluster_run(cbpool_cluster *cl, int access, cbpool_tx_fn fn, void *arg,
                                  cbpool_run_opts *opts);
#endif
CBPOOL_DEF int cbpool_cluster_hosts(const cbpool_cluster *cl);
CBPOOL_DEF int cbpool_cluster_host_stats(cbpool_cluster *cl, int host,
                                         cbpool_host_stats *out);
#ifndef CBPOOL_NO_PROMETHEUS
CBPOOL_DEF int cbpool_cluster_prometheus(cbpool_cluster *cl, char *buf, size_t len);
#endif
CBPOOL_DEF cbpool *cbpool_cluster_pool(cbpool_cluster *cl, int host);
CBPOOL_DEF void cbpool_cluster_close(cbpool_cluster *cl);
#endif /* CBPOOL_NO_CLUSTER */

#define CBPOOL_ACQUIRE(pool, timeout_ms) \
    cbpool_acquire_at((pool), (timeout_ms), __FILE__, __LINE__)

#ifdef __cplusplus
}
#endif

#endif /* CONNBUDGET_POOL_H */

/* ======================================================================== */

#ifdef CBPOOL_IMPLEMENTATION
#ifndef CBPOOL_IMPLEMENTATION_DONE
#define CBPOOL_IMPLEMENTATION_DONE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef CBPOOL_ASSERT
#include <assert.h>
#define CBPOOL_ASSERT(x) assert(x)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* == [config] tunables, defaults and checks ============================== */

/*
 * Tunables (see OPTIONS at the top, which gives each one's reason).  Those
 * in #ifndef may be defined before the implementation is included; the
 * others are fixed by the protocol or by the server's own ranges.
 */
#define CBPOOL__HIST_BUCKETS 120       /* acquire waits, 2^(1/4) apart: 1 us .. ~15 min */
#define CBPOOL__PEAK_WINDOW 5          /* refresh intervals of demand history */
#ifndef CBPOOL__RECHECK_NS
#define CBPOOL__RECHECK_NS 1000000     /* 1 ms: see cbpool__acquire */
#endif
#ifndef CBPOOL__MAX_ATTEMPTS
#define CBPOOL__MAX_ATTEMPTS 16        /* connects under way at once, plus one */
#endif
#ifndef CBPOOL__SPINS
#define CBPOOL__SPINS 64               /* tries of the lock before sleeping on it */
#endif
#ifndef CBPOOL__PATIENCE_MS
#define CBPOOL__PATIENCE_MS 100        /* a due refresh waits this long for a connection */
#endif
#ifndef CBPOOL__MAINT_POLL_MS
#define CBPOOL__MAINT_POLL_MS 250      /* the maintenance thread looks at least this often */
#endif
#define CBPOOL__FIXED_SIZE 10          /* max_size 0 without a share */
#define CBPOOL__NO_EXTENSION_MS 30000  /* without connbudget: look again this often */
#define CBPOOL__PROBE_NS 30000000000LL /* protocol 1: try 2 again this often */
#define CBPOOL__REFUSED_INTERVALS 10   /* a permanent refusal: retry no sooner than this
                                          many refresh intervals ... */
#define CBPOOL__REFUSED_MS 10000       /* ... or this, before the interval is known */

/* What a server can truthfully answer (see cbpool__check_share): no share
   or budget beyond PostgreSQL's MAX_BACKENDS (2^18 - 1), which bounds
   max_connections; no refresh interval outside the range of the setting
   connbudget.refresh_interval; no share text longer than SHARE_MAX. */
#define CBPOOL__MAX_BACKENDS 262143
#define CBPOOL__MAX_DEMAND 1000000     /* the most connbudget.demand takes */
#define CBPOOL__STALE_ASKS 8           /* quick asks after stale answers */
/* The demand a share answers, when it is no number: the server did not
   say (protocol 1), or it was unbounded. */
#define CBPOOL__DEMAND_UNSAID (-1)
#define CBPOOL__DEMAND_UNBOUNDED (-2)
#define CBPOOL__REFRESH_MIN_MS 10
#define CBPOOL__REFRESH_MAX_MS 3600000
#define CBPOOL__SHARE_MAX 4096         /* the longest share read (about 100 bytes today) */

/*
 * How soon a thread must have come back after its previous release for
 * this release to keep its connection (100 us, about what waking a waiter
 * costs: a thread that does other work between two acquires would leave
 * the connection unused while others wait).  A kept connection goes to the
 * first waiter at the pool's next hand-off or new waiter, whatever its age
 * (a thread in a tight loop takes it back within microseconds, so one that
 * has not is most likely doing something else); while threads wait, the
 * maintenance thread also looks every CBPOOL__WATCH_NS and hands on what has
 * been kept for CBPOOL__KEEP_NS, for pools where nothing else happens.
 */
#ifndef CBPOOL__COME_BACK_NS
#define CBPOOL__COME_BACK_NS 100000
#endif
#ifndef CBPOOL__KEEP_NS
#define CBPOOL__KEEP_NS CBPOOL__COME_BACK_NS
#endif
#ifndef CBPOOL__WATCH_NS
#define CBPOOL__WATCH_NS 1000000
#endif
/* the watch slows down, by doubling, to this while it finds nothing to hand
   on: many pools in one process must not each wake a thousand times a
   second for threads that do come back.  The maintenance thread looks at
   half the watch period, rounded up to poll()'s next millisecond: every
   millisecond at the fastest, about every 9 ms at the slowest */
#ifndef CBPOOL__WATCH_MAX_NS
#define CBPOOL__WATCH_MAX_NS 16000000
#endif

CBPOOL_DEF cbpool_config cbpool_config_default(void)
{
    cbpool_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.conninfo = "";
    cfg.min_idle = 1;
    cfg.max_size = 0;
    cfg.acquire_timeout_ms = 30000;
    cfg.max_waiters = 0;
    cfg.barge_limit = 16;
    cfg.follow_cpu = 1;
    cfg.idle_timeout_ms = 600000;
    cfg.max_lifetime_ms = 1800000;
    cfg.lifetime_jitter_pct = 5;
    cfg.validate_idle_ms = 1000;
    cfg.validate_timeout_ms = 5000;
    cfg.leak_threshold_ms = 0;
    cfg.refresh_ms = 0;
    cfg.connect_timeout_ms = 5000;
    cfg.backoff_initial_ms = 100;
    cfg.backoff_max_ms = 5000;
    cfg.headroom_pct = 25;
    cfg.background = 1;
    cfg.breaker_failures = 5;
    cfg.breaker_after_ms = 3000;
    cfg.breaker_open_ms = 1000;
    return cfg;
}

static void *cbpool__alloc(const cbpool_config *cfg, size_t size)
{
    void *p = cfg->allocator.alloc_fn
                  ? cfg->allocator.alloc_fn(size, cfg->allocator.user_data)
                  : malloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}

static void cbpool__free(const cbpool_config *cfg, void *p)
{
    if (!p)
        return;
    if (cfg->allocator.free_fn)
        cfg->allocator.free_fn(p, cfg->allocator.user_data);
    else
        free(p);
}

static char *cbpool__strdup(const cbpool_config *cfg, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = (char *)cbpool__alloc(cfg, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static int cbpool__config_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return 0;
}

/* The checks connbudget applies to a pod id. */
static int cbpool__config_valid_pod(const char *pod)
{
    size_t n = strlen(pod), i;
    if (n == 0 || n > 63)
        return 0;
    for (i = 0; i < n; i++)
        if (pod[i] < 32 || pod[i] > 126)
            return 0;
    return 1;
}

/* options for the startup packet: the user's, then our pod and session */
static char *cbpool__config_options(const cbpool_config *cfg, const char *user,
                                   const char *pod, const char *session)
{
    size_t n = (user ? strlen(user) : 0) + 2 * strlen(pod) + 80;
    char *out = (char *)cbpool__alloc(cfg, n);
    char *p;
    size_t i;
    if (!out)
        return NULL;
    p = out;
    if (user && *user)
        p += sprintf(p, "%s ", user);
    p += sprintf(p, "-c connbudget.pod=");
    for (i = 0; pod[i]; i++) {
        if (pod[i] == ' ' || pod[i] == '\\')
            *p++ = '\\';
        *p++ = pod[i];
    }
    *p = '\0';
    if (session)
        sprintf(p, " -c connbudget.pool_session=%s", session);
    return out;
}

static int cbpool__config_check(const cbpool_config *cfg, char *err, size_t errlen)
{
#define CBPOOL__NONNEG(field)                                                   \
    if (cfg->field < 0)                                                         \
        return cbpool__config_fail(err, errlen, #field " must not be negative (got %d)", \
                            cfg->field);
    CBPOOL__NONNEG(min_idle)
    CBPOOL__NONNEG(max_size)
    CBPOOL__NONNEG(acquire_timeout_ms)
    CBPOOL__NONNEG(max_waiters)
    CBPOOL__NONNEG(barge_limit)
    if (cfg->follow_cpu != 0 && cfg->follow_cpu != 1)
        return cbpool__config_fail(err, errlen, "follow_cpu must be 0 or 1 (got %d)", cfg->follow_cpu);
    CBPOOL__NONNEG(idle_timeout_ms)
    CBPOOL__NONNEG(max_lifetime_ms)
    CBPOOL__NONNEG(lifetime_jitter_pct)
    CBPOOL__NONNEG(validate_timeout_ms)
    CBPOOL__NONNEG(leak_threshold_ms)
    CBPOOL__NONNEG(refresh_ms)
    CBPOOL__NONNEG(connect_timeout_ms)
    CBPOOL__NONNEG(backoff_initial_ms)
    CBPOOL__NONNEG(backoff_max_ms)
    CBPOOL__NONNEG(headroom_pct)
    CBPOOL__NONNEG(breaker_failures)
    CBPOOL__NONNEG(breaker_after_ms)
    CBPOOL__NONNEG(breaker_open_ms)
#undef CBPOOL__NONNEG
    if (cfg->breaker_failures > 0 && cfg->breaker_open_ms == 0)
        return cbpool__config_fail(err, errlen,
                            "breaker_open_ms must be positive while breaker_failures is set");
    if (cfg->breaker_open_ms > 3600000)
        return cbpool__config_fail(err, errlen, "breaker_open_ms must be at most 3600000 (got %d)",
                            cfg->breaker_open_ms);
    if (cfg->validate_idle_ms < -1)
        return cbpool__config_fail(err, errlen,
                            "validate_idle_ms must be -1 (never) or >= 0 (got %d)",
                            cfg->validate_idle_ms);
    if (cfg->max_size > 0 && cfg->min_idle > cfg->max_size)
        return cbpool__config_fail(err, errlen, "min_idle (%d) must not exceed max_size (%d)",
                            cfg->min_idle, cfg->max_size);
    if (cfg->lifetime_jitter_pct > 50)
        return cbpool__config_fail(err, errlen, "lifetime_jitter_pct must be at most 50 (got %d)",
                            cfg->lifetime_jitter_pct);
    if (cfg->backoff_max_ms < cfg->backoff_initial_ms)
        return cbpool__config_fail(err, errlen,
                            "backoff_max_ms (%d) must not be below backoff_initial_ms (%d)",
                            cfg->backoff_max_ms, cfg->backoff_initial_ms);
    if (cfg->connect_timeout_ms == 0 || cfg->validate_timeout_ms == 0)
        return cbpool__config_fail(err, errlen,
                            "connect_timeout_ms and validate_timeout_ms must be positive");
    if ((cfg->allocator.alloc_fn == NULL) != (cfg->allocator.free_fn == NULL))
        return cbpool__config_fail(err, errlen,
                            "allocator needs both alloc_fn and free_fn, or neither");
    return 1;
}

/* == [state] the pool's state, one struct per subsystem ================== */

/*
 * A connection's state.  IDLE, IN_USE and CHECKING change under the lock.
 * PARKING and PARKED belong to the per-thread fast path: a clean release
 * with nobody waiting parks the connection without the lock (IN_USE ->
 * PARKING -> PARKED), and the same thread's next acquire takes it back with
 * one compare-and-swap (PARKED -> IN_USE).  Under the lock a parked
 * connection still counts as in use until cbpool__fast_drain_locked() moves it to
 * the idle stack, which every locked path does before it needs it.
 *
 * KEPT belongs to the contended path: a clean release while other threads
 * wait may keep the connection for its releasing thread (IN_USE -> PARKING
 * -> KEPT, without the lock), at most barge_limit times in a row.  The
 * connection's keep_ticket is the claim: the releasing thread's next acquire
 * takes the connection back by swapping its ticket for 0, and a thread that
 * finds the connection kept at a hand-off or when it starts waiting (or
 * maintenance, once it has been kept for CBPOOL__KEEP_NS, or the pool
 * closing) reclaims it the same way under the lock and hands it to the
 * first waiter.  Whoever swaps the ticket owns the connection; KEPT with a
 * ticket of 0 is the moment between the swap and the next state.
 */
typedef enum cbpool__state {
    CBPOOL__FREE,         /* record kept for reuse, no connection */
    CBPOOL__IDLE,
    CBPOOL__IN_USE,
    CBPOOL__CHECKING,     /* taken by maintenance for a check or a refresh */
    CBPOOL__PARKING,      /* being parked or kept by its releasing thread */
    CBPOOL__PARKED,       /* released without the lock */
    CBPOOL__KEPT          /* released while others wait, for its thread */
} cbpool__state;

/*
 * What a release may do without the lock (pool->fast.mode): park the
 * connection while nobody waits, keep it for its thread's next acquire
 * while others wait, or nothing.
 */
#define CBPOOL__FAST_PARK 0
#define CBPOOL__FAST_OFF 1
#define CBPOOL__FAST_KEEP 2

/*
 * Records outlive their connections: a destroyed connection's record goes
 * to the pool's spare list and is reused, and all are freed with the pool,
 * so the fast path may look at the record a thread used last.  The fields
 * the fast path touches come first; the padding keeps them off the cache
 * line of the next record.  state, pg and the acquired_* fields are read
 * without the lock and accessed atomically.
 */
typedef struct cbpool__conn {
    char pad0_[64];
    int state;                  /* cbpool__state */
    int acquired_line;
    PGconn *pg;
    int64_t last_used_ns;       /* last release */
    int64_t retire_ns;          /* lifetime deadline (with jitter), 0 none */
    int64_t acquired_ns;        /* 0 while parked */
    const char *acquired_file;
    uint64_t fast_acquires;     /* acquires through the fast path */
    uint64_t keep_ticket;       /* != 0: kept, and the claim on it */
    int64_t kept_ns;            /* when it was kept */
    uint64_t keep_seq;          /* tickets issued (by its holder) */
    uint64_t barged_acquires;   /* taken back while others waited */
    int barges;                 /* kept this many times in a row */
    int cpu;                    /* CPU of its last release + 1, 0 unknown */
    uint64_t moved;             /* hand-offs that moved the thread to cpu */
    int leak_reported;
    int releasing;              /* cbpool_release() is resetting it */
    int held_for_answer;        /* kept beyond the share for one more ask */
    int close_reason;           /* cbpool_close_reason, set when it goes */
    int64_t created_ns;
    struct cbpool__conn *next;  /* in all-connections list, or spare list */
    char pad_[64];
} cbpool__conn;

#define CBPOOL__LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define CBPOOL__STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

typedef struct cbpool__waiter {
    pthread_cond_t cond;
    cbpool__conn *conn;         /* handed over, or NULL */
    struct cbpool__waiter *next;
} cbpool__waiter;

typedef struct cbpool__attempt {
    PGconn *pg;
    int64_t started_ns;
    char why[288];              /* failed before libpq: the reason */
    int64_t deadline_ns;
    PostgresPollingStatusType status;
    int for_refresh;            /* opened to renew a saturated pool's share */
} cbpool__attempt;

/*
 * struct cbpool is one sub-struct per subsystem.  Each is written only by
 * its own family of functions (cbpool__fast_*, cbpool__slots_*, ...), under
 * the lock unless its comment says otherwise; any function may read any of
 * them under the lock.  The fields the lock-free path reads come first, on
 * a cache line of their own.
 */

/* [handoff] read by every acquire and release without the lock.  id,
   observe and writes_only are set by cbpool__open and never change; mode
   is written by cbpool__fast_mode_locked (every unlock) and turned off by
   cbpool__fast_off_locked, both under the lock, and read without it. */
typedef struct cbpool__fast {
    uint64_t id;                /* unique per pool, for the thread-locals */
    int observe;                /* hooks or log_debug: events to report */
    int writes_only;            /* target_session_attrs=read-write or primary:
                                   never hand out a read-only session */
    int mode;                   /* CBPOOL__FAST_*: what a release may do
                                   without the lock */
} cbpool__fast;

/* [slots] the connections, the idle stack and the line of waiters:
   written by cbpool__slots_* (and the acquire, release and close that call
   them), under the lock.  closing, closed_final and out_at_close are
   written by cbpool_close and by the last release after it. */
typedef struct cbpool__slots {
    cbpool__conn *conns;        /* every open connection */
    cbpool__conn *spare;        /* records to reuse */
    cbpool__conn **idle;        /* idle stack, most recently used on top */
    int idle_count;
    int idle_capacity;
    int total;
    int in_use;
    cbpool__waiter *wait_head;
    cbpool__waiter *wait_tail;
    int waiters;
    pthread_cond_t ready_cond;  /* a connection arrived (wait_ready) */
    int ready_waiters;          /* threads in cbpool_wait_ready() */
    int closing;
    int closed_final;           /* close() has counted what is still out */
    int out_at_close;           /* connections out after close(); the pool is
                                   freed when the last one comes back */
} cbpool__slots;

/* [maint] the maintenance thread and its pacing: written by cbpool__maint_*
   under the lock (thread and wake_fds by cbpool__open and cbpool_close). */
typedef struct cbpool__maint {
    pthread_t thread;
    int thread_started;
    int wake_fds[2];            /* wakes the maintenance thread */
    int wake_pending;
    int running;                /* one thread maintains at a time */
    int watch_armed;            /* maintenance looks at kept connections
                                   every watch_ns */
    int64_t watch_ns;           /* CBPOOL__WATCH_NS .. CBPOOL__WATCH_MAX_NS */
    uint64_t watch_expired;     /* barges_expired at the last look */
} cbpool__maint;

/* The share refresh (see cbpool__share_to_locked for its transitions). */
typedef enum cbpool__refresh_state {
    CBPOOL__REFRESH_IDLE,       /* nothing to do before share.next_ns */
    CBPOOL__REFRESH_WANTED,     /* due: waiting for a connection to come
                                   back, since share.wanted_ns */
    CBPOOL__REFRESH_CONNECTING, /* due, and a connection is being opened
                                   for it (a saturated pool, a share of 0) */
    CBPOOL__REFRESH_ON_CONNECTION, /* share.conn is set aside for it */
    CBPOOL__REFRESH_IN_FLIGHT   /* the call is under way (maintenance, or a
                                   releasing thread on its connection) */
} cbpool__refresh_state;

/* [share] the budget: the share and the sizes drawn from it, the demand
   history, the refresh's state and the protocol.  Written by cbpool__share_*
   under the lock (the refresh's answer is read outside it, then taken
   under it). */
typedef struct cbpool__share {
    int extension;              /* -1 unknown, 0 no, 1 yes */
    int size;                   /* the share; -1 unknown */
    int server_min;
    int budget;
    int limit;                  /* current upper bound */
    int floor;                  /* connections kept */
    int last_demand;            /* reported at the last refresh */
    int reflected_demand;       /* the demand the current share knows about */
    int stale_answers;          /* answers in a row that did not know the
                                   demand just reported */
    int reported;               /* a refresh has succeeded */
    int protocol;               /* the protocol the server speaks: 2
                                   (connbudget.demand/share), 1
                                   (pool_share()), 0 not known yet */
    int64_t protocol_probed_ns; /* when protocol 2 was last tried */
    int invalid;                /* what was wrong with the last invalid
                                   share answer (logged once); 0 after a
                                   valid one; -1 a withdrawn share */
    int peaks[CBPOOL__PEAK_WINDOW]; /* busiest moment of each recent interval */
    int peak_next;
    int interval_peak;          /* busiest moment since the last rotation */
    int64_t peak_rotated_ns;
    int refresh_ms;             /* current refresh interval */
    int64_t next_ns;            /* the next refresh is due then */
    cbpool__refresh_state state;      /* written only by cbpool__share_to_locked */
    int64_t wanted_ns;          /* WANTED since then */
    cbpool__conn *conn;         /* set aside for the refresh (CHECKING): in
                                   ON_CONNECTION, or for the next one while
                                   one is IN_FLIGHT */
} cbpool__share;

/* [connect] connect attempts: attempts[] and nattempts belong to the one
   thread that maintains (no lock); the rest is written by cbpool__connect_*
   under the lock. */
typedef struct cbpool__connect {
    cbpool__attempt attempts[CBPOOL__MAX_ATTEMPTS];
    int nattempts;
    int timeout_ms;             /* the next attempt's deadline: connect_timeout_ms,
                                   doubled by each that timed out (owned like
                                   attempts[]) */
    int connecting;             /* == nattempts, readable under lock */
    int ramp;                   /* connects allowed in one growth step */
    int64_t ramp_at_ns;         /* the next growth step starts no earlier */
    int session_option;         /* 0 once a server refused the option */
    char last_error[256];       /* the last failure, said once in a row */
} cbpool__connect;

/* [breaker] the circuit breaker, connect backoff and permanent refusals:
   written by cbpool__breaker_* under the lock; unreachable is also read
   without it (a cluster routes by it), so it is stored atomically. */
typedef struct cbpool__breaker {
    int state;                  /* CBPOOL_BREAKER_* */
    int unreachable;            /* connects failed in a row as unreachable */
    int64_t unreachable_since_ns; /* start of the first of them */
    int reopens;                /* failed probes since it opened */
    int64_t until_ns;           /* open until then, then a probe */
    int failures;               /* connects failed in a row, for any reason */
    int64_t backoff_until_ns;   /* no connect before then */
    int refused;                /* the last answer was a permanent refusal
                                   (42501, 53400): acquirers fail fast while
                                   no connection is held */
    char refusal[256];          /* its message, logged once */
} cbpool__breaker;

/* [member] what a cluster needs from one of its host's pools: written by
   cbpool__member_* under the lock and stored atomically (the cluster reads
   them without it); label by cbpool_cluster_open before anyone scrapes. */
typedef struct cbpool__member {
    int check_ms;               /* 0: not in a cluster; else check this often */
    const char *label;          /* "host:port" for metrics, owned by the cluster */
    int role;                   /* CBPOOL_HOST_* */
    int lag_ms;                 /* at the last check, -1 unknown */
    int timeline;               /* a primary's timeline at the last check */
    int64_t primary_ns;         /* when it was last seen become the primary */
    int invalid;                /* what was wrong with the last invalid host
                                   check answer (logged once); 0 after a
                                   valid one */
} cbpool__member;

/* [metrics] counters under the lock, bumped by CBPOOL__COUNT from the
   subsystem whose event they count; the histogram and the longest wait
   are updated with atomics by acquire, which takes the lock only once (the
   histogram's total is the number of acquires). */
typedef struct cbpool__stats {
    cbpool_stats_t counts;
    /* the per-record counters of connections that left the pool, folded in
       when they are unlinked (under the lock) */
    uint64_t gone_fast, gone_barged, gone_moved;
    uint64_t wait_us_max;
    uint64_t hist[CBPOOL__HIST_BUCKETS];
} cbpool__stats;

#define CBPOOL__COUNT(pool, counter) ((pool)->stats.counts.counter++)

struct cbpool {
    cbpool_config cfg;          /* the user's, with the pool's own strings */
    struct {                    /* the pool's copies, set at open */
        char *conninfo;
        char *application_name;
        char *pod;
        char *options;          /* user's options + -c connbudget.pod=... */
        char *options_plain;    /* the same without connbudget.pool_session */
        char session[20];       /* this pool's connbudget.pool_session */
    } ident;
    cbpool__fast fast;          /* read without the lock */
    char pad_[64];
    pthread_mutex_t lock;
    pthread_condattr_t condattr;
    uint64_t rng;               /* cbpool__rand, under the lock */
    cbpool__slots slots;
    cbpool__maint maint;
    cbpool__share share;
    cbpool__connect connect;
    cbpool__breaker breaker;
    cbpool__member member;
    cbpool__stats stats;
};

/*
 * Messages are formatted under the pool lock into a cbpool__msg and handed
 * to the logger after the lock is released, so that a logger may call back
 * into the pool (cbpool_stats(), say).
 */
typedef struct cbpool__msg {
    cbpool_log_level level;
    const char *id;
    char text[512];
} cbpool__msg;

/*
 * What each subsystem offers the others, in the order of the sections
 * below (each is defined, with its comment, in its own section).
 */
/* [handoff] */
static void cbpool__fast_mode_locked(cbpool *pool);
static int cbpool__fast_drain_locked(cbpool *pool, int reclaim);
/* [slots] */
static void cbpool__slots_offer_locked(cbpool *pool, cbpool__conn *c);
static void cbpool__slots_unlink_locked(cbpool *pool, cbpool__conn *c);
static void cbpool__slots_idle_remove_locked(cbpool *pool, cbpool__conn *c);
static int cbpool__slots_reserve_locked(cbpool *pool);
static cbpool__conn *cbpool__slots_new_conn(cbpool *pool);
static void cbpool__slots_destroy(cbpool *pool, cbpool__conn *c);
static void cbpool__slots_wake_waiters_locked(cbpool *pool);
static void cbpool__slots_add_locked(cbpool *pool, cbpool__conn *c);
static void cbpool__slots_unpark_locked(cbpool *pool, cbpool__conn *c);
static void cbpool__slots_reclaim_locked(cbpool *pool, cbpool__conn *c);
static void cbpool__timed_wait(cbpool *pool, pthread_cond_t *cond, int64_t ns);
/* [maint] */
static int cbpool__maintain(cbpool *pool, int wait_ms);
static void cbpool__maint_wake(cbpool *pool);
static void cbpool__maint_woken(cbpool *pool);
/* [share] */
static void cbpool__share_resize_locked(cbpool *pool);
static void cbpool__share_note_busy_locked(cbpool *pool);
static int cbpool__share_wanted(const cbpool *pool);
static int cbpool__share_claim_locked(cbpool *pool, cbpool__conn *c);
static int cbpool__share_begin_on_release_locked(cbpool *pool);
static int cbpool__share_end_locked(cbpool *pool, cbpool__conn *c, int broken);
static cbpool__conn *cbpool__share_pick_locked(cbpool *pool, int64_t now);
static int cbpool__share_connect_wanted_locked(cbpool *pool, int64_t now);
static void cbpool__share_connecting_locked(cbpool *pool);
static void cbpool__share_connect_ended_locked(cbpool *pool);
static int cbpool__share_take_new_locked(cbpool *pool, cbpool__conn *c, int for_refresh);
static void cbpool__share_close_locked(cbpool *pool);
static int64_t cbpool__share_next_look(const cbpool *pool, int64_t now);
static void cbpool__share_due_locked(cbpool *pool, int64_t when);
static void cbpool__share_learn_pace_locked(cbpool *pool, int refresh_ms);
static int cbpool__share_refresh(cbpool *pool, cbpool__conn *c);
static void cbpool__share_leave(cbpool *pool, PGconn *pg, int protocol);
/* [connect] */
static void cbpool__connect_start(cbpool *pool, int for_refresh);
static void cbpool__connect_poll(cbpool *pool, int wait_ms);
static void cbpool__connect_ramp_restart_locked(cbpool *pool);
/* [breaker] */
static void cbpool__breaker_answered_locked(cbpool *pool, cbpool__msg *msg);
static void cbpool__breaker_unreachable_locked(cbpool *pool, int64_t started_ns,
                                               cbpool__msg *msg);
static void cbpool__breaker_backoff_locked(cbpool *pool, int outcome, const char *text);
static void cbpool__breaker_refused_locked(cbpool *pool, const char *line, cbpool__msg *msg);
static void cbpool__breaker_connected_locked(cbpool *pool, cbpool__msg *msg);
static void cbpool__breaker_gate_locked(cbpool *pool, int64_t now, int *start,
                                        int *refresh_connect);
static int cbpool__breaker_fail_fast(const cbpool *pool);
/* [life] */
static void cbpool__free_pool(cbpool *pool);
/* [metrics] */
static void cbpool__stats_record_wait(cbpool *pool, int64_t waited_ns);
/* [member]: the hook a cluster's host pool has (no-ops with CBPOOL_NO_CLUSTER) */
#ifndef CBPOOL_NO_CLUSTER
static int cbpool__member_down(const cbpool *pool);
static void cbpool__member_connected_locked(cbpool *pool, PGconn *pg, int64_t now);
static void cbpool__member_unreachable_locked(cbpool *pool);
static void cbpool__member_answered_locked(cbpool *pool);
static int cbpool__member_check(cbpool *pool, PGconn *pg);
#else
#define cbpool__member_down(pool) 0
#define cbpool__member_connected_locked(pool, pg, now) ((void)0)
#define cbpool__member_unreachable_locked(pool) ((void)0)
#define cbpool__member_answered_locked(pool) ((void)0)
#define cbpool__member_check(pool, pg) 0
#endif

/*
 * The pool's critical sections are a few hundred nanoseconds.  When the
 * lock is taken, spinning briefly (the holder is most likely running on
 * another core) is cheaper than a sleep and a wake-up through the kernel.
 */
static void cbpool__lock(cbpool *pool)
{
    int spins;
    for (spins = 0; spins < CBPOOL__SPINS; spins++) {
        if (pthread_mutex_trylock(&pool->lock) == 0)
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    pthread_mutex_lock(&pool->lock);
}

/* Every unlock brings the lock-free path's mode up to date first. */
static void cbpool__unlock(cbpool *pool)
{
    cbpool__fast_mode_locked(pool);
    pthread_mutex_unlock(&pool->lock);
}

/* == [base] clock, randomness, logging, libpq helpers ==================== */

static __thread cbpool_error cbpool__errno = CBPOOL_OK;
static uint64_t cbpool__pool_ids;

static int64_t cbpool__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* xorshift64*; called under the pool lock */
static uint64_t cbpool__rand(cbpool *pool)
{
    pool->rng ^= pool->rng >> 12;
    pool->rng ^= pool->rng << 25;
    pool->rng ^= pool->rng >> 27;
    return pool->rng * 2685821657736338717ULL;
}

/* full jitter: uniform in [0, min(cap, base * 2^n)] milliseconds */
static int64_t cbpool__backoff_ns(cbpool *pool, int base_ms, int cap_ms, int n)
{
    int64_t ceiling = base_ms;
    int i;
    for (i = 0; i < n && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    return (int64_t)(cbpool__rand(pool) % (uint64_t)(ceiling + 1)) * 1000000;
}

/* base_ms scaled by a factor drawn uniformly from [lo, hi] percent */
static int64_t cbpool__jitter_ns(cbpool *pool, int base_ms, int lo_pct, int hi_pct)
{
    uint64_t span = (uint64_t)(hi_pct - lo_pct) + 1;
    int64_t pct = lo_pct + (int64_t)(cbpool__rand(pool) % span);
    return (int64_t)base_ms * 1000000 / 100 * pct;
}

static void cbpool__default_log(void *user, cbpool_log_level level,
                                const char *id, const char *message)
{
    static const char *names[] = {"error", "warning", "info", "debug"};
    (void)user;
    if (level <= CBPOOL_LOG_WARN)
        fprintf(stderr, "cbpool %s [%s]: %s\n", names[level], id, message);
}

static void cbpool__format(cbpool__msg *m, cbpool_log_level level, const char *id,
                           const char *fmt, ...)
{
    va_list ap;
    m->level = level;
    m->id = id;
    va_start(ap, fmt);
    vsnprintf(m->text, sizeof m->text, fmt, ap);
    va_end(ap);
}

static void cbpool__emit(cbpool *pool, const cbpool__msg *m)
{
    if (!m->id)
        return;
    if (pool->cfg.logger.func)
        pool->cfg.logger.func(pool->cfg.logger.user_data, m->level, m->id, m->text);
    else
        cbpool__default_log(NULL, m->level, m->id, m->text);
}

/* SQLSTATE of a result, "" if none */
static void cbpool__sqlstate(const PGresult *res, char out[6])
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(out, 6, "%s", s ? s : "");
}

/* first line of libpq's error text, for logs */
static void cbpool__first_line(const char *msg, char *out, size_t len)
{
    size_t n = strcspn(msg, "\n");
    if (n >= len)
        n = len - 1;
    memcpy(out, msg, n);
    out[n] = '\0';
}

/*
 * Notices and warnings the server sends on a pooled connection (a RAISE
 * WARNING, a connect-time WARNING, the FATAL of a terminated idle
 * connection) go to the pool's logger, id "notice", instead of libpq's
 * default of printing them to stderr.  Called by libpq on the thread using
 * the connection; under the pool's lock they are kept and logged after it.
 * The pool outlives its connections, so arg is valid.
 */
typedef struct cbpool__notice_sink {
    cbpool__msg msgs[4];
    int n;
} cbpool__notice_sink;

/* set while this thread reads connections under the pool's lock: notices
   are kept here and logged after the lock is released */
static __thread cbpool__notice_sink *cbpool__deferred_notices;

/* FATAL and PANIC notices libpq delivered on this thread: the error a
   backend sends when it ends an idle connection, before its socket closes */
static __thread unsigned cbpool__fatal_notices;

static void cbpool__notice(void *arg, const PGresult *res)
{
    cbpool *pool = (cbpool *)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *text = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    cbpool_log_level level = CBPOOL_LOG_INFO;
    cbpool__msg msg;

    if (!sev)
        sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
    if (!sev)
        sev = "NOTICE";
    if (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0)
        cbpool__fatal_notices++;
    if (strcmp(sev, "WARNING") == 0 || strcmp(sev, "ERROR") == 0 ||
        strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0)
        level = CBPOOL_LOG_WARN;
    else if (strncmp(sev, "DEBUG", 5) == 0)
        level = CBPOOL_LOG_DEBUG;
    if (text)
        cbpool__format(&msg, level, "notice", "server %s %s: %s", sev,
                       code ? code : "00000", text);
    else {
        char line[400];
        cbpool__first_line(PQresultErrorMessage(res), line, sizeof line);
        cbpool__format(&msg, level, "notice", "server: %s", line);
    }
    if (cbpool__deferred_notices) {
        cbpool__notice_sink *sink = cbpool__deferred_notices;
        if (sink->n < (int)(sizeof sink->msgs / sizeof sink->msgs[0]))
            sink->msgs[sink->n++] = msg;
        return;
    }
    cbpool__emit(pool, &msg);
}

/*
 * Lifecycle events, for cfg.hooks and the debug log: only when one of them
 * is set (pool->fast.observe), always outside the lock.
 */
static void cbpool__debug(cbpool *pool, const char *id, const char *fmt, ...)
{
    cbpool__msg m;
    va_list ap;
    m.level = CBPOOL_LOG_DEBUG;
    m.id = id;
    va_start(ap, fmt);
    vsnprintf(m.text, sizeof m.text, fmt, ap);
    va_end(ap);
    cbpool__emit(pool, &m);
}

static void cbpool__on_connect(cbpool *pool, PGconn *pg, int64_t started_ns,
                               const char *error)
{
    uint64_t us = (uint64_t)(cbpool__now_ns() - started_ns) / 1000;
    if (pool->cfg.hooks.on_connect)
        pool->cfg.hooks.on_connect(pool->cfg.hooks.user_data, pg, us, error);
    if (pool->cfg.log_debug) {
        if (pg)
            cbpool__debug(pool, "connect", "connected in %llu us (backend %d)",
                          (unsigned long long)us, PQbackendPID(pg));
        else
            cbpool__debug(pool, "connect", "connect failed after %llu us: %s",
                          (unsigned long long)us, error ? error : "");
    }
}

static void cbpool__on_close(cbpool *pool, cbpool__conn *c)
{
    uint64_t us = (uint64_t)(cbpool__now_ns() - c->created_ns) / 1000;
    cbpool_close_reason r = (cbpool_close_reason)c->close_reason;
    if (pool->cfg.hooks.on_close)
        pool->cfg.hooks.on_close(pool->cfg.hooks.user_data, c->pg, r, us);
    if (pool->cfg.log_debug)
        cbpool__debug(pool, "close", "closing a connection (backend %d) after %llu us: %s",
                      PQbackendPID(c->pg), (unsigned long long)us,
                      cbpool_close_reason_name(r));
}

/* An acquire (after waiting ns) or a release (after holding it ns). */
static void cbpool__on_use(cbpool *pool, PGconn *pg, int64_t ns, int acquire)
{
    uint64_t us = (uint64_t)ns / 1000;
    void (*hook)(void *, PGconn *, uint64_t) =
        acquire ? pool->cfg.hooks.on_acquire : pool->cfg.hooks.on_release;
    if (hook)
        hook(pool->cfg.hooks.user_data, pg, us);
    if (pool->cfg.log_debug)
        cbpool__debug(pool, acquire ? "acquire" : "release", "%s (backend %d) after %s %llu us",
                      acquire ? "acquired" : "released", PQbackendPID(pg),
                      acquire ? "waiting" : "holding it", (unsigned long long)us);
}

/* Is the socket closed or in error?  A cheap check with no round trip:
   a server that restarted or terminated the backend has sent an error and
   closed the connection, which shows as readable. */
static int cbpool__looks_alive(PGconn *pg)
{
    struct pollfd pfd;
    int rounds;
    unsigned fatal = cbpool__fatal_notices;
    if (PQstatus(pg) != CONNECTION_OK)
        return 0;
    /* read whatever is waiting: NOTIFY and ParameterStatus messages are
       fine; a terminated backend's FATAL error (a notice to libpq, as no
       query runs) means the connection is gone, although the EOF that
       follows it may not be there yet */
    for (rounds = 0; rounds < 4; rounds++) {
        pfd.fd = PQsocket(pg);
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (pfd.fd < 0)
            return 0;
        if (poll(&pfd, 1, 0) <= 0)
            break;
        if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
            return 0;
        if (!PQconsumeInput(pg) || PQstatus(pg) != CONNECTION_OK || PQisBusy(pg) ||
            cbpool__fatal_notices != fatal)
            return 0;
    }
    return rounds < 4 && PQtransactionStatus(pg) == PQTRANS_IDLE;
}

/* Run one statement with a deadline; returns the result or NULL. */
static PGresult *cbpool__exec_deadline(PGconn *pg, const char *sql, int nparams,
                                       const char *const *values, int timeout_ms)
{
    int64_t deadline = cbpool__now_ns() + (int64_t)timeout_ms * 1000000;
    PGresult *res, *last = NULL;
    int sent = nparams > 0
                   ? PQsendQueryParams(pg, sql, nparams, NULL, values, NULL, NULL, 0)
                   : PQsendQuery(pg, sql);
    if (!sent)
        return NULL;
    for (;;) {
        while (!PQisBusy(pg)) {
            res = PQgetResult(pg);
            if (!res)
                return last;
            if (last)
                PQclear(last);
            last = res;
        }
        {
            struct pollfd pfd;
            int64_t left = deadline - cbpool__now_ns();
            if (left <= 0)
                break;
            pfd.fd = PQsocket(pg);
            pfd.events = POLLIN;
            pfd.revents = 0;
            if (poll(&pfd, 1, (int)(left / 1000000) + 1) < 0 && errno != EINTR)
                break;
            if (!PQconsumeInput(pg))
                break;
        }
    }
    if (last)
        PQclear(last);
    return NULL;
}

/* A round trip proves the connection works (an empty query). */
static int cbpool__validate(cbpool *pool, PGconn *pg)
{
    PGresult *res = cbpool__exec_deadline(pg, "", 0, NULL,
                                          pool->cfg.validate_timeout_ms);
    int ok = res && PQresultStatus(res) == PGRES_EMPTY_QUERY &&
             PQstatus(pg) == CONNECTION_OK;
    if (res)
        PQclear(res);
    return ok;
}

/*
 * A session that cannot write: a hot standby, or read-only by default.
 * Servers from 14 on report both as they change (a promotion included), so
 * this costs no round trip; older servers report neither, and libpq's own
 * target_session_attrs check at connect time is all there is.
 */
static int cbpool__read_only(PGconn *pg)
{
    const char *hs = PQparameterStatus(pg, "in_hot_standby");
    const char *ro = PQparameterStatus(pg, "default_transaction_read_only");
    return (hs && strcmp(hs, "on") == 0) || (ro && strcmp(ro, "on") == 0);
}

/* == [handoff] the lock-free path: park, keep, take back, drain ========== */

/* the connection this thread acquired last, and its pool (the pointer and
   the id: a new pool may reuse a freed one's address) */
static __thread const cbpool *cbpool__last_pool;
static __thread uint64_t cbpool__last_pool_id;
static __thread cbpool__conn *cbpool__last_conn;
/* the ticket of the last connection if this thread kept it (see KEPT) */
static __thread uint64_t cbpool__keep_ticket;
/* when this thread last released a connection of its last pool, and
   whether its current acquire came within CBPOOL__COME_BACK_NS of it */
static __thread int64_t cbpool__released_ns;
static __thread int cbpool__came_back;

/*
 * Releases may park connections without the lock only while nobody waits,
 * and keep them for their thread only while others wait (and barge_limit is
 * not 0); either only while the pool is open, no refresh waits for a
 * connection and the pool is within its limit.  Every unlock brings
 * fast.mode up to date (cbpool__unlock); a thread about to wait turns it
 * off first and then drains (see cbpool__fast_drain_locked).
 */
static void cbpool__fast_mode_locked(cbpool *pool)
{
    int mode;
    if (pool->slots.closing || cbpool__share_wanted(pool) ||
        pool->slots.total > pool->share.limit)
        mode = CBPOOL__FAST_OFF;
    else if (pool->slots.waiters > 0)
        mode = pool->cfg.barge_limit > 0 ? CBPOOL__FAST_KEEP : CBPOOL__FAST_OFF;
    else
        mode = CBPOOL__FAST_PARK;
    if (mode != __atomic_load_n(&pool->fast.mode, __ATOMIC_RELAXED))
        __atomic_store_n(&pool->fast.mode, mode, __ATOMIC_SEQ_CST);
}

/* No more parking or keeping, at once (a thread about to wait, or close);
   with the lock.  The next unlock recomputes the mode. */
static void cbpool__fast_off_locked(cbpool *pool)
{
    __atomic_store_n(&pool->fast.mode, CBPOOL__FAST_OFF, __ATOMIC_SEQ_CST);
}

/*
 * follow_cpu.  A thread that a connection is handed to has slept while
 * others used it, and the scheduler wakes it wherever it likes; but the
 * connection's backend (on a local server) runs where its last user ran,
 * and a client thread and its backend on different CPUs pay an
 * inter-processor interrupt on every round trip -- on two virtual CPUs
 * 32 threads taking turns on 4 connections then carry half of what the
 * same 4 connections do when the pairs share a CPU.  So a release notes
 * its CPU, and a thread handed the connection after waiting moves there
 * once: its affinity mask is set to that CPU and at once back to what it
 * was (the thread stays where it is until the scheduler moves it, which
 * with a backend answering it on that CPU it has no reason to).  A thread
 * whose mask does not include that CPU is not moved.  Linux only, and only
 * with the GNU declarations of <sched.h>; elsewhere nothing happens.
 */
#if defined(__linux__) && defined(CPU_ZERO) && defined(CPU_SETSIZE)
static int cbpool__this_cpu(void)
{
    int cpu = sched_getcpu();
    return cpu < 0 ? 0 : cpu + 1;
}

/* Move the calling thread to CPU cpu - 1 unless it is there or may not
   run there; its affinity mask is as it was on return.  1 if it moved. */
static int cbpool__follow(int cpu)
{
    cpu_set_t mine, there;
    int here = sched_getcpu();
    if (cpu <= 0 || cpu > CPU_SETSIZE || here < 0 || here == cpu - 1)
        return 0;
    if (sched_getaffinity(0, sizeof mine, &mine) != 0 || !CPU_ISSET(cpu - 1, &mine))
        return 0;
    CPU_ZERO(&there);
    CPU_SET(cpu - 1, &there);
    if (sched_setaffinity(0, sizeof there, &there) != 0)
        return 0;
    /* the mask it had a moment ago: only a cpuset changed meanwhile could
       refuse it, and then once more is all that can be done */
    if (sched_setaffinity(0, sizeof mine, &mine) != 0)
        (void)sched_setaffinity(0, sizeof mine, &mine);
    return 1;
}
#else
static int cbpool__this_cpu(void)
{
    return 0;
}

static int cbpool__follow(int cpu)
{
    (void)cpu;
    return 0;
}
#endif

/* what a drain does with kept connections */
#define CBPOOL__RECLAIM_STALE 0   /* reclaim those kept longer than CBPOOL__KEEP_NS */
#define CBPOOL__RECLAIM_ALL 1     /* reclaim all: a thread would wait, or close */

/*
 * Move parked connections to the idle stack, and hand kept connections
 * whose thread has not taken them back within CBPOOL__KEEP_NS (all of them
 * with CBPOOL__RECLAIM_ALL) to the first waiter; called with the lock.  A
 * connection being parked or kept right now is waited for: its thread is
 * between two stores.  Together with the releasing thread's check of
 * fast.mode after it marked the connection PARKING, this makes sure that a
 * thread which turned fast.mode off and then drained cannot miss a
 * connection parked or kept meanwhile.  Returns how many stay kept.
 */
static int cbpool__fast_drain_locked(cbpool *pool, int reclaim)
{
    cbpool__conn *c;
    int64_t now = 0;
    int kept = 0;
    for (c = pool->slots.conns; c; c = c->next) {
        int st = __atomic_load_n(&c->state, __ATOMIC_SEQ_CST);
        uint64_t ticket = 0;
        int spins = 0;
        for (;;) {
            if (st == CBPOOL__KEPT) {
                ticket = __atomic_load_n(&c->keep_ticket, __ATOMIC_ACQUIRE);
                if (ticket)
                    break;   /* else its thread is taking it back */
            } else if (st != CBPOOL__PARKING)
                break;
            if (++spins > 100)
                sched_yield();
            st = __atomic_load_n(&c->state, __ATOMIC_SEQ_CST);
        }
        if (st == CBPOOL__PARKED &&
            __atomic_compare_exchange_n(&c->state, &st, CBPOOL__IDLE, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            cbpool__slots_unpark_locked(pool, c);
        } else if (st == CBPOOL__KEPT) {
            int64_t kept_ns = __atomic_load_n(&c->kept_ns, __ATOMIC_RELAXED);
            if (!now)
                now = cbpool__now_ns();
            if ((reclaim == CBPOOL__RECLAIM_ALL || now - kept_ns >= CBPOOL__KEEP_NS) &&
                __atomic_compare_exchange_n(&c->keep_ticket, &ticket, (uint64_t)0, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
                if (!pool->slots.closing)
                    CBPOOL__COUNT(pool, barges_expired);
                cbpool__slots_reclaim_locked(pool, c);
            } else
                kept++;
        }
    }
    return kept;
}

/* The connection this thread used last if it belongs to this pool, or NULL */
static cbpool__conn *cbpool__fast_my_last(const cbpool *pool)
{
    return cbpool__last_pool == pool && cbpool__last_pool_id == pool->fast.id
               ? cbpool__last_conn
               : NULL;
}

/* The fast path of an acquire: the connection this thread released last,
   if it is still parked.  Returns it in use, or NULL. */
static cbpool__conn *cbpool__fast_take_parked(cbpool *pool)
{
    cbpool__conn *c = cbpool__fast_my_last(pool);
    int st = CBPOOL__PARKED;
    if (!c || __atomic_load_n(&pool->fast.mode, __ATOMIC_RELAXED) != CBPOOL__FAST_PARK)
        return NULL;
    if (!__atomic_compare_exchange_n(&c->state, &st, CBPOOL__IN_USE, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return NULL;
    return c;
}

/* The contended path of an acquire: the connection this thread kept at its
   last release, unless it was handed to a waiter meanwhile.  Returns it in
   use, or NULL. */
static cbpool__conn *cbpool__fast_take_kept(cbpool *pool)
{
    uint64_t ticket = cbpool__keep_ticket;
    cbpool__conn *c;
    if (!ticket)
        return NULL;
    cbpool__keep_ticket = 0;
    c = cbpool__fast_my_last(pool);
    if (!c || !__atomic_compare_exchange_n(&c->keep_ticket, &ticket, (uint64_t)0, 0,
                                           __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return NULL;
    __atomic_store_n(&c->state, CBPOOL__IN_USE, __ATOMIC_SEQ_CST);
    __atomic_store_n(&c->barged_acquires,
                     __atomic_load_n(&c->barged_acquires, __ATOMIC_RELAXED) + 1,
                     __ATOMIC_RELAXED);
    return c;
}

/*
 * The fast paths of a release, without the lock, for a clean connection
 * this thread acquired last.  While nobody waits it is parked.  While
 * others wait it is kept for this thread's next acquire -- the thread skips
 * the line, and nobody sleeps or wakes -- if the thread came back within
 * CBPOOL__COME_BACK_NS after its previous release and has not kept this
 * connection barge_limit times in a row; else the slow path hands it to
 * the first waiter.  Returns 1 if it was parked or kept.
 */
static int cbpool__fast_release(cbpool *pool, PGconn *pg, int64_t now)
{
    cbpool__conn *c = cbpool__fast_my_last(pool);
    int mode = __atomic_load_n(&pool->fast.mode, __ATOMIC_RELAXED);
    uint64_t ticket;
    if (!c || mode == CBPOOL__FAST_OFF || CBPOOL__LOAD(&c->pg) != pg ||
        CBPOOL__LOAD(&c->state) != CBPOOL__IN_USE ||
        PQstatus(pg) != CONNECTION_OK || PQtransactionStatus(pg) != PQTRANS_IDLE)
        return 0;
    if (c->retire_ns && now >= c->retire_ns)
        return 0;
    if (mode == CBPOOL__FAST_KEEP &&
        (!cbpool__came_back || c->barges >= pool->cfg.barge_limit))
        return 0;
    c->last_used_ns = now;
    /* PARKING first, then fast.mode: a thread that turned fast.mode off and
       drains either sees this connection or is seen here (both seq_cst) */
    __atomic_store_n(&c->state, CBPOOL__PARKING, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pool->fast.mode, __ATOMIC_SEQ_CST) != mode) {
        __atomic_store_n(&c->state, CBPOOL__IN_USE, __ATOMIC_SEQ_CST);
        return 0;
    }
    __atomic_store_n(&c->acquired_ns, (int64_t)0, __ATOMIC_RELAXED);
    if (mode == CBPOOL__FAST_PARK) {
        c->barges = 0;
        /* the last touch: once parked, a drain may hand it out, and a close
           may free the pool */
        __atomic_store_n(&c->state, CBPOOL__PARKED, __ATOMIC_RELEASE);
        return 1;
    }
    c->barges++;
    if (pool->cfg.follow_cpu)
        __atomic_store_n(&c->cpu, cbpool__this_cpu(), __ATOMIC_RELAXED);
    ticket = ++c->keep_seq;
    cbpool__keep_ticket = ticket;
    __atomic_store_n(&c->kept_ns, now, __ATOMIC_RELAXED);
    __atomic_store_n(&c->keep_ticket, ticket, __ATOMIC_RELEASE);
    /* the last touch, as for a parked one */
    __atomic_store_n(&c->state, CBPOOL__KEPT, __ATOMIC_SEQ_CST);
    return 1;
}

/* == [slots] acquire and release: connections, idle stack, waiters ======= */

CBPOOL_DEF cbpool_error cbpool_last_error(void)
{
    return cbpool__errno;
}

CBPOOL_DEF const char *cbpool_strerror(cbpool_error e)
{
    switch (e) {
    case CBPOOL_OK: return "success";
    case CBPOOL_ETIMEOUT: return "no connection became available within the timeout";
    case CBPOOL_EBACKPRESSURE: return "too many threads are waiting for a connection (max_waiters)";
    case CBPOOL_ECLOSED: return "the pool is closed";
    case CBPOOL_EINVAL: return "invalid argument";
    case CBPOOL_EQUERY: return "BEGIN or COMMIT failed";
    case CBPOOL_EUNAVAILABLE:
        return "the server is unreachable (the circuit breaker is open), or no host of the "
               "cluster can take this access";
    case CBPOOL_EREFUSED:
        return "the server refuses this pool's identity (SQLSTATE 42501 or 53400: its role "
               "may not claim the application or the pod, or holds too many pods); this "
               "will not change by itself";
    }
    return "unknown error";
}

/* A connection leaves the pool; with the lock.  Its record's counters go
   to the pool's, so that they are counted while the record is in neither
   list (being closed, or reused for a connect under way). */
static void cbpool__slots_unlink_locked(cbpool *pool, cbpool__conn *c)
{
    cbpool__conn **p = &pool->slots.conns;
    while (*p && *p != c)
        p = &(*p)->next;
    if (*p)
        *p = c->next;
    pool->slots.total--;
    pool->stats.gone_fast += __atomic_exchange_n(&c->fast_acquires, (uint64_t)0,
                                                 __ATOMIC_RELAXED);
    pool->stats.gone_barged += __atomic_exchange_n(&c->barged_acquires, (uint64_t)0,
                                                   __ATOMIC_RELAXED);
    pool->stats.gone_moved += __atomic_exchange_n(&c->moved, (uint64_t)0, __ATOMIC_RELAXED);
}

static cbpool__conn *cbpool__slots_find_locked(cbpool *pool, PGconn *pg)
{
    cbpool__conn *c;
    for (c = pool->slots.conns; c; c = c->next)
        if (c->pg == pg)
            return c;
    return NULL;
}

static void cbpool__slots_idle_remove_locked(cbpool *pool, cbpool__conn *c)
{
    int i;
    for (i = 0; i < pool->slots.idle_count; i++) {
        if (pool->slots.idle[i] == c) {
            memmove(&pool->slots.idle[i], &pool->slots.idle[i + 1],
                    (size_t)(pool->slots.idle_count - i - 1) * sizeof(cbpool__conn *));
            pool->slots.idle_count--;
            return;
        }
    }
}

/* Close a connection and keep its record for reuse; outside the lock
   (PQfinish talks to the server). */
static void cbpool__slots_destroy(cbpool *pool, cbpool__conn *c)
{
    if (c->pg && pool->fast.observe)
        cbpool__on_close(pool, c);
    if (c->pg)
        PQfinish(c->pg);
    cbpool__lock(pool);
    CBPOOL__STORE(&c->pg, (PGconn *)NULL);
    CBPOOL__STORE(&c->state, CBPOOL__FREE);
    c->next = pool->slots.spare;
    pool->slots.spare = c;
    cbpool__unlock(pool);
}

/* A record for a new connection: a spare one, or a new one (NULL if out of
   memory). */
static cbpool__conn *cbpool__slots_new_conn(cbpool *pool)
{
    cbpool__conn *c;
    cbpool__lock(pool);
    c = pool->slots.spare;
    if (c)
        pool->slots.spare = c->next;
    cbpool__unlock(pool);
    if (!c)
    {
        c = (cbpool__conn *)cbpool__alloc(&pool->cfg, sizeof(cbpool__conn));
        if (c)
            c->close_reason = CBPOOL_CLOSE_POOL_CLOSED;
        return c;
    }
    c->next = NULL;
    c->releasing = 0;
    c->held_for_answer = 0;
    c->close_reason = CBPOOL_CLOSE_POOL_CLOSED;
    c->retire_ns = 0;
    CBPOOL__STORE(&c->acquired_ns, (int64_t)0);
    CBPOOL__STORE(&c->acquired_file, (const char *)NULL);
    CBPOOL__STORE(&c->acquired_line, 0);
    CBPOOL__STORE(&c->leak_reported, 0);
    return c;
}

static void cbpool__slots_unwait_locked(cbpool *pool, cbpool__waiter *w)
{
    cbpool__waiter **p = &pool->slots.wait_head;
    cbpool__waiter *prev = NULL;
    while (*p && *p != w) {
        prev = *p;
        p = &(*p)->next;
    }
    if (*p) {
        *p = w->next;
        if (pool->slots.wait_tail == w)
            pool->slots.wait_tail = prev;
        pool->slots.waiters--;
    }
}

/*
 * Give a usable connection to the first waiter, or put it on the idle
 * stack.  The caller holds the lock and has checked it is within bounds.
 */
static void cbpool__slots_offer_locked(cbpool *pool, cbpool__conn *c)
{
    c->barges = 0;   /* whoever gets it next starts a new run */
    if (cbpool__share_claim_locked(pool, c))
        return;   /* a saturated pool still refreshes its share: that first */
    if (pool->slots.wait_head) {
        cbpool__waiter *w = pool->slots.wait_head;
        pool->slots.wait_head = w->next;
        if (!pool->slots.wait_head)
            pool->slots.wait_tail = NULL;
        pool->slots.waiters--;
        CBPOOL__COUNT(pool, handoffs);
        CBPOOL__STORE(&c->leak_reported, 0);
        CBPOOL__STORE(&c->acquired_ns, cbpool__now_ns());   /* for the leak check meanwhile */
        CBPOOL__STORE(&c->state, CBPOOL__IN_USE);
        pool->slots.in_use++;
        w->conn = c;
        pthread_cond_signal(&w->cond);
        return;
    }
    /* room for every connection was made when it was opened */
    CBPOOL_ASSERT(pool->slots.idle_count < pool->slots.idle_capacity);
    CBPOOL__STORE(&c->state, CBPOOL__IDLE);
    pool->slots.idle[pool->slots.idle_count++] = c;
    pthread_cond_broadcast(&pool->slots.ready_cond);
}

/* A new connection joins the pool (its room on the idle stack was made
   with cbpool__slots_reserve_locked); with the lock. */
static void cbpool__slots_add_locked(cbpool *pool, cbpool__conn *c)
{
    c->next = pool->slots.conns;
    pool->slots.conns = c;
    pool->slots.total++;
}

/* A connection parked without the lock goes on the idle stack (a drain);
   with the lock. */
static void cbpool__slots_unpark_locked(cbpool *pool, cbpool__conn *c)
{
    CBPOOL_ASSERT(pool->slots.idle_count < pool->slots.idle_capacity);
    pool->slots.in_use--;
    pool->slots.idle[pool->slots.idle_count++] = c;
}

/* A kept connection whose ticket a drain took goes to the first waiter
   (or the idle stack); with the lock. */
static void cbpool__slots_reclaim_locked(cbpool *pool, cbpool__conn *c)
{
    pool->slots.in_use--;
    cbpool__slots_offer_locked(pool, c);
}

/* Make room on the idle stack for one more open connection; called with
   the lock before a connection is added.  Returns 0 on allocation failure. */
static int cbpool__slots_reserve_locked(cbpool *pool)
{
    int cap;
    cbpool__conn **grown;
    if (pool->slots.total < pool->slots.idle_capacity)
        return 1;
    cap = pool->slots.idle_capacity ? pool->slots.idle_capacity * 2 : 16;
    grown = (cbpool__conn **)cbpool__alloc(&pool->cfg, (size_t)cap * sizeof(cbpool__conn *));
    if (!grown)
        return 0;
    if (pool->slots.idle_count)
        memcpy(grown, pool->slots.idle, (size_t)pool->slots.idle_count * sizeof(cbpool__conn *));
    cbpool__free(&pool->cfg, pool->slots.idle);
    pool->slots.idle = grown;
    pool->slots.idle_capacity = cap;
    return 1;
}

/* Wake every waiter (the circuit opened: they fail at once); with the lock. */
static void cbpool__slots_wake_waiters_locked(cbpool *pool)
{
    cbpool__waiter *w;
    for (w = pool->slots.wait_head; w; w = w->next)
        pthread_cond_signal(&w->cond);
}

/* Sleep on cond for up to ms milliseconds; called with the lock. */
static void cbpool__timed_wait(cbpool *pool, pthread_cond_t *cond, int64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec += (long)(ns % 1000000000);
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(cond, &pool->lock, &ts);
}

/* A connection that was out came back after close(); returns 1 when it
   was the last one and the pool must be freed now.  Called with the lock. */
static int cbpool__slots_returned_after_close_locked(cbpool *pool)
{
    return pool->slots.closed_final && --pool->slots.out_at_close == 0;
}

/* Take an idle connection, or wait in line for one until deadline; called
   with the lock, returns without it.  NULL with cbpool__errno set if none. */
static cbpool__conn *cbpool__slots_take_locked(cbpool *pool, int64_t deadline, int *handed)
{
    cbpool__conn *c;
    if (pool->slots.closing) {
        cbpool__unlock(pool);
        cbpool__errno = CBPOOL_ECLOSED;
        return NULL;
    }
    if (!pool->slots.wait_head && pool->slots.idle_count == 0) {
        /* connections parked or kept by other threads (nobody waits, so
           this thread is first in line): fast.mode off first, so that none
           parked or kept after the drain goes unseen */
        cbpool__fast_off_locked(pool);
        cbpool__fast_drain_locked(pool, CBPOOL__RECLAIM_ALL);
    } else if (pool->slots.wait_head && pool->cfg.barge_limit > 0)
        /* connections kept for threads that have not come back for them go
           to the threads ahead of this one */
        cbpool__fast_drain_locked(pool, CBPOOL__RECLAIM_ALL);
    if (!pool->slots.wait_head && pool->slots.idle_count > 0) {
        /* this thread's previous connection if it is idle (its backend
           is warm and on the same CPU), else the most recently used */
        int i = pool->slots.idle_count - 1;
        cbpool__conn *mine = cbpool__fast_my_last(pool);
        if (mine) {
            int j;
            for (j = i; j >= 0; j--)
                if (pool->slots.idle[j] == mine)
                    break;
            if (j >= 0)
                i = j;
        }
        c = pool->slots.idle[i];
        memmove(&pool->slots.idle[i], &pool->slots.idle[i + 1],
                (size_t)(pool->slots.idle_count - i - 1) * sizeof(cbpool__conn *));
        pool->slots.idle_count--;
        CBPOOL__STORE(&c->state, CBPOOL__IN_USE);
        pool->slots.in_use++;
        cbpool__share_note_busy_locked(pool);
    } else {
        cbpool__waiter w;
        int64_t now;
        int fail = cbpool__breaker_fail_fast(pool);
        if (fail) {
            /* the server is unreachable, or refuses this pool for good:
               fail now rather than at the timeout (a cluster's host: the
               cluster goes to another) */
            if (fail == CBPOOL_EUNAVAILABLE)
                CBPOOL__COUNT(pool, breaker_fast_failures);
            cbpool__unlock(pool);
            cbpool__errno = (cbpool_error)fail;
            return NULL;
        }
        if (pool->cfg.max_waiters > 0 && pool->slots.waiters >= pool->cfg.max_waiters) {
            CBPOOL__COUNT(pool, acquire_rejected);
            cbpool__unlock(pool);
            cbpool__errno = CBPOOL_EBACKPRESSURE;
            return NULL;
        }
        memset(&w, 0, sizeof w);
        pthread_cond_init(&w.cond, &pool->condattr);
        if (pool->slots.wait_tail)
            pool->slots.wait_tail->next = &w;
        else
            pool->slots.wait_head = &w;
        pool->slots.wait_tail = &w;
        pool->slots.waiters++;
        cbpool__share_note_busy_locked(pool);
        /* maintenance: to open a connection for us if the pool may grow,
           and to watch connections kept for their threads meanwhile; it
           does not need to hear of every waiter */
        if (pool->slots.total + pool->connect.connecting < pool->share.limit ||
            (pool->cfg.barge_limit > 0 && pool->slots.total > 0 && !pool->maint.watch_armed))
            cbpool__maint_wake(pool);
        while (!w.conn && !pool->slots.closing && !cbpool__breaker_fail_fast(pool) &&
               (now = cbpool__now_ns()) < deadline) {
            int64_t left = deadline - now;
            if (!pool->maint.thread_started) {
                /* no background thread: drive maintenance while waiting,
                   unless another thread already does */
                int ran;
                cbpool__unlock(pool);
                ran = cbpool__maintain(pool, left < 20000000 ? (int)(left / 1000000) + 1 : 20);
                cbpool__lock(pool);
                if (ran || w.conn || pool->slots.closing)
                    continue;
            }
            /* re-check at least every second (every 20 ms thread-less) */
            {
                int64_t slice = pool->maint.thread_started ? 1000000000 : 20000000;
                cbpool__timed_wait(pool, &w.cond, left < slice ? left : slice);
            }
        }
        if (!w.conn)
            cbpool__slots_unwait_locked(pool, &w);
        pthread_cond_destroy(&w.cond);
        c = w.conn;
        *handed = c != NULL;
        if (!c) {
            int closed = pool->slots.closing;
            fail = closed ? 0 : cbpool__breaker_fail_fast(pool);
            if (fail == CBPOOL_EUNAVAILABLE)
                CBPOOL__COUNT(pool, breaker_fast_failures);
            else if (!closed && !fail)
                CBPOOL__COUNT(pool, acquire_timeouts);
            cbpool__unlock(pool);
            cbpool__errno = closed ? CBPOOL_ECLOSED : fail ? (cbpool_error)fail : CBPOOL_ETIMEOUT;
            return NULL;
        }
    }
    cbpool__unlock(pool);
    return c;
}

static PGconn *cbpool__acquire(cbpool *pool, int64_t start, int64_t deadline,
                               const char *file, int line)
{
    int64_t now;
    cbpool__conn *c;
    int fast;

    /* did this thread come straight back?  (its next release may keep the
       connection while others wait) */
    cbpool__came_back = cbpool__fast_my_last(pool) != NULL &&
                        start - cbpool__released_ns <= CBPOOL__COME_BACK_NS;
    c = cbpool__fast_take_kept(pool);
    if (!c)
        c = cbpool__fast_take_parked(pool);
    fast = c != NULL;
    if (!fast)
        cbpool__lock(pool);
    for (;;) {
        int handed = 0;
        if (!c && !(c = cbpool__slots_take_locked(pool, deadline, &handed)))
            return NULL;
        if (handed && pool->cfg.follow_cpu &&
            cbpool__follow(__atomic_load_n(&c->cpu, __ATOMIC_RELAXED)))
            __atomic_store_n(&c->moved, __atomic_load_n(&c->moved, __ATOMIC_RELAXED) + 1,
                             __ATOMIC_RELAXED);
        now = fast ? start : cbpool__now_ns();
        /* acquired_ns last: the leak check reads it first */
        CBPOOL__STORE(&c->acquired_file, file);
        CBPOOL__STORE(&c->acquired_line, line);
        CBPOOL__STORE(&c->leak_reported, 0);
        CBPOOL__STORE(&c->acquired_ns, now);

        /*
         * Never hand out a dead or expired connection.  The check runs
         * outside the lock; a pool closed meanwhile counts this connection
         * as out and frees itself when it comes back.
         */
        {
            /* a connection back for less than CBPOOL__RECHECK_NS was alive a
               moment ago; the socket check would cost a system call on
               every acquire of a busy pool */
            int alive = (now - c->last_used_ns < CBPOOL__RECHECK_NS
                             ? PQstatus(c->pg) == CONNECTION_OK
                             : cbpool__looks_alive(c->pg)) &&
                        !(pool->fast.writes_only && cbpool__read_only(c->pg));
            int expired = c->retire_ns && now >= c->retire_ns;
            int checked = alive && !expired &&
                          (pool->cfg.validate_idle_ms < 0 ||
                           now - c->last_used_ns <= (int64_t)pool->cfg.validate_idle_ms * 1000000 ||
                           cbpool__validate(pool, c->pg));
            if (checked)
                break;
            cbpool__lock(pool);
            pool->slots.in_use--;
            cbpool__slots_unlink_locked(pool, c);
            if (pool->slots.closing) {
                /* closed while we checked it: it goes, and so may the pool */
                int free_pool = cbpool__slots_returned_after_close_locked(pool);
                cbpool__unlock(pool);
                cbpool__slots_destroy(pool, c);
                if (free_pool) {
                    cbpool__lock(pool);
                    cbpool__free_pool(pool);   /* unlocks */
                }
                cbpool__errno = CBPOOL_ECLOSED;
                return NULL;
            }
            c->close_reason = expired && alive ? CBPOOL_CLOSE_LIFETIME : CBPOOL_CLOSE_BROKEN;
            if (expired && alive)
                CBPOOL__COUNT(pool, closed_lifetime);
            else {
                CBPOOL__COUNT(pool, closed_broken);
                if (alive)
                    CBPOOL__COUNT(pool, validations_failed);
            }
            cbpool__maint_wake(pool);
            cbpool__unlock(pool);
            cbpool__slots_destroy(pool, c);
            cbpool__lock(pool);
            if (cbpool__now_ns() >= deadline) {
                CBPOOL__COUNT(pool, acquire_timeouts);
                cbpool__unlock(pool);
                cbpool__errno = CBPOOL_ETIMEOUT;
                return NULL;
            }
            c = NULL;
            fast = 0;
        }
    }
    cbpool__last_pool = pool;
    cbpool__last_pool_id = pool->fast.id;
    cbpool__last_conn = c;
    cbpool__keep_ticket = 0;   /* a ticket is for the last connection only */
    if (fast)   /* no wait: counted in the histogram's first bucket */
        __atomic_store_n(&c->fast_acquires,
                         __atomic_load_n(&c->fast_acquires, __ATOMIC_RELAXED) + 1,
                         __ATOMIC_RELAXED);
    else
        cbpool__stats_record_wait(pool, now - start);
    cbpool__errno = CBPOOL_OK;
    if (pool->fast.observe)
        cbpool__on_use(pool, c->pg, fast ? 0 : now - start, 1);
    return c->pg;
}

CBPOOL_DEF PGconn *cbpool_acquire_at(cbpool *pool, int timeout_ms, const char *file,
                                     int line)
{
    int64_t start = cbpool__now_ns();
    if (!pool) {
        cbpool__errno = CBPOOL_EINVAL;
        return NULL;
    }
    if (timeout_ms < 0)
        timeout_ms = pool->cfg.acquire_timeout_ms;
    return cbpool__acquire(pool, start, start + (int64_t)timeout_ms * 1000000, file, line);
}

CBPOOL_DEF PGconn *cbpool_acquire(cbpool *pool, int timeout_ms)
{
    return cbpool_acquire_at(pool, timeout_ms, NULL, 0);
}

CBPOOL_DEF int64_t cbpool_clock_us(void)
{
    return cbpool__now_ns() / 1000;
}

/* A deadline on cbpool_clock_us() in nanoseconds, without overflow: one
   beyond what nanoseconds hold (INT64_MAX, say) is as good as never. */
static int64_t cbpool__deadline_ns(int64_t deadline_us)
{
    if (deadline_us >= INT64_MAX / 1000)
        return INT64_MAX;
    return deadline_us > 0 ? deadline_us * 1000 : 0;
}

CBPOOL_DEF PGconn *cbpool_acquire_until(cbpool *pool, int64_t deadline_us)
{
    int64_t start = cbpool__now_ns();
    int64_t deadline_ns = cbpool__deadline_ns(deadline_us);
    if (!pool) {
        cbpool__errno = CBPOOL_EINVAL;
        return NULL;
    }
    if (deadline_ns <= start) {
        /* too late already: nothing is taken */
        cbpool__lock(pool);
        CBPOOL__COUNT(pool, acquire_timeouts);
        cbpool__unlock(pool);
        cbpool__errno = CBPOOL_ETIMEOUT;
        return NULL;
    }
    return cbpool__acquire(pool, start, deadline_ns, NULL, 0);
}

CBPOOL_DEF const char *cbpool_close_reason_name(cbpool_close_reason reason)
{
    switch (reason) {
    case CBPOOL_CLOSE_IDLE: return "idle";
    case CBPOOL_CLOSE_LIFETIME: return "lifetime";
    case CBPOOL_CLOSE_BROKEN: return "broken";
    case CBPOOL_CLOSE_OVER_SHARE: return "over share";
    case CBPOOL_CLOSE_POOL_CLOSED: return "pool closed";
    }
    return "unknown";
}

/* Decide the fate of a connection coming back; called with the lock.
   Returns 1 if it was kept, 0 if the caller must destroy it. */
static int cbpool__slots_return_locked(cbpool *pool, cbpool__conn *c, int broken,
                                 int *free_pool)
{
    int keep;
    pool->slots.in_use--;
    c->last_used_ns = cbpool__now_ns();
    keep = !broken && !pool->slots.closing && pool->slots.total <= pool->share.limit &&
           !(c->retire_ns && c->last_used_ns >= c->retire_ns);
    if (keep) {
        cbpool__slots_offer_locked(pool, c);
        return 1;
    }
    cbpool__slots_unlink_locked(pool, c);
    c->close_reason = broken ? CBPOOL_CLOSE_BROKEN : CBPOOL_CLOSE_POOL_CLOSED;
    if (pool->slots.closing)
        *free_pool = cbpool__slots_returned_after_close_locked(pool);
    else if (broken)
        CBPOOL__COUNT(pool, closed_broken);
    else if (c->retire_ns && c->last_used_ns >= c->retire_ns) {
        CBPOOL__COUNT(pool, closed_lifetime);
        c->close_reason = CBPOOL_CLOSE_LIFETIME;
    } else {
        CBPOOL__COUNT(pool, closed_over_share);
        c->close_reason = CBPOOL_CLOSE_OVER_SHARE;
    }
    cbpool__maint_wake(pool);   /* maybe replace it */
    return 0;
}

/* The release hook, before the connection goes back (while it is still
   the caller's); a connection that is not out is left to the misuse check. */
static void cbpool__slots_observe_release(cbpool *pool, PGconn *pg, int64_t now)
{
    cbpool__conn *c;
    int64_t held = -1;
    cbpool__lock(pool);
    c = cbpool__slots_find_locked(pool, pg);
    if (c && CBPOOL__LOAD(&c->state) == CBPOOL__IN_USE && !c->releasing)
        held = now - CBPOOL__LOAD(&c->acquired_ns);
    cbpool__unlock(pool);
    if (held >= 0)
        cbpool__on_use(pool, pg, held, 0);
}

CBPOOL_DEF void cbpool_release(cbpool *pool, PGconn *pg)
{
    cbpool__conn *c;
    int broken, clean, keep, free_pool = 0, cpu = 0;
    PGTransactionStatusType ts;
    cbpool__msg msg;

    if (!pool)
        return;
    if (pg) {
        int64_t now = cbpool__now_ns();
        cbpool__released_ns = now;
        if (pool->fast.observe)
            cbpool__slots_observe_release(pool, pg, now);
        if (cbpool__fast_release(pool, pg, now))
            return;
        cpu = pool->cfg.follow_cpu ? cbpool__this_cpu() : 0;
    }
    msg.id = NULL;
    cbpool__lock(pool);
    c = pg ? cbpool__slots_find_locked(pool, pg) : NULL;
    if (!c || CBPOOL__LOAD(&c->state) != CBPOOL__IN_USE || c->releasing) {
        CBPOOL__COUNT(pool, misuse);
        cbpool__format(&msg, CBPOOL_LOG_ERROR, "misuse", "%s",
                       !pg ? "cbpool_release() called with a NULL connection; ignored"
                       : c ? "a connection was released twice; the second release is ignored"
                           : "a connection that does not belong to this pool was released; ignored");
        cbpool__unlock(pool);
        cbpool__emit(pool, &msg);
        return;
    }
    /* ours, and in use by the caller: its state can be read */
    __atomic_store_n(&c->cpu, cpu, __ATOMIC_RELAXED);
    ts = PQtransactionStatus(pg);
    broken = PQstatus(pg) != CONNECTION_OK || ts == PQTRANS_UNKNOWN || ts == PQTRANS_ACTIVE;
    clean = !broken && ts == PQTRANS_IDLE;
    if (!clean && !broken) {
        /* an open or failed transaction: roll it back outside the lock */
        PGresult *res;
        c->releasing = 1;   /* still in use: nobody else touches it */
        cbpool__unlock(pool);
        res = cbpool__exec_deadline(pg, "ROLLBACK", 0, NULL,
                                    pool->cfg.validate_timeout_ms);
        broken = !res || PQresultStatus(res) != PGRES_COMMAND_OK ||
                 PQtransactionStatus(pg) != PQTRANS_IDLE;
        if (res)
            PQclear(res);
        cbpool__lock(pool);
        c->releasing = 0;
        CBPOOL__COUNT(pool, rollbacks_on_release);
    }
    if (!broken && cbpool__share_begin_on_release_locked(pool)) {
        /* a refresh waits for a connection: this thread makes the call on
           its own before letting the connection go (one round trip) */
        c->releasing = 1;
        cbpool__unlock(pool);
        broken = cbpool__share_refresh(pool, c);
        cbpool__lock(pool);
        c->releasing = 0;
        cbpool__share_end_locked(pool, NULL, broken);
        cbpool__maint_wake(pool);   /* the share may allow growth */
    }
    if (pool->slots.waiters > 0 && pool->cfg.barge_limit > 0)
        /* connections released earlier and kept for threads that have not
           come back for them go first */
        cbpool__fast_drain_locked(pool, CBPOOL__RECLAIM_ALL);
    keep = cbpool__slots_return_locked(pool, c, broken, &free_pool);
    cbpool__unlock(pool);
    if (!keep)
        cbpool__slots_destroy(pool, c);
    if (free_pool) {
        cbpool__lock(pool);
        cbpool__free_pool(pool);   /* unlocks */
    }
}

CBPOOL_DEF int cbpool_wait_ready(cbpool *pool, int timeout_ms)
{
    int64_t deadline;
    int rc = CBPOOL_OK;
    if (!pool)
        return CBPOOL_EINVAL;
    deadline = cbpool__now_ns() + (int64_t)timeout_ms * 1000000;
    cbpool__lock(pool);
    pool->slots.ready_waiters++;   /* cbpool_close() waits for us to leave */
    while (pool->slots.total == 0 && !pool->slots.closing) {
        int64_t now = cbpool__now_ns(), left = deadline - now;
        if (pool->breaker.refused) {
            rc = CBPOOL_EREFUSED;   /* it will not connect by itself */
            break;
        }
        if (left <= 0) {
            rc = CBPOOL_ETIMEOUT;
            break;
        }
        if (!pool->maint.thread_started) {
            int ran;
            cbpool__unlock(pool);
            ran = cbpool__maintain(pool, 20);
            cbpool__lock(pool);
            if (ran)
                continue;
        }
        cbpool__timed_wait(pool, &pool->slots.ready_cond, left < 20000000 ? left : 20000000);
    }
    if (pool->slots.closing)
        rc = CBPOOL_ECLOSED;
    pool->slots.ready_waiters--;
    cbpool__unlock(pool);
    return rc;
}

/* == [maint] maintenance: one round in named steps, and its thread ======= */

static void cbpool__maint_wake(cbpool *pool)
{
    if (pool->maint.thread_started && !pool->slots.closing && !pool->maint.wake_pending) {
        char c = 1;
        pool->maint.wake_pending = 1;
        if (write(pool->maint.wake_fds[1], &c, 1) < 0) {
            /* the pipe is full: the thread is awake anyway */
        }
    }
}

/* The wake-up pipe was readable: empty it (the thread is awake now). */
static void cbpool__maint_woken(cbpool *pool)
{
    char buf[64];
    while (read(pool->maint.wake_fds[0], buf, sizeof buf) > 0) {
    }
    cbpool__lock(pool);
    pool->maint.wake_pending = 0;
    cbpool__unlock(pool);
}

/*
 * One round of maintenance is a few steps under the lock that decide, then
 * the work they decided on outside it (closing, the share refresh,
 * connects), then waiting on the connects.  Only one thread maintains at a
 * time (the background thread, or whoever calls cbpool_maintain() or
 * waits in acquire without it).  What a round decided:
 */
typedef struct cbpool__round {
    int64_t now;
    int kept;                   /* connections kept for their threads */
    cbpool__conn *closing[64];  /* to close, at most 64 a round */
    int nclosing;
    cbpool__msg leaks[8];       /* leak reports, at most 8 a round */
    int nleaks;
    cbpool__notice_sink notices; /* what the liveness checks brought */
    cbpool__conn *refresh;      /* the share refresh's connection, or NULL */
    int refresh_connect;        /* open a connection to refresh with */
    int start;                  /* connects to start */
    int64_t next_ns;            /* look again then (INT64_MAX: no need) */
} cbpool__round;

/* Idle connections, least recently used first: dead, expired, idle too
   long, or over the share go (closed outside the lock). */
static void cbpool__maint_reap_locked(cbpool *pool, cbpool__round *r)
{
    int i;
    r->notices.n = 0;
    cbpool__deferred_notices = &r->notices;
    for (i = 0; i < pool->slots.idle_count && r->nclosing < 64;) {
        cbpool__conn *c = pool->slots.idle[i];
        int reason = -1;
        if (!cbpool__looks_alive(c->pg) || (pool->fast.writes_only && cbpool__read_only(c->pg)))
            reason = CBPOOL_CLOSE_BROKEN;
        else if (c->retire_ns && r->now >= c->retire_ns)
            reason = CBPOOL_CLOSE_LIFETIME;
        else if (pool->slots.total > pool->share.limit)
            reason = CBPOOL_CLOSE_OVER_SHARE;
        else if (pool->cfg.idle_timeout_ms > 0 &&
                 pool->slots.total > pool->share.floor &&
                 r->now - c->last_used_ns >= (int64_t)pool->cfg.idle_timeout_ms * 1000000)
            reason = CBPOOL_CLOSE_IDLE;
        if (reason < 0) {
            i++;
            continue;
        }
        cbpool__slots_idle_remove_locked(pool, c);
        cbpool__slots_unlink_locked(pool, c);
        switch (reason) {
        case CBPOOL_CLOSE_BROKEN: CBPOOL__COUNT(pool, closed_broken); break;
        case CBPOOL_CLOSE_LIFETIME: CBPOOL__COUNT(pool, closed_lifetime); break;
        case CBPOOL_CLOSE_IDLE: CBPOOL__COUNT(pool, closed_idle); break;
        default: CBPOOL__COUNT(pool, closed_over_share); break;
        }
        c->close_reason = reason;
        r->closing[r->nclosing++] = c;
    }
    cbpool__deferred_notices = NULL;
}

/* Connections held longer than leak_threshold_ms, each reported once. */
static void cbpool__maint_leaks_locked(cbpool *pool, cbpool__round *r)
{
    cbpool__conn *c;
    if (pool->cfg.leak_threshold_ms <= 0)
        return;
    for (c = pool->slots.conns; c; c = c->next) {
        /* acquired_ns is stored last by an acquire, so file and line
           read after it belong to the same acquire */
        int64_t at = CBPOOL__LOAD(&c->acquired_ns);
        if (CBPOOL__LOAD(&c->state) == CBPOOL__IN_USE && at != 0 &&
            !CBPOOL__LOAD(&c->leak_reported) &&
            r->now - at >= (int64_t)pool->cfg.leak_threshold_ms * 1000000) {
            const char *file = CBPOOL__LOAD(&c->acquired_file);
            CBPOOL__STORE(&c->leak_reported, 1);
            CBPOOL__COUNT(pool, leaks_detected);
            if (r->nleaks < 8)
                cbpool__format(&r->leaks[r->nleaks++], CBPOOL_LOG_WARN, "leak",
                               "a connection acquired at %s:%d has been held for %lld ms "
                               "(leak_threshold_ms = %d)",
                               file ? file : "(unknown)", CBPOOL__LOAD(&c->acquired_line),
                               (long long)((r->now - at) / 1000000),
                               pool->cfg.leak_threshold_ms);
        }
    }
}

/* How many connects to start: waiters first, then the minimum and
   min_idle, within the limit; in steps of 1, 2, 4, ... connects (slow
   start), one at a time after failures. */
static void cbpool__maint_grow_locked(cbpool *pool, cbpool__round *r)
{
    int have, need, start;

    /* an empty pool (a start, an outage, a share of 0) grows from one */
    if (pool->slots.total == 0 && pool->connect.nattempts == 0)
        cbpool__connect_ramp_restart_locked(pool);
    r->start = 0;
    if (pool->slots.closing || r->now < pool->breaker.backoff_until_ns ||
        r->now < pool->connect.ramp_at_ns)
        return;
    have = pool->slots.total + pool->connect.nattempts;   /* closing ones are off total */
    need = pool->slots.waiters;
    if (pool->cfg.min_idle > pool->slots.idle_count)
        need += pool->cfg.min_idle - pool->slots.idle_count;
    if (pool->slots.total + need < pool->share.floor)
        need = pool->share.floor - pool->slots.total;
    need -= pool->connect.nattempts;
    start = pool->share.limit - have;
    if (need < start)
        start = need;
    /* one step at a time: a step's connects all finish before the next
       starts (else the step would slide, one new connect as each one
       ends, and never grow) */
    if (pool->connect.nattempts > 0)
        start = 0;
    else if (start > pool->connect.ramp)
        start = pool->connect.ramp;
    /* after failures, one attempt at a time until one succeeds */
    if (pool->breaker.failures > 0 && start > 1)
        start = pool->connect.nattempts == 0 ? 1 : 0;
    if (start > CBPOOL__MAX_ATTEMPTS - 1 - pool->connect.nattempts)
        start = CBPOOL__MAX_ATTEMPTS - 1 - pool->connect.nattempts;
    r->start = start < 0 ? 0 : start;
}

/* The round's refresh may have lowered the share after its connects were
   counted: no more than the share leaves room for (growth it allows comes
   in the next round, at once); the breaker's probe stays. */
static void cbpool__maint_recount_locked(cbpool *pool, cbpool__round *r)
{
    int room = pool->share.limit - pool->slots.total - pool->connect.nattempts;
    if (pool->breaker.state == CBPOOL_BREAKER_CLOSED && r->start > room)
        r->start = room > 0 ? room : 0;
}

/*
 * When to look again (a release, a new waiter or a finished connect wakes
 * maintenance earlier): the share's next refresh, the end of a backoff, a
 * growth step or an open circuit.  While threads wait, a release may keep
 * its connection for its thread without the lock and without telling
 * anyone.  The pool's next hand-off or new waiter passes one whose thread
 * has not come back to the first waiter, but in a pool where neither
 * comes, look about every CBPOOL__WATCH_NS (the drain at the start of a
 * round does it; half the period, which poll() rounds up to the next
 * millisecond), and less often, down to about every CBPOOL__WATCH_MAX_NS /
 * 2, while the looks find nothing to hand on.  Waiters sleep until a
 * connection is handed to them.
 */
static void cbpool__maint_next_locked(cbpool *pool, cbpool__round *r)
{
    int64_t now = r->now, next = cbpool__share_next_look(pool, now);
    if (pool->breaker.backoff_until_ns > now && pool->breaker.backoff_until_ns < next)
        next = pool->breaker.backoff_until_ns;
    if (pool->connect.ramp_at_ns > now && pool->connect.ramp_at_ns < next)
        next = pool->connect.ramp_at_ns;
    if (pool->breaker.state == CBPOOL_BREAKER_OPEN && pool->breaker.until_ns > now &&
        pool->breaker.until_ns < next)
        next = pool->breaker.until_ns;
    pool->maint.watch_armed = !pool->slots.closing && pool->cfg.barge_limit > 0 &&
                              pool->slots.total > 0 && (pool->slots.waiters > 0 || r->kept > 0);
    if (!pool->maint.watch_armed ||
        pool->stats.counts.barges_expired != pool->maint.watch_expired ||
        pool->maint.watch_ns < CBPOOL__WATCH_NS)
        pool->maint.watch_ns = CBPOOL__WATCH_NS;   /* back to the fastest watch */
    else if (pool->maint.watch_ns < CBPOOL__WATCH_MAX_NS)
        pool->maint.watch_ns *= 2;                 /* nothing handed on: slower */
    pool->maint.watch_expired = pool->stats.counts.barges_expired;
    if (pool->maint.watch_armed && now + pool->maint.watch_ns / 2 < next)
        next = now + pool->maint.watch_ns / 2;
    r->next_ns = next;
}

/* The share refresh on the connection maintenance took for it, outside the
   lock; then the connection goes where the answer says. */
static void cbpool__maint_refresh(cbpool *pool, cbpool__conn *c)
{
    int broken = cbpool__share_refresh(pool, c);
    cbpool__lock(pool);
    if (cbpool__share_end_locked(pool, c, broken)) {
        cbpool__unlock(pool);   /* kept for the follow-up ask */
    } else if (broken || pool->slots.closing || pool->slots.total > pool->share.limit) {
        cbpool__slots_unlink_locked(pool, c);
        c->close_reason = broken ? CBPOOL_CLOSE_BROKEN
                          : pool->slots.closing ? CBPOOL_CLOSE_POOL_CLOSED
                                                : CBPOOL_CLOSE_OVER_SHARE;
        if (broken)
            CBPOOL__COUNT(pool, closed_broken);
        else if (!pool->slots.closing && pool->share.limit > 0)
            CBPOOL__COUNT(pool, closed_over_share);
        cbpool__unlock(pool);
        cbpool__slots_destroy(pool, c);
    } else {
        /* last_used_ns stays: a refresh is no use, and the idle timeout
           still applies to the connection */
        cbpool__slots_offer_locked(pool, c);
        cbpool__unlock(pool);
    }
}

/* Drive the round's connects for up to wait_ms, or until the round's next
   look, whichever comes first. */
static void cbpool__maint_wait(cbpool *pool, const cbpool__round *r, int wait_ms)
{
    if (wait_ms > 0 && r->next_ns != INT64_MAX) {
        int64_t until = (r->next_ns - cbpool__now_ns()) / 1000000 + 1;
        if (until < wait_ms)
            wait_ms = until < 1 ? 1 : (int)until;
    }
    cbpool__connect_poll(pool, wait_ms);
}

/*
 * One round of maintenance: close what should go, report leaks, refresh
 * the share, start connects, then drive connects for up to wait_ms.
 * Returns 0 if another thread was maintaining.
 */
static int cbpool__maintain(cbpool *pool, int wait_ms)
{
    cbpool__round r;
    int i;

    r.now = cbpool__now_ns();
    r.kept = r.nclosing = r.nleaks = r.refresh_connect = r.start = 0;
    r.refresh = NULL;
    cbpool__lock(pool);
    if (pool->maint.running) {
        cbpool__unlock(pool);
        return 0;   /* someone else is at it */
    }
    pool->maint.running = 1;
    cbpool__share_note_busy_locked(pool);
    r.kept = cbpool__fast_drain_locked(pool, CBPOOL__RECLAIM_STALE);
    cbpool__maint_reap_locked(pool, &r);
    cbpool__maint_leaks_locked(pool, &r);
    r.refresh = cbpool__share_pick_locked(pool, r.now);
    r.refresh_connect = cbpool__share_connect_wanted_locked(pool, r.now);
    cbpool__maint_grow_locked(pool, &r);
    cbpool__breaker_gate_locked(pool, r.now, &r.start, &r.refresh_connect);
    if (r.refresh_connect)
        cbpool__share_connecting_locked(pool);
    cbpool__maint_next_locked(pool, &r);
    cbpool__unlock(pool);

    for (i = 0; i < r.notices.n; i++)
        cbpool__emit(pool, &r.notices.msgs[i]);
    for (i = 0; i < r.nleaks; i++)
        cbpool__emit(pool, &r.leaks[i]);
    for (i = 0; i < r.nclosing; i++)
        cbpool__slots_destroy(pool, r.closing[i]);
    if (r.refresh) {
        cbpool__maint_refresh(pool, r.refresh);
        wait_ms = 0;   /* the share may allow growth right away */
        cbpool__lock(pool);
        cbpool__maint_recount_locked(pool, &r);
        cbpool__unlock(pool);
    }
    for (i = 0; i < r.start; i++)
        cbpool__connect_start(pool, 0);
    if (r.refresh_connect)
        cbpool__connect_start(pool, 1);
    cbpool__maint_wait(pool, &r, wait_ms);

    cbpool__lock(pool);
    pool->maint.running = 0;
    cbpool__unlock(pool);
    return 1;
}

static void *cbpool__maint_thread(void *arg)
{
    cbpool *pool = (cbpool *)arg;
    for (;;) {
        int closing;
        cbpool__lock(pool);
        closing = pool->slots.closing;
        cbpool__unlock(pool);
        if (closing)
            break;
        cbpool__maintain(pool, CBPOOL__MAINT_POLL_MS);
    }
    return NULL;
}

CBPOOL_DEF void cbpool_maintain(cbpool *pool)
{
    if (pool && !pool->maint.thread_started)
        cbpool__maintain(pool, 0);
}

/* == [share] the budget: size, demand, refresh, protocol ================= */

/*
 * Recompute the pool's bounds from its configuration and the share.  The
 * pool keeps at least one connection (to refresh its share with); before
 * the first refresh it opens only that one, so that it never holds more
 * than its share.
 */
static void cbpool__share_resize_locked(cbpool *pool)
{
    int limit, floor_size;
    if (pool->share.extension == 0)
        limit = pool->cfg.max_size > 0 ? pool->cfg.max_size : CBPOOL__FIXED_SIZE;
    else if (pool->share.size < 0)
        limit = 1;
    else {
        limit = pool->share.size;
        if (pool->cfg.max_size > 0 && pool->cfg.max_size < limit)
            limit = pool->cfg.max_size;
    }
    /* a share of 0 (more pods than budget) means no connection at all */
    if (limit < 1 && !(pool->share.extension == 1 && pool->share.size == 0))
        limit = 1;
    if (limit < 0)
        limit = 0;
    floor_size = pool->share.server_min > pool->cfg.min_idle ? pool->share.server_min
                                                       : pool->cfg.min_idle;
    if (floor_size < 1)
        floor_size = 1;
    if (floor_size > limit)
        floor_size = limit;
    pool->share.limit = limit;
    pool->share.floor = floor_size;
}

/* How long a saturated pool waits for a connection to come back before it
   opens one to renew its share with (see cbpool__maintain). */
static int cbpool__share_patience_ms(const cbpool *pool)
{
    return pool->share.refresh_ms < CBPOOL__PATIENCE_MS ? pool->share.refresh_ms
                                                        : CBPOOL__PATIENCE_MS;
}

/* Remember the busiest moment: connections in use (parked ones too: their
   threads are using them) plus waiting threads.  Called under the lock
   wherever that number grows. */
static void cbpool__share_note_busy_locked(cbpool *pool)
{
    int busy = pool->slots.in_use + pool->slots.waiters;
    if (busy > pool->share.interval_peak)
        pool->share.interval_peak = busy;
}

/*
 * What the pod could use: the busiest moment of the last few refresh
 * intervals, plus headroom.  It rises at once and falls only once a busy
 * moment has left the window, so a steady pod reports the same number at
 * every refresh instead of a new instant sample.
 */
static int cbpool__share_demand_locked(cbpool *pool)
{
    int busy = pool->share.interval_peak;
    int headroom, demand, i;
    for (i = 0; i < CBPOOL__PEAK_WINDOW; i++)
        if (pool->share.peaks[i] > busy)
            busy = pool->share.peaks[i];
    headroom = (busy * pool->cfg.headroom_pct + 99) / 100;
    if (headroom < 1)
        headroom = 1;
    demand = busy + headroom;
    /* at least what the pool means to keep (not yet clamped by a share) */
    if (demand < pool->cfg.min_idle)
        demand = pool->cfg.min_idle;
    if (demand < pool->share.server_min)
        demand = pool->share.server_min;
    if (pool->cfg.max_size > 0 && demand > pool->cfg.max_size)
        demand = pool->cfg.max_size;
    return demand;
}

/*
 * The refresh's state machine (share.state).  A refresh is due at
 * share.next_ns; it needs a connection nobody is using, and takes the
 * least recently used idle one if that has been idle a while, else asks
 * the next thread that releases one to refresh with it before it lets it
 * go (taking a connection a thread is about to reuse would leave that
 * thread waiting for the length of the call, and every thread behind it in
 * turn).  Every change of state goes through cbpool__share_to_locked:
 *
 *   IDLE -> WANTED             due, and no connection idle long enough
 *   WANTED -> CONNECTING       saturated: none came back within the patience,
 *                              so maintenance opens one for it
 *   IDLE -> CONNECTING         a share of 0: one connect to ask again
 *   CONNECTING -> WANTED       that connect failed (IDLE if nothing is open)
 *   WANTED, CONNECTING -> ON_CONNECTION
 *                              a released connection is set aside for it
 *   any but IN_FLIGHT -> ON_CONNECTION
 *                              a connect made for it (or the pool's first)
 *                              is done; during IN_FLIGHT it waits in
 *                              share.conn for the next call
 *   IDLE, WANTED, CONNECTING -> IN_FLIGHT
 *                              maintenance calls on an idle connection, or
 *                              a releasing thread on its own
 *   ON_CONNECTION -> IN_FLIGHT maintenance calls on share.conn
 *   IN_FLIGHT -> ON_CONNECTION the call is over and a connection is set
 *                              aside (kept for the follow-up ask after a
 *                              changed demand, or made meanwhile)
 *   IN_FLIGHT -> IDLE          the call is over
 *   any -> IDLE                the pool closes
 *
 * While a refresh is WANTED or CONNECTING, releases take the lock (the
 * lock-free path is off) so that a connection coming back reaches it.
 */
static void cbpool__share_to_locked(cbpool *pool, cbpool__refresh_state to)
{
#define CBPOOL__TO(s) (1u << CBPOOL__REFRESH_##s)
    static const unsigned legal[5] = {
        /* IDLE */ CBPOOL__TO(WANTED) | CBPOOL__TO(CONNECTING) | CBPOOL__TO(ON_CONNECTION) |
            CBPOOL__TO(IN_FLIGHT),
        /* WANTED */ CBPOOL__TO(CONNECTING) | CBPOOL__TO(ON_CONNECTION) |
            CBPOOL__TO(IN_FLIGHT) | CBPOOL__TO(IDLE),
        /* CONNECTING */ CBPOOL__TO(WANTED) | CBPOOL__TO(IDLE) | CBPOOL__TO(ON_CONNECTION) |
            CBPOOL__TO(IN_FLIGHT),
        /* ON_CONNECTION */ CBPOOL__TO(IN_FLIGHT) | CBPOOL__TO(IDLE),
        /* IN_FLIGHT */ CBPOOL__TO(ON_CONNECTION) | CBPOOL__TO(IDLE)};
#undef CBPOOL__TO
    CBPOOL_ASSERT(pool->share.state == to || (legal[pool->share.state] & (1u << to)));
    (void)legal;
    pool->share.state = to;
}

/* Does a refresh wait for a connection to come back? */
static int cbpool__share_wanted(const cbpool *pool)
{
    return pool->share.state == CBPOOL__REFRESH_WANTED ||
           pool->share.state == CBPOOL__REFRESH_CONNECTING;
}

/* The next refresh is due no later than when (0: now); with the lock. */
static void cbpool__share_due_locked(cbpool *pool, int64_t when)
{
    if (pool->share.next_ns > when)
        pool->share.next_ns = when;
}

/* A refusal stated the server's refresh interval (a pool that never read
   its share learns the pace from it); with the lock. */
static void cbpool__share_learn_pace_locked(cbpool *pool, int refresh_ms)
{
    pool->share.refresh_ms = refresh_ms;
}

/* Maintenance: the connection to refresh with now, taken out of the pool
   (CHECKING), or NULL; a due refresh with none at hand becomes WANTED. */
static cbpool__conn *cbpool__share_pick_locked(cbpool *pool, int64_t now)
{
    int64_t patience = (int64_t)cbpool__share_patience_ms(pool) * 1000000;
    int wanted = cbpool__share_wanted(pool);
    cbpool__conn *c = NULL;

    if (pool->slots.closing || now < pool->share.next_ns ||
        pool->share.state == CBPOOL__REFRESH_IN_FLIGHT)
        return NULL;
    if (pool->share.state == CBPOOL__REFRESH_ON_CONNECTION) {
        c = pool->share.conn;
        pool->share.conn = NULL;
    } else if (pool->slots.idle_count > 0 &&
               (now - pool->slots.idle[0]->last_used_ns >= patience ||
                (wanted && now - pool->share.wanted_ns >= patience))) {
        c = pool->slots.idle[0];
        cbpool__slots_idle_remove_locked(pool, c);
        CBPOOL__STORE(&c->state, CBPOOL__CHECKING);
    } else if (pool->slots.total > 0 && !wanted) {
        cbpool__share_to_locked(pool, CBPOOL__REFRESH_WANTED);
        pool->share.wanted_ns = now;
    }
    if (c)
        cbpool__share_to_locked(pool, CBPOOL__REFRESH_IN_FLIGHT);
    return c;
}

/*
 * Should maintenance open a connection to refresh with?  Saturated: every
 * connection is in use, threads wait, and none has come back within the
 * patience, so the pool cannot ask for more.  If its share was only as
 * small as the demand it reported (the server would grant more), or it
 * never learnt its share (its first connection was taken at once), one
 * connection is opened to renew the share with; it stays only if the new
 * share covers it.  Without this, long-held connections would keep a pool
 * at a share computed for a quieter time.  And a share of 0: the pool
 * holds nothing, and once per refresh interval opens one connection to ask
 * again, kept only when the share has become positive.
 */
static int cbpool__share_connect_wanted_locked(cbpool *pool, int64_t now)
{
    const cbpool__share *s = &pool->share;
    if (pool->slots.closing || pool->connect.nattempts != 0 ||
        now < pool->breaker.backoff_until_ns)
        return 0;
    if (s->state == CBPOOL__REFRESH_WANTED && pool->slots.waiters > 0 &&
        (s->extension < 0 || (s->extension == 1 && s->size > 0 && s->size == s->reflected_demand)) &&
        (pool->cfg.max_size == 0 || pool->slots.total < pool->cfg.max_size) &&
        now - s->wanted_ns >= (int64_t)cbpool__share_patience_ms(pool) * 1000000)
        return 1;
    return s->extension == 1 && s->size == 0 && pool->slots.total == 0 && now >= s->next_ns;
}

/* Maintenance starts that connect. */
static void cbpool__share_connecting_locked(cbpool *pool)
{
    cbpool__share_to_locked(pool, CBPOOL__REFRESH_CONNECTING);
}

/* A connect made for the refresh ended without a connection for it. */
static void cbpool__share_connect_ended_locked(cbpool *pool)
{
    if (pool->share.state == CBPOOL__REFRESH_CONNECTING)
        cbpool__share_to_locked(pool, pool->slots.total > 0 ? CBPOOL__REFRESH_WANTED
                                                            : CBPOOL__REFRESH_IDLE);
}

/* A new connection, made for the refresh or the pool's first (which
   learns the share before anyone uses the pool): set aside for the
   refresh, due now, unless one already is.  1 if it was. */
static int cbpool__share_take_new_locked(cbpool *pool, cbpool__conn *c, int for_refresh)
{
    if (!(for_refresh || pool->share.extension < 0) || pool->share.conn) {
        if (for_refresh)
            cbpool__share_connect_ended_locked(pool);
        return 0;
    }
    CBPOOL__STORE(&c->state, CBPOOL__CHECKING);
    pool->share.conn = c;
    if (pool->share.state != CBPOOL__REFRESH_IN_FLIGHT)
        cbpool__share_to_locked(pool, CBPOOL__REFRESH_ON_CONNECTION);
    pool->share.next_ns = 0;
    cbpool__maint_wake(pool);
    return 1;
}

/* A usable connection is offered (cbpool__slots_offer_locked): a refresh
   that waits for one takes it first, for maintenance.  1 if it did. */
static int cbpool__share_claim_locked(cbpool *pool, cbpool__conn *c)
{
    if (!cbpool__share_wanted(pool) || pool->share.conn)
        return 0;
    CBPOOL__STORE(&c->state, CBPOOL__CHECKING);
    pool->share.conn = c;
    cbpool__share_to_locked(pool, CBPOOL__REFRESH_ON_CONNECTION);
    cbpool__maint_wake(pool);
    return 1;
}

/* A thread releasing a good connection while a refresh waits for one
   makes the call on it before letting it go (one round trip).  1 if it
   should: the refresh is then IN_FLIGHT. */
static int cbpool__share_begin_on_release_locked(cbpool *pool)
{
    if (!cbpool__share_wanted(pool) || pool->share.conn || pool->slots.closing)
        return 0;
    cbpool__share_to_locked(pool, CBPOOL__REFRESH_IN_FLIGHT);
    return 1;
}

/*
 * The call on c is over (broken: c is no longer usable; c NULL: a
 * releasing thread's call, whose connection goes back with its release).
 * When the answer does not know the demand just reported yet (it is
 * published a period later) and the pool is over it, c is kept for the
 * follow-up ask rather than closed and another opened: returns 1.
 */
static int cbpool__share_end_locked(cbpool *pool, cbpool__conn *c, int broken)
{
    int hold = c && !broken && !pool->slots.closing &&
               pool->slots.total > pool->share.limit &&
               pool->share.reflected_demand != pool->share.last_demand &&
               !c->held_for_answer && !pool->share.conn;
    if (c)
        c->held_for_answer = hold;
    if (hold)
        pool->share.conn = c;
    cbpool__share_to_locked(pool, pool->share.conn ? CBPOOL__REFRESH_ON_CONNECTION
                                                   : CBPOOL__REFRESH_IDLE);
    return hold;
}

/* The pool closes: nothing more is set aside. */
static void cbpool__share_close_locked(cbpool *pool)
{
    pool->share.conn = NULL;
    if (pool->share.state != CBPOOL__REFRESH_IN_FLIGHT)
        cbpool__share_to_locked(pool, CBPOOL__REFRESH_IDLE);
}

/* When maintenance must look again for the refresh: at the end of a
   WANTED refresh's patience, else when the next one is due; INT64_MAX if
   that has passed and cannot be acted on (looking at once would spin). */
static int64_t cbpool__share_next_look(const cbpool *pool, int64_t now)
{
    int64_t next = INT64_MAX;
    if (pool->share.state == CBPOOL__REFRESH_WANTED)
        next = pool->share.wanted_ns + (int64_t)cbpool__share_patience_ms(pool) * 1000000;
    else if (pool->share.next_ns > now)
        next = pool->share.next_ns;
    if (next <= now)
        next = INT64_MAX;
    if (pool->share.extension == 1 && pool->share.size == 0 && pool->share.next_ns > now &&
        pool->share.next_ns < next)
        next = pool->share.next_ns;   /* a share of 0: the next ask */
    return next;
}

/*
 * Reading what a server answers.  A server, a proxy in between, or a
 * function someone else created as connbudget.pool_share() in a database
 * without the extension may answer anything: one column, two rows, NULL,
 * "abc", "99999999999".  The pool takes a size only from an answer that is
 * exactly what the protocol says; anything else is an error, logged,
 * counted, and ignored (see cbpool__share_refresh).  atoi() would read "abc" as a
 * share of 0 (close every connection) and "99999999999" as whatever it
 * overflows to.
 *
 * What was wrong is a code, CBPOOL__BAD_* times 16 plus the field, so that
 * each distinct failure is logged once however often a server repeats it
 * (with the value it first came with), not once per refresh.
 */
#define CBPOOL__BAD_TEXT 1      /* not a base-10 integer (or not t/f) */
#define CBPOOL__BAD_RANGE 2     /* an integer out of range */
#define CBPOOL__BAD_NULL 3
#define CBPOOL__BAD_FORMAT 4    /* a binary value, or one with a NUL inside */
#define CBPOOL__BAD_ORDER 5     /* min_size > max_size, max_size > budget */
#define CBPOOL__BAD_SHAPE 6     /* not one row of the expected columns */

/*
 * The one way the pool reads a number from a server: the whole of text is
 * a base-10 integer -- digits after an optional '-'; no '+', no
 * whitespace, nothing before or after -- within [lo, hi].  Returns 0 and
 * sets *out; else CBPOOL__BAD_TEXT, or CBPOOL__BAD_RANGE for an integer
 * outside [lo, hi] or beyond long long.
 */
static int cbpool__parse_int(const char *text, long long lo, long long hi, long long *out)
{
    char *end;
    long long v;
    int saved = errno, overflow;

    /* strtoll() would skip leading whitespace and take a '+' */
    if (!text || !((text[0] >= '0' && text[0] <= '9') ||
                   (text[0] == '-' && text[1] >= '0' && text[1] <= '9')))
        return CBPOOL__BAD_TEXT;
    errno = 0;
    v = strtoll(text, &end, 10);
    overflow = errno == ERANGE;
    errno = saved;
    if (*end != '\0')
        return CBPOOL__BAD_TEXT;
    if (overflow || v < lo || v > hi)
        return CBPOOL__BAD_RANGE;
    *out = v;
    return 0;
}

/* A server's value for a log line: quoted, at most 32 bytes of it, with
   anything but printable ASCII escaped, so that an answer cannot forge log
   lines or flood them.  outlen must be at least 16. */
static void cbpool__quote(const char *in, int len, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    int i;

    out[n++] = '"';
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (i == 32 || n + 9 > outlen) {
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            out[n++] = '\\';
            out[n++] = 'x';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        } else
            out[n++] = (char)ch;
    }
    out[n++] = '"';
    out[n] = '\0';
}

/* Field col of the one row of res (what answered it, the field's name) as
   an integer in [lo, hi]: 0 and *out; else a CBPOOL__BAD_* code and what
   was wrong in why. */
static int cbpool__field_int(const PGresult *res, int col, const char *what,
                             const char *name, long long lo, long long hi,
                             long long *out, char *why, size_t whylen)
{
    const char *v;
    char quoted[160];
    int len, bad;

    if (PQgetisnull(res, 0, col)) {
        snprintf(why, whylen, "%s answered NULL for %s", what, name);
        return CBPOOL__BAD_NULL;
    }
    v = PQgetvalue(res, 0, col);
    len = PQgetlength(res, 0, col);
    cbpool__quote(v, len, quoted, sizeof quoted);
    /* the query asks for text; binary "5555" would read as an integer */
    if (PQfformat(res, col) != 0 || len < 0 || (size_t)len != strlen(v)) {
        snprintf(why, whylen, "%s answered %s %s, not text", what, name, quoted);
        return CBPOOL__BAD_FORMAT;
    }
    bad = cbpool__parse_int(v, lo, hi, out);
    if (bad == CBPOOL__BAD_TEXT)
        snprintf(why, whylen, "%s answered %s %s, not an integer", what, name, quoted);
    else if (bad)
        snprintf(why, whylen, "%s answered %s %s, out of range [%lld, %lld]", what, name,
                 quoted, lo, hi);
    return bad;
}

/* Is res one row of exactly nfields columns?  0, or a CBPOOL__BAD_SHAPE
   code and what was wrong in why. */
static int cbpool__one_row(const PGresult *res, int nfields, const char *what,
                           char *why, size_t whylen)
{
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(why, whylen, "%s answered %s, not a row", what,
                 PQresStatus(PQresultStatus(res)));
        return CBPOOL__BAD_SHAPE * 16;
    }
    if (PQntuples(res) != 1) {
        snprintf(why, whylen, "%s answered %d rows, not 1", what, PQntuples(res));
        return CBPOOL__BAD_SHAPE * 16 + 1;
    }
    if (PQnfields(res) != nfields) {
        snprintf(why, whylen, "%s answered %d column%s, not %d", what, PQnfields(res),
                 PQnfields(res) == 1 ? "" : "s", nfields);
        return CBPOOL__BAD_SHAPE * 16 + 2;
    }
    return 0;
}

/* max_size, min_size and budget in the order a share has them. */
static int cbpool__check_share_order(const long long v[4], const char *what, char *why,
                                     size_t whylen)
{
    if (v[1] > v[0]) {
        snprintf(why, whylen, "%s answered min_size %lld above max_size %lld", what, v[1], v[0]);
        return CBPOOL__BAD_ORDER * 16 + 1;
    }
    if (v[0] > v[2]) {
        snprintf(why, whylen, "%s answered max_size %lld above budget %lld", what, v[0], v[2]);
        return CBPOOL__BAD_ORDER * 16;
    }
    return 0;
}

/*
 * Is res an answer of connbudget.pool_share(): one row of max_size,
 * min_size, budget and refresh_ms, each an integer, with 0 <= min_size <=
 * max_size <= budget <= CBPOOL__MAX_BACKENDS and refresh_ms within the
 * range of connbudget.refresh_interval?  0 and the four values in v; else
 * what was wrong: a code (see CBPOOL__BAD_TEXT), told in why.
 */
static int cbpool__check_share(const PGresult *res, long long v[5], char *why, size_t whylen)
{
    static const char *const names[4] = {"max_size", "min_size", "budget", "refresh_ms"};
    static const char what[] = "connbudget.pool_share()";
    int i, bad = cbpool__one_row(res, 4, what, why, whylen);

    v[4] = CBPOOL__DEMAND_UNSAID;   /* protocol 1 does not say */
    if (bad)
        return bad;
    for (i = 0; i < 4; i++) {
        bad = cbpool__field_int(res, i, what, names[i], i == 3 ? CBPOOL__REFRESH_MIN_MS : 0,
                                i == 3 ? CBPOOL__REFRESH_MAX_MS : CBPOOL__MAX_BACKENDS, &v[i],
                                why, whylen);
        if (bad)
            return bad * 16 + i;
    }
    return cbpool__check_share_order(v, what, why, whylen);
}

/* What connbudget.share says of the pool (docs/protocol.md, section 4). */
#define CBPOOL__SHARE_OK 0          /* a share: max_size, min_size, ... */
#define CBPOOL__SHARE_OTHER 1       /* not governed: no share, a fixed size */
#define CBPOOL__SHARE_LEFT 2        /* handed back; a report brings it back */
#define CBPOOL__SHARE_REFUSED 3     /* governed no more (sqlstate, reason) */

/*
 * Is res an answer of the protocol-2 query: one row whose second column,
 * connbudget.share, is words key=value, one space apart, with a known
 * status and, for "ok", max_size, min_size, budget and refresh_ms in range
 * and in order?  Words not known are skipped, whatever their length
 * (later versions add words); a word twice, a word without '=', a value
 * that is not what its key takes, are not an answer.  CBPOOL__SHARE_MAX
 * bytes at most.  0, *status and the four values in v, with in v[4] the
 * demand the share answers (the "demand" word: a number from 0 to
 * 1000000, CBPOOL__DEMAND_UNBOUNDED, or CBPOOL__DEMAND_UNSAID without
 * one), and for "refused" its sqlstate and reason in detail; else what
 * was wrong.
 */
static int cbpool__check_share_words(const PGresult *res, long long v[5], int *status,
                                     char *detail, size_t detaillen, char *why,
                                     size_t whylen)
{
    static const char *const names[4] = {"max_size", "min_size", "budget", "refresh_ms"};
    static const char what[] = "connbudget.share";
    const char *text, *p;
    char word[64], value[48], quoted[160];
    int bad = cbpool__one_row(res, 2, what, why, whylen), seen = 0, i, len;
    char sqlstate[6] = "", reason[33] = "";

    if (bad)
        return bad;
    if (PQgetisnull(res, 0, 1)) {
        snprintf(why, whylen, "%s is NULL", what);
        return CBPOOL__BAD_NULL * 16;
    }
    text = PQgetvalue(res, 0, 1);
    len = PQgetlength(res, 0, 1);
    cbpool__quote(text, len, quoted, sizeof quoted);
    if (PQfformat(res, 1) != 0 || len < 0 || (size_t)len != strlen(text) ||
        len > CBPOOL__SHARE_MAX) {
        snprintf(why, whylen, "%s is %s, not text", what, quoted);
        return CBPOOL__BAD_FORMAT * 16;
    }
    *status = -1;
    v[4] = CBPOOL__DEMAND_UNSAID;
    for (p = text; *p;) {
        size_t n = strcspn(p, " "), k;
        const char *eq = (const char *)memchr(p, '=', n);
        int bit = 0, field = -1;
        long long number;

        if (!eq || eq == p) {
            snprintf(why, whylen, "%s is %s, not words key=value", what, quoted);
            return CBPOOL__BAD_TEXT * 16;
        }
        k = (size_t)(eq - p);
        if (k < sizeof word && n - k - 1 >= sizeof value) {
            /* a value longer than any this pool knows: wrong for a known
               key (no value of one is this long), a later version's word
               for an unknown one */
            memcpy(word, p, k);
            word[k] = '\0';
            for (i = 0; i < 4 && strcmp(word, names[i]) != 0; i++)
                ;
            if (i < 4 || strcmp(word, "status") == 0 || strcmp(word, "sqlstate") == 0 ||
                strcmp(word, "reason") == 0 || strcmp(word, "protocol") == 0 ||
                strcmp(word, "demand") == 0) {
                snprintf(why, whylen, "%s is %s: %s has a value of %zu bytes", what, quoted, word,
                         n - k - 1);
                return CBPOOL__BAD_TEXT * 16 + 8;
            }
        }
        if (k >= sizeof word || n - k - 1 >= sizeof value) {
            /* longer than any word this pool knows: a later version's */
            p += n;
            if (*p == ' ' && *++p == '\0') {
                snprintf(why, whylen, "%s is %s, not words key=value", what, quoted);
                return CBPOOL__BAD_TEXT * 16;
            }
            continue;
        }
        memcpy(word, p, k);
        word[k] = '\0';
        memcpy(value, eq + 1, n - k - 1);
        value[n - k - 1] = '\0';
        for (i = 0; i < 4; i++)
            if (strcmp(word, names[i]) == 0)
                field = i, bit = 1 << i;
        if (strcmp(word, "status") == 0) {
            bit = 1 << 4;
            *status = strcmp(value, "ok") == 0 ? CBPOOL__SHARE_OK
                    : strcmp(value, "other") == 0 ? CBPOOL__SHARE_OTHER
                    : strcmp(value, "left") == 0 ? CBPOOL__SHARE_LEFT
                    : strcmp(value, "refused") == 0 ? CBPOOL__SHARE_REFUSED : -1;
        } else if (strcmp(word, "sqlstate") == 0) {
            bit = 1 << 5;
            if (strlen(value) == 5 && strspn(value, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 5)
                memcpy(sqlstate, value, 6);
        } else if (strcmp(word, "reason") == 0) {
            bit = 1 << 6;
            if (strlen(value) < sizeof reason && strspn(value, "abcdefghijklmnopqrstuvwxyz_") == strlen(value))
                memcpy(reason, value, strlen(value) + 1);
        } else if (strcmp(word, "protocol") == 0) {
            bit = 1 << 7;
            if (cbpool__parse_int(value, 2, 1000, &number) != 0) {
                snprintf(why, whylen, "%s is %s: protocol is not a version", what, quoted);
                return CBPOOL__BAD_TEXT * 16 + 7;
            }
        } else if (strcmp(word, "demand") == 0) {
            bit = 1 << 8;
            if (strcmp(value, "unbounded") == 0)
                v[4] = CBPOOL__DEMAND_UNBOUNDED;
            else if ((bad = cbpool__parse_int(value, 0, CBPOOL__MAX_DEMAND, &v[4])) != 0) {
                snprintf(why, whylen, "%s is %s: demand %s", what, quoted,
                         bad == CBPOOL__BAD_TEXT ? "is neither an integer nor unbounded"
                                                 : "is out of range");
                return bad * 16 + 9;
            }
        } else if (field >= 0) {
            bad = cbpool__parse_int(value, field == 3 ? CBPOOL__REFRESH_MIN_MS : 0,
                                    field == 3 ? CBPOOL__REFRESH_MAX_MS : CBPOOL__MAX_BACKENDS,
                                    &v[field]);
            if (bad) {
                snprintf(why, whylen, "%s is %s: %s %s", what, quoted, names[field],
                         bad == CBPOOL__BAD_TEXT ? "is not an integer" : "is out of range");
                return bad * 16 + field;
            }
        }
        if (seen & bit) {
            snprintf(why, whylen, "%s is %s: %s twice", what, quoted, word);
            return CBPOOL__BAD_SHAPE * 16 + 3;
        }
        seen |= bit;
        p += n;
        if (*p == ' ' && *++p == '\0') {
            snprintf(why, whylen, "%s is %s, not words key=value", what, quoted);
            return CBPOOL__BAD_TEXT * 16;
        }
    }
    if (*status < 0) {
        snprintf(why, whylen, "%s is %s: no status this pool knows", what, quoted);
        return CBPOOL__BAD_TEXT * 16 + 4;
    }
    if (*status == CBPOOL__SHARE_REFUSED)
        snprintf(detail, detaillen, "%s %s", sqlstate[0] ? sqlstate : "?",
                 reason[0] ? reason : "?");
    if (*status != CBPOOL__SHARE_OK)
        return 0;
    if ((seen & 15) != 15) {
        snprintf(why, whylen, "%s is %s: a share without max_size, min_size, budget and refresh_ms",
                 what, quoted);
        return CBPOOL__BAD_SHAPE * 16 + 4;
    }
    return cbpool__check_share_order(v, what, why, whylen);
}

/* The protocol's queries (docs/protocol.md): version 2 reports the demand
   and reads the share in any database; version 1 is pool_share() where the
   extension is installed.  A pool that speaks 1 tries 2 again every
   CBPOOL__PROBE_NS (the server may have been upgraded under it). */
#define CBPOOL__SHARE_SQL                                                       \
    "SELECT set_config('connbudget.demand', $1, false), current_setting('connbudget.share')"
#define CBPOOL__POOL_SHARE_SQL                                                  \
    "SELECT max_size, min_size, budget, refresh_ms FROM connbudget.pool_share($1::int)"

/* Did the protocol-2 query fail because the server does not know it? */
static int cbpool__share_protocol_unknown(const char *state)
{
    return strcmp(state, "42704") == 0 || strcmp(state, "42602") == 0;
}

/* A refresh's answer, checked outside the lock before anything is taken. */
typedef struct cbpool__share_answer {
    PGresult *res;              /* NULL: no answer (a broken connection) */
    char state[6];              /* its SQLSTATE, "" if none */
    int protocol;               /* the query that was answered: 2 or 1 */
    int tried2;                 /* protocol 2 was tried */
    int answered;               /* a result, not an error */
    int bad;                    /* not an answer: a CBPOOL__BAD_* code */
    int status;                 /* protocol 2: CBPOOL__SHARE_* */
    long long values[5];        /* max_size, min_size, budget, refresh_ms, and
                                   the demand the share answers */
    char why[320];              /* what was wrong (bad) */
    char detail[48];            /* status refused: sqlstate and reason */
    int demand;                 /* the demand reported */
} cbpool__share_answer;

/* Report the demand and read the share on pg, outside the lock: protocol 2,
   or 1 when the server does not know 2 (until the next probe). */
static void cbpool__share_ask(cbpool *pool, PGconn *pg, cbpool__share_answer *a)
{
    char demand[16];
    const char *values[1];
    ExecStatusType st;

    cbpool__lock(pool);
    cbpool__share_note_busy_locked(pool);   /* parked connections count as used here */
    cbpool__fast_drain_locked(pool, CBPOOL__RECLAIM_STALE);
    a->demand = cbpool__share_demand_locked(pool);
    a->protocol = pool->share.protocol == 1 &&
                          cbpool__now_ns() - pool->share.protocol_probed_ns < CBPOOL__PROBE_NS
                      ? 1 : 2;
    cbpool__unlock(pool);
    snprintf(demand, sizeof demand, "%d", a->demand);
    values[0] = demand;

    a->res = NULL;
    a->tried2 = a->protocol == 2;
    if (a->protocol == 2) {
        a->res = cbpool__exec_deadline(pg, CBPOOL__SHARE_SQL, 1, values,
                                       pool->cfg.validate_timeout_ms);
        cbpool__sqlstate(a->res, a->state);
        if (cbpool__share_protocol_unknown(a->state)) {
            /* connbudget 1.1 or older, or none: pool_share(), below */
            PQclear(a->res);
            a->res = NULL;
            a->protocol = 1;
        }
    }
    if (a->protocol == 1) {
        a->res = cbpool__exec_deadline(pg, CBPOOL__POOL_SHARE_SQL, 1, values,
                                       pool->cfg.validate_timeout_ms);
        cbpool__sqlstate(a->res, a->state);
    }
    /* an answer, not an error: all of it is checked before anything is
       taken */
    st = a->res ? PQresultStatus(a->res) : PGRES_FATAL_ERROR;
    a->answered = st != PGRES_FATAL_ERROR && st != PGRES_NONFATAL_ERROR &&
                  st != PGRES_BAD_RESPONSE;
    a->bad = 0;
    a->status = CBPOOL__SHARE_OK;
    a->detail[0] = '\0';
    if (a->answered && a->protocol == 2)
        a->bad = cbpool__check_share_words(a->res, a->values, &a->status, a->detail,
                                           sizeof a->detail, a->why, sizeof a->why);
    else if (a->answered)
        a->bad = cbpool__check_share(a->res, a->values, a->why, sizeof a->why);
}

/* A share the server gave (status ok, or protocol 1): the sizes, the
   interval, the demand history, and when to ask next.  With the lock. */
static void cbpool__share_take_size_locked(cbpool *pool, const cbpool__share_answer *a,
                                           int64_t now, cbpool__msg *msg)
{
    int share = (int)a->values[0];
    int was = pool->share.size;
    long long answers = a->values[4];
    int ask_soon;
    pool->share.size = share;
    pool->share.server_min = (int)a->values[1];
    pool->share.budget = (int)a->values[2];
    pool->share.refresh_ms = pool->cfg.refresh_ms > 0 ? pool->cfg.refresh_ms : (int)a->values[3];
    if (pool->share.refresh_ms < CBPOOL__REFRESH_MIN_MS)
        pool->share.refresh_ms = CBPOOL__REFRESH_MIN_MS;   /* cfg.refresh_ms 1 to 9 */
    pool->share.invalid = 0;
    if (pool->share.extension != 1)
        cbpool__format(msg, CBPOOL_LOG_INFO, "budget",
                       "connbudget share for pod \"%s\" of \"%s\": %d",
                       pool->ident.pod, pool->ident.application_name, share);
    else if (share != was)
        cbpool__format(msg, CBPOOL_LOG_DEBUG, "share-changed",
                       "share changed from %d to %d", was, share);
    /* The share answers the latest published allocation, which knows
       the demand reported here a publish period later, or later still on
       a busy server (a first report waits for it).  The server says which
       demand it answers; without that (protocol 1) a demand is taken as
       known from the report after it on.  Until the answer knows the
       demand just reported, ask again a publish period later, up to
       CBPOOL__STALE_ASKS times in a row (then at the usual pace: a
       server that never catches up is not asked every 10 ms). */
    if (answers != CBPOOL__DEMAND_UNSAID) {
        int late = answers != a->demand;
        pool->share.reflected_demand = answers >= 0 ? (int)answers : -1;
        pool->share.stale_answers = late ? pool->share.stale_answers + 1 : 0;
        ask_soon = late && pool->share.stale_answers <= CBPOOL__STALE_ASKS;
    } else {
        ask_soon = pool->share.reported && a->demand != pool->share.last_demand;
        pool->share.reflected_demand = ask_soon ? pool->share.last_demand : a->demand;
    }
    if (ask_soon)
        /* the server's publish period: refresh_ms / 10, within 10 ms..1 s */
        pool->share.next_ns = now + (int64_t)(pool->share.refresh_ms >= 10000 ? 1000
                                              : pool->share.refresh_ms >= 100
                                                  ? pool->share.refresh_ms / 10 : 10) * 1000000;
    else if (!pool->share.reported)
        /* the second refresh at a random phase, so that pools started
           together do not call in lockstep */
        pool->share.next_ns = now + cbpool__jitter_ns(pool, pool->share.refresh_ms, 10, 100);
    else if (share == 0)
        /* nothing to hold: ask again no sooner than one interval */
        pool->share.next_ns = now + cbpool__jitter_ns(pool, pool->share.refresh_ms, 100, 120);
    else
        pool->share.next_ns = now + cbpool__jitter_ns(pool, pool->share.refresh_ms, 90, 110);
    pool->share.last_demand = a->demand;
    pool->share.reported = 1;
    if (now - pool->share.peak_rotated_ns >= (int64_t)pool->share.refresh_ms * 900000) {
        pool->share.peaks[pool->share.peak_next] = pool->share.interval_peak;
        pool->share.peak_next = (pool->share.peak_next + 1) % CBPOOL__PEAK_WINDOW;
        pool->share.interval_peak = pool->slots.in_use + pool->slots.waiters;
        pool->share.peak_rotated_ns = now;
    }
    pool->share.extension = 1;
    CBPOOL__COUNT(pool, budget_refreshes);
}

/* Take what the answer says (or the failure), and when to ask next; with
   the lock.  Returns 1 if the connection broke. */
static int cbpool__share_take_locked(cbpool *pool, PGconn *pg, const cbpool__share_answer *a,
                                     cbpool__msg *msg)
{
    int64_t now = cbpool__now_ns();
    int broken = 0;
    if (a->tried2) {
        /* 2 answered, or the server did not know it (then 1, until the
           next probe); a broken connection says nothing */
        if (a->answered || a->protocol == 1)
            pool->share.protocol = a->protocol;
        pool->share.protocol_probed_ns = now;
    }
    if (a->answered && !a->bad && a->status == CBPOOL__SHARE_OTHER) {
        /* the server does not govern this connection (its application has
           no row and connbudget.unconfigured_applications is "other"): no
           share, a fixed size as without the extension, said once */
        if (pool->share.extension != 0)
            cbpool__format(msg, CBPOOL_LOG_WARN, "not-governed",
                           "the server does not govern pod \"%s\" of \"%s\" (no row in "
                           "connbudget.application_limits): using a fixed max_size of %d",
                           pool->ident.pod, pool->ident.application_name,
                           pool->cfg.max_size > 0 ? pool->cfg.max_size : CBPOOL__FIXED_SIZE);
        pool->share.extension = 0;
        pool->share.next_ns = now + cbpool__jitter_ns(pool, pool->share.refresh_ms, 90, 110);
    } else if (a->answered && !a->bad && a->status == CBPOOL__SHARE_LEFT) {
        /* handed back by another connection of this pool's session; the
           next refresh reports again and brings it back */
        pool->share.next_ns = now + cbpool__jitter_ns(pool, pool->share.refresh_ms, 90, 110);
    } else if (a->answered && !a->bad && a->status == CBPOOL__SHARE_REFUSED) {
        /* governed when it connected, no more: a refusal that will not
           change by itself; the share it had stands, asked again seldom */
        CBPOOL__COUNT(pool, budget_errors);
        if (pool->share.invalid != -1)
            cbpool__format(msg, CBPOOL_LOG_ERROR, "share-refused",
                           "the server no longer gives pod \"%s\" of \"%s\" a share (%s); "
                           "the pool stays within %d connections",
                           pool->ident.pod, pool->ident.application_name, a->detail,
                           pool->share.limit);
        pool->share.invalid = -1;
        pool->share.next_ns = now + cbpool__jitter_ns(pool, pool->share.refresh_ms, 1000, 1100);
    } else if (a->answered && !a->bad) {
        cbpool__share_take_size_locked(pool, a, now, msg);
    } else if (a->answered) {
        /* the server answered, but not an answer: nothing is taken from it
           (not the share, the extension's presence or the interval), and
           it is said once per kind of nonsense, not at every refresh */
        CBPOOL__COUNT(pool, budget_errors);
        if (a->bad != pool->share.invalid)
            cbpool__format(msg, CBPOOL_LOG_WARN, "budget-invalid",
                           "%s; ignored, the pool stays within %d connections", a->why,
                           pool->share.limit);
        pool->share.invalid = a->bad;
        pool->share.next_ns = now + cbpool__jitter_ns(pool, pool->share.refresh_ms, 90, 110);
    } else if (strcmp(a->state, "42883") == 0 || strcmp(a->state, "3F000") == 0 ||
               strcmp(a->state, "55000") == 0 || cbpool__share_protocol_unknown(a->state)) {
        /* no extension here (or not preloaded): a fixed size, said once */
        const char *text = a->res ? PQresultErrorField(a->res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        if (pool->share.extension != 0)
            cbpool__format(msg, CBPOOL_LOG_WARN, "no-extension",
                           "the server has no usable connbudget extension (%s); "
                           "using a fixed max_size of %d",
                           text ? text : "no answer",
                           pool->cfg.max_size > 0 ? pool->cfg.max_size : CBPOOL__FIXED_SIZE);
        pool->share.extension = 0;
        /* look again now and then: the extension may be installed later */
        pool->share.refresh_ms = pool->cfg.refresh_ms > 0 ? pool->cfg.refresh_ms
                                                     : CBPOOL__NO_EXTENSION_MS;
        pool->share.next_ns = now + cbpool__jitter_ns(pool, pool->share.refresh_ms, 90, 110);
        CBPOOL__COUNT(pool, budget_errors);
    } else {
        CBPOOL__COUNT(pool, budget_errors);
        broken = PQstatus(pg) != CONNECTION_OK || !a->res;
        cbpool__format(msg, CBPOOL_LOG_WARN, "budget-error",
                       "%s failed: %s",
                       a->protocol == 2 ? "reading connbudget.share" : "connbudget.pool_share()",
                       a->res ? PQresultErrorMessage(a->res) : PQerrorMessage(pg));
        pool->share.next_ns = now + cbpool__jitter_ns(pool, pool->share.refresh_ms, 90, 110);
    }
    cbpool__share_resize_locked(pool);
    return broken;
}

/*
 * Report the demand and read the share (docs/protocol.md, sections 3-5) on
 * c, which nobody else uses meanwhile (maintenance took it, or a releasing
 * thread calls on its own), outside the lock; then, on a cluster's host,
 * check its role and lag on the same connection.  Returns 0 if the
 * connection is still good.  An answer that is not one (see
 * cbpool__check_share_words, cbpool__check_share) is an error and no size:
 * the pool keeps the share it had -- before its first answer, the one
 * connection it starts with; on a server found without the extension, its
 * fixed max_size -- and asks again an interval later.  The connection is
 * not to blame for what the server answered: it stays.
 */
static int cbpool__share_refresh(cbpool *pool, cbpool__conn *c)
{
    cbpool__share_answer a;
    cbpool__msg msg;
    int broken;

    msg.id = NULL;
    cbpool__share_ask(pool, c->pg, &a);
    cbpool__lock(pool);
    broken = cbpool__share_take_locked(pool, c->pg, &a, &msg);
    cbpool__unlock(pool);
    cbpool__emit(pool, &msg);
    if (a.res)
        PQclear(a.res);
    /* a cluster's host: its role and lag, on the same connection */
    if (!broken && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        broken = cbpool__member_check(pool, c->pg);
    /* a failed query inside no transaction leaves the connection idle; an
       invalid answer on a connection still idle leaves it good */
    return broken || PQtransactionStatus(c->pg) != PQTRANS_IDLE;
}

/*
 * Hand the share back before closing (docs/protocol.md, section 7), on one
 * of the pool's idle connections: the pods that stay get it a publish
 * period later, not connbudget.pod_ttl later.  Its answer does not matter.
 */
static void cbpool__share_leave(cbpool *pool, PGconn *pg, int protocol)
{
    int timeout = pool->cfg.validate_timeout_ms < 1000 ? pool->cfg.validate_timeout_ms : 1000;
    PGresult *res = cbpool__exec_deadline(pg, protocol == 2 ? "SET connbudget.demand = 'leave'"
                                                            : "SELECT connbudget.pool_share(0)",
                                          0, NULL, timeout);
    cbpool__msg msg;

    msg.id = NULL;
    cbpool__format(&msg, CBPOOL_LOG_DEBUG, "leave", "%s",
                   res && (PQresultStatus(res) == PGRES_COMMAND_OK ||
                           PQresultStatus(res) == PGRES_TUPLES_OK)
                       ? "the share was handed back" : "handing the share back failed");
    if (res)
        PQclear(res);
    cbpool__emit(pool, &msg);
}

/* == [connect] connecting: attempts, their outcomes ====================== */

/* Grow again from one connection at a time (an empty pool, a failed
   connect); with the lock. */
static void cbpool__connect_ramp_restart_locked(cbpool *pool)
{
    pool->connect.ramp = 1;
}

/* Called outside the lock by the maintainer, which owns attempts[]. */
static void cbpool__connect_start(cbpool *pool, int for_refresh)
{
    enum { CBPOOL__MAX_KEYS = 48 };
    const char *keys[CBPOOL__MAX_KEYS];
    const char *values[CBPOOL__MAX_KEYS];
    cbpool__attempt *a = &pool->connect.attempts[pool->connect.nattempts];
    cbpool_secret *secret = NULL;
    PQconninfoOption *extra = NULL;
    int n = 0;

    a->started_ns = cbpool__now_ns();
    a->deadline_ns = a->started_ns + (int64_t)pool->connect.timeout_ms * 1000000;
    a->status = PGRES_POLLING_WRITING;
    a->for_refresh = for_refresh;
    a->why[0] = '\0';
    a->pg = NULL;
    pool->connect.nattempts++;

    keys[n] = "dbname";
    values[n++] = pool->ident.conninfo;
    if (pool->cfg.credentials.func) {
        /* this connection's password or extra conninfo, asked for now */
        secret = (cbpool_secret *)cbpool__alloc(&pool->cfg, sizeof *secret);
        if (!secret) {
            snprintf(a->why, sizeof a->why, "credentials: out of memory");
            a->status = PGRES_POLLING_FAILED;
            return;
        }
        if (pool->cfg.credentials.func(pool->cfg.credentials.user_data, secret) != 0) {
            secret->error[sizeof secret->error - 1] = '\0';
            snprintf(a->why, sizeof a->why, "credentials: %s",
                     secret->error[0] ? secret->error : "the credentials callback failed");
            a->status = PGRES_POLLING_FAILED;
        } else {
            secret->password[sizeof secret->password - 1] = '\0';
            secret->conninfo[sizeof secret->conninfo - 1] = '\0';
            if (secret->conninfo[0]) {
                char *perr = NULL;
                extra = PQconninfoParse(secret->conninfo, &perr);
                if (!extra) {
                    char line[200];
                    cbpool__first_line(perr ? perr : "out of memory", line, sizeof line);
                    snprintf(a->why, sizeof a->why,
                             "credentials: the conninfo returned is invalid: %s", line);
                    a->status = PGRES_POLLING_FAILED;
                }
                if (perr)
                    PQfreemem(perr);
            }
            if (extra) {
                PQconninfoOption *o;
                for (o = extra; o->keyword && n < CBPOOL__MAX_KEYS - 5; o++)
                    if (o->val && o->val[0]) {
                        keys[n] = o->keyword;
                        values[n++] = o->val;
                    }
            }
            if (secret->password[0]) {
                keys[n] = "password";
                values[n++] = secret->password;
            }
        }
    }
    if (a->status != PGRES_POLLING_FAILED) {
        keys[n] = "application_name";
        values[n++] = pool->ident.application_name;
        keys[n] = "options";
        values[n++] = pool->connect.session_option ? pool->ident.options : pool->ident.options_plain;
        keys[n] = NULL;
        values[n] = NULL;
        a->pg = PQconnectStartParams(keys, values, 1);
        if (!a->pg)
            a->status = PGRES_POLLING_FAILED;
    }
    if (extra) {
        PQconninfoOption *o;
        for (o = extra; o->keyword; o++)
            if (o->val)
                memset(o->val, 0, strlen(o->val));
        PQconninfoFree(extra);
    }
    if (secret) {
        /* the secret does not outlive the connect */
        volatile char *v = (volatile char *)secret;
        size_t i;
        for (i = 0; i < sizeof *secret; i++)
            v[i] = 0;
        cbpool__free(&pool->cfg, secret);
    }
    if (a->pg) {
        /* a refusal's SQLSTATE is only available in verbose error text */
        PQsetErrorVerbosity(a->pg, PQERRORS_VERBOSE);
        PQsetNoticeReceiver(a->pg, cbpool__notice, pool);
        if (PQstatus(a->pg) == CONNECTION_BAD)
            a->status = PGRES_POLLING_FAILED;
    }
}

/*
 * Does a failed connect mean the server is unreachable?  A message without
 * a SQLSTATE comes from libpq itself (refused, reset, timed out, no route,
 * a failed credentials callback); from the server, class 08 and 57P01-03
 * (shutting down, starting up) say it is not there to serve.  Everything
 * else (53300, authentication, a missing database) came from a server that
 * is there.  Verbose messages read "FATAL:  53300: ..." in any language.
 */
static int cbpool__connect_unreachable(const char *text)
{
    const char *p;
    for (p = strstr(text, ":  "); p; p = strstr(p + 1, ":  ")) {
        const char *st = p + 3;
        int i, ok = 1;
        for (i = 0; i < 5; i++)
            ok = ok && ((st[i] >= '0' && st[i] <= '9') || (st[i] >= 'A' && st[i] <= 'Z'));
        if (ok && st[5] == ':' && st[6] == ' ')
            return strncmp(st, "08", 2) == 0 || strncmp(st, "57P01", 5) == 0 ||
                   strncmp(st, "57P02", 5) == 0 || strncmp(st, "57P03", 5) == 0;
    }
    return 1;
}

/* The number after lead in text, followed by exactly tail (or, without a
   tail, by the end of a word): read as any number from a server is
   (cbpool__parse_int), a run of at most 10 digits within the range of a
   refresh interval; a sign, a space, a number too long, the text cut short
   at the end of the message: 0, none stated. */
static int cbpool__stated_number(const char *text, const char *lead, const char *tail)
{
    const char *at = text ? strstr(text, lead) : NULL;
    char digits[11];
    size_t n;
    long long ms;

    if (!at)
        return 0;
    at += strlen(lead);
    n = strspn(at, "0123456789");   /* stops at the terminating NUL */
    if (n == 0 || n >= sizeof digits ||
        (tail ? strncmp(at + n, tail, strlen(tail)) != 0
              : (at[n] != '\0' && at[n] != ' ' && at[n] != '\n')))
        return 0;
    memcpy(digits, at, n);
    digits[n] = '\0';
    if (cbpool__parse_int(digits, CBPOOL__REFRESH_MIN_MS, CBPOOL__REFRESH_MAX_MS, &ms) != 0)
        return 0;
    return (int)ms;
}

/* The pace a refusing server states: in the error's context field as
   "connbudget: retry_ms=N" (connbudget 1.2, protocol 2), else at the end
   of its hint, "Pools re-read their share every N ms
   (connbudget.refresh_interval)." (1.1); 0 when it states none. */
static int cbpool__stated_refresh_ms(const char *text)
{
    int ms = cbpool__stated_number(text, "connbudget: retry_ms=", NULL);
    return ms ? ms : cbpool__stated_number(text, "re-read their share every ",
                                           " ms (connbudget.refresh_interval)");
}

/* Does text state a pace after lead (and before tail, as in
   cbpool__stated_number) that is not one: "abc", a sign, a number out of
   range or too long?  Then 1, and the word after lead, quoted, into out
   (at least 16 bytes).  0 when it states none there (PostgreSQL's own
   53300 refusals, connbudget 1.0) or a pace that reads. */
static int cbpool__stated_bad(const char *text, const char *lead, const char *tail,
                              char *out, size_t outlen)
{
    const char *at = text ? strstr(text, lead) : NULL;
    if (!at || cbpool__stated_number(text, lead, tail))
        return 0;
    at += strlen(lead);
    cbpool__quote(at, (int)strcspn(at, " \n"), out, outlen);
    return 1;
}

/* How a connect failed (cbpool__connect_outcome). */
#define CBPOOL__CONNECT_FAILED 0        /* by a server that is there: a failed
                                           login, a missing database, ... */
#define CBPOOL__CONNECT_UNREACHABLE 1   /* see cbpool__connect_unreachable */
#define CBPOOL__CONNECT_BACKPRESSURE 2  /* 53300: the budget is full right now */
#define CBPOOL__CONNECT_REFUSED 3       /* 42501, 53400: refused for good (the
                                           role may not claim the application or
                                           the pod, or holds too many pods) */

/* Verbose messages read "FATAL:  53300: ..." in any language. */
static int cbpool__connect_outcome(const char *text)
{
    if (strstr(text, ":  53300: "))
        return CBPOOL__CONNECT_BACKPRESSURE;
    if (strstr(text, ":  42501: ") || strstr(text, ":  53400: "))
        return CBPOOL__CONNECT_REFUSED;
    return cbpool__connect_unreachable(text) ? CBPOOL__CONNECT_UNREACHABLE
                                             : CBPOOL__CONNECT_FAILED;
}

static void cbpool__connect_failed(cbpool *pool, PGconn *pg, const char *why,
                                   int for_refresh, int64_t started_ns)
{
    char line[256];
    const char *text = why ? why : (pg ? PQerrorMessage(pg) : "out of memory");
    int outcome = cbpool__connect_outcome(text);
    cbpool__msg msg, bmsg, pmsg;

    msg.id = NULL;
    bmsg.id = NULL;
    pmsg.id = NULL;
    cbpool__first_line(text, line, sizeof line);
    if (pool->fast.observe)
        cbpool__on_connect(pool, NULL, started_ns, line);
    cbpool__lock(pool);
    if (outcome == CBPOOL__CONNECT_UNREACHABLE)
        cbpool__breaker_unreachable_locked(pool, started_ns, &bmsg);
    else
        cbpool__breaker_answered_locked(pool, &bmsg);
    if (for_refresh)
        cbpool__share_connect_ended_locked(pool);
    cbpool__connect_ramp_restart_locked(pool);
    if (pool->connect.session_option && strstr(text, "connbudget.pool_session")) {
        /* a server with connbudget before 1.1 reserves the prefix but does
           not know the setting: connect without it, at once */
        pool->connect.session_option = 0;
        cbpool__format(&msg, CBPOOL_LOG_INFO, "no-pool-session",
                       "the server does not know connbudget.pool_session; "
                       "pools that share pod id \"%s\" each take the pod's whole share",
                       pool->ident.pod);
        cbpool__unlock(pool);
        cbpool__emit(pool, &msg);
        if (pg)
            PQfinish(pg);
        return;
    }
    CBPOOL__COUNT(pool, connect_failures);
    if (outcome == CBPOOL__CONNECT_BACKPRESSURE) {
        /* backpressure, not an outage: back off and re-read the share */
        char stated[48];
        CBPOOL__COUNT(pool, connects_refused);
        cbpool__share_due_locked(pool, 0);
        /* a pace it reads (no refresh_ms of its own) that is not one is a
           bad answer like a bad share: not taken, counted, said once per
           run of failed connects */
        if (pool->cfg.refresh_ms == 0 &&
            (cbpool__stated_bad(text, "connbudget: retry_ms=", NULL, stated, sizeof stated) ||
             cbpool__stated_bad(text, "re-read their share every ",
                                " ms (connbudget.refresh_interval)", stated, sizeof stated))) {
            CBPOOL__COUNT(pool, budget_errors);
            if (pool->breaker.failures == 0)
                cbpool__format(&pmsg, CBPOOL_LOG_WARN, "pace-invalid",
                               "a refusal (53300) states its pace as %s, not a number of ms "
                               "from %d to %d; not taken", stated, CBPOOL__REFRESH_MIN_MS,
                               CBPOOL__REFRESH_MAX_MS);
        }
    }
    cbpool__breaker_backoff_locked(pool, outcome, text);
    if (outcome == CBPOOL__CONNECT_REFUSED)
        cbpool__breaker_refused_locked(pool, line, &msg);
    else if (pool->breaker.failures == 1 || strcmp(line, pool->connect.last_error) != 0 ||
             (pool->breaker.failures & (pool->breaker.failures - 1)) == 0)
        cbpool__format(&msg,
                       outcome == CBPOOL__CONNECT_BACKPRESSURE ? CBPOOL_LOG_INFO : CBPOOL_LOG_WARN,
                       outcome == CBPOOL__CONNECT_BACKPRESSURE ? "connect-refused"
                                                               : "connect-failed",
                       "connect failed (%d in a row): %s", pool->breaker.failures, line);
    snprintf(pool->connect.last_error, sizeof pool->connect.last_error, "%s", line);
    cbpool__unlock(pool);
    cbpool__emit(pool, &msg);
    if (bmsg.id)
        cbpool__emit(pool, &bmsg);
    if (pmsg.id)
        cbpool__emit(pool, &pmsg);
    if (pg)
        PQfinish(pg);
}

static void cbpool__connect_done(cbpool *pool, PGconn *pg, int for_refresh,
                                 int64_t started_ns)
{
    cbpool__conn *c = cbpool__slots_new_conn(pool);
    int64_t now = cbpool__now_ns();
    int keep;
    cbpool__msg msg;

    PQsetErrorVerbosity(pg, PQERRORS_DEFAULT);
    if (!c) {
        PQfinish(pg);
        cbpool__lock(pool);
        if (for_refresh)
            cbpool__share_connect_ended_locked(pool);
        cbpool__unlock(pool);
        return;
    }
    CBPOOL__STORE(&c->pg, pg);
    c->created_ns = now;
    c->last_used_ns = now;
    cbpool__lock(pool);
    if (pool->cfg.max_lifetime_ms > 0) {
        int64_t life = (int64_t)pool->cfg.max_lifetime_ms * 1000000;
        int64_t jitter = life / 100 * pool->cfg.lifetime_jitter_pct;
        c->retire_ns = now + life -
                       (jitter > 0 ? (int64_t)(cbpool__rand(pool) % (uint64_t)jitter) : 0);
    }
    CBPOOL__COUNT(pool, connects);
    msg.id = NULL;
    cbpool__member_connected_locked(pool, pg, now);
    /* a probe that got through closes the circuit; the pool grows back from
       this one connection in steps of 1, 2, 4, ... */
    cbpool__breaker_connected_locked(pool, &msg);
    if (!for_refresh && pool->connect.nattempts <= 1) {
        /* the last connect of a growth step: the next step may open twice
           as many, after a pause drawn at random */
        int pause_ms = pool->share.refresh_ms < 200 ? pool->share.refresh_ms / 10 : 20;
        pool->connect.ramp = pool->connect.ramp < (CBPOOL__MAX_ATTEMPTS - 1) / 2
                                 ? pool->connect.ramp * 2 : CBPOOL__MAX_ATTEMPTS - 1;
        pool->connect.ramp_at_ns = now + cbpool__jitter_ns(pool, pause_ms, 0, 100);
    }
    keep = !pool->slots.closing &&
           (pool->slots.total < pool->share.limit ||
            (for_refresh && !pool->share.conn &&
             (pool->cfg.max_size == 0 || pool->slots.total < pool->cfg.max_size))) &&
           cbpool__slots_reserve_locked(pool);
    if (keep) {
        cbpool__slots_add_locked(pool, c);
        /* the refresh first, if it was made for it or is the pool's first
           (kept only if the share allows) */
        if (!cbpool__share_take_new_locked(pool, c, for_refresh))
            cbpool__slots_offer_locked(pool, c);
        pthread_cond_broadcast(&pool->slots.ready_cond);   /* cbpool_wait_ready() */
    }
    if (!keep) {
        c->close_reason = pool->slots.closing ? CBPOOL_CLOSE_POOL_CLOSED : CBPOOL_CLOSE_OVER_SHARE;
        if (for_refresh)
            cbpool__share_connect_ended_locked(pool);
    }
    cbpool__unlock(pool);
    if (msg.id)
        cbpool__emit(pool, &msg);
    if (pool->fast.observe)
        cbpool__on_connect(pool, pg, started_ns, NULL);
    if (!keep)
        cbpool__slots_destroy(pool, c);
}

/*
 * The share dropped while connects were under way: those beyond it are
 * abandoned before they finish, not finished and closed at once (the
 * server would count a backend of the application beyond the pod's share
 * meanwhile).  Not the refresh's own connect (kept only if the new share
 * covers it), one that already failed (reported as such), nor any while
 * the circuit is not closed (the probe).  Called outside the lock by the
 * maintainer, which owns attempts[].
 */
static void cbpool__connect_drop_over_share(cbpool *pool)
{
    int i, excess, growing = 0;

    for (i = 0; i < pool->connect.nattempts; i++)
        growing += !pool->connect.attempts[i].for_refresh;
    cbpool__lock(pool);
    excess = pool->breaker.state == CBPOOL_BREAKER_CLOSED && !pool->slots.closing
                 ? pool->slots.total + growing - pool->share.limit : 0;
    cbpool__unlock(pool);
    for (i = pool->connect.nattempts - 1; i >= 0 && excess > 0; i--) {
        cbpool__attempt *a = &pool->connect.attempts[i];
        if (a->for_refresh || a->status == PGRES_POLLING_FAILED)
            continue;
        PQfinish(a->pg);
        *a = pool->connect.attempts[--pool->connect.nattempts];
        excess--;
    }
}

/*
 * The deadline of the next connect attempt after one ended.  A server that
 * is busy, starting up after a crash or swamped by a whole fleet
 * reconnecting, may take longer than connect_timeout_ms to answer, and an
 * attempt given up just before the answer is all lost: after a timeout the
 * next attempt waits twice as long, up to 8 times connect_timeout_ms (at
 * most a minute unless connect_timeout_ms is longer).  An answer from a
 * server, a connection or an error it sent, sets it back.  A connect
 * refused at once says nothing about how slow the server is: it keeps it.
 */
static void cbpool__connect_timeout_next(cbpool *pool, int timed_out, int answered)
{
    long long base = pool->cfg.connect_timeout_ms;
    long long cap = base * 8 < 60000 ? base * 8 : (base > 60000 ? base : 60000);
    long long next = pool->connect.timeout_ms;

    if (answered)
        next = base;
    else if (timed_out)
        next = next * 2 < cap ? next * 2 : cap;
    pool->connect.timeout_ms = (int)next;
}

/* Drive the connect attempts for up to wait_ms, waking early on the pipe;
   first abandon those beyond the share. */
static void cbpool__connect_poll(cbpool *pool, int wait_ms)
{
    struct pollfd pfd[CBPOOL__MAX_ATTEMPTS + 1];
    int n = 0, i, rc;
    int64_t now;

    cbpool__connect_drop_over_share(pool);
    now = cbpool__now_ns();
    for (i = 0; i < pool->connect.nattempts; i++) {
        cbpool__attempt *a = &pool->connect.attempts[i];
        int64_t left = a->deadline_ns - now;
        if (left < (int64_t)wait_ms * 1000000)
            wait_ms = (int)(left > 0 ? left / 1000000 + 1 : 0);
        if (a->status == PGRES_POLLING_FAILED)
            wait_ms = 0;   /* failed before it started: report it now */
        pfd[n].fd = a->pg ? PQsocket(a->pg) : -1;
        pfd[n].events = a->status == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        pfd[n].revents = 0;
        n++;
    }
    if (pool->maint.thread_started) {
        pfd[n].fd = pool->maint.wake_fds[0];
        pfd[n].events = POLLIN;
        pfd[n].revents = 0;
        n++;
    }
    rc = n > 0 ? poll(pfd, (nfds_t)n, wait_ms) : 0;
    if (n == 0 && wait_ms > 0) {
        struct timespec ts;
        ts.tv_sec = wait_ms / 1000;
        ts.tv_nsec = (long)(wait_ms % 1000) * 1000000;
        nanosleep(&ts, NULL);
    }
    if (pool->maint.thread_started && rc > 0 && pfd[n - 1].revents) {
        cbpool__maint_woken(pool);
    }

    now = cbpool__now_ns();
    for (i = 0; i < pool->connect.nattempts;) {
        cbpool__attempt *a = &pool->connect.attempts[i];
        int finished = 0;
        if (a->status != PGRES_POLLING_FAILED &&
            (pfd[i].revents || pfd[i].fd < 0))
            a->status = PQconnectPoll(a->pg);
        if (a->status == PGRES_POLLING_OK) {
            cbpool__connect_timeout_next(pool, 0, 1);
            cbpool__connect_done(pool, a->pg, a->for_refresh, a->started_ns);
            finished = 1;
        } else if (a->status == PGRES_POLLING_FAILED) {
            cbpool__connect_timeout_next(
                pool, 0, !a->why[0] && a->pg &&
                             cbpool__connect_outcome(PQerrorMessage(a->pg)) !=
                                 CBPOOL__CONNECT_UNREACHABLE);
            cbpool__connect_failed(pool, a->pg, a->why[0] ? a->why : NULL, a->for_refresh,
                                   a->started_ns);
            finished = 1;
        } else if (now >= a->deadline_ns) {
            cbpool__connect_timeout_next(pool, 1, 0);
            cbpool__connect_failed(pool, a->pg, "connect timed out", a->for_refresh,
                                   a->started_ns);
            finished = 1;
        }
        if (finished) {
            pool->connect.attempts[i] = pool->connect.attempts[--pool->connect.nattempts];
            pfd[i] = pfd[pool->connect.nattempts];
        } else
            i++;
    }
    cbpool__lock(pool);
    pool->connect.connecting = pool->connect.nattempts;
    cbpool__unlock(pool);
}

/* == [breaker] the circuit breaker, backoff and permanent refusals ======= */

/* The open period of the circuit: breaker_open_ms, doubled by each failed
   probe up to 8 times that, then 80% to 120% of it at random. */
static int64_t cbpool__breaker_period_ns(cbpool *pool)
{
    int n = pool->breaker.reopens < 3 ? pool->breaker.reopens : 3;
    return cbpool__jitter_ns(pool, pool->cfg.breaker_open_ms << n, 80, 120);
}

/* A server answered (a connect, or a refusal): nothing is unreachable any
   more, and the circuit closes if it was open; with the lock. */
static void cbpool__breaker_answered_locked(cbpool *pool, cbpool__msg *msg)
{
    cbpool__member_answered_locked(pool);
    CBPOOL__STORE(&pool->breaker.unreachable, 0);
    if (pool->breaker.state != CBPOOL_BREAKER_CLOSED) {
        pool->breaker.state = CBPOOL_BREAKER_CLOSED;
        pool->breaker.reopens = 0;
        cbpool__format(msg, CBPOOL_LOG_INFO, "breaker-closed",
                       "the server answers again: the circuit breaker is closed");
    }
}

/* A connect that started at started_ns failed as unreachable: after
   breaker_failures of them in a row, or such failures for breaker_after_ms,
   the circuit opens (waiters fail at once); a failed probe opens it again
   for longer.  With the lock. */
static void cbpool__breaker_unreachable_locked(cbpool *pool, int64_t started_ns,
                                               cbpool__msg *msg)
{
    int64_t now = cbpool__now_ns();
    if (pool->breaker.unreachable == 0) {
        pool->breaker.unreachable_since_ns = started_ns;
        cbpool__member_unreachable_locked(pool);
    }
    CBPOOL__STORE(&pool->breaker.unreachable, pool->breaker.unreachable + 1);
    if (pool->cfg.breaker_failures == 0 || pool->slots.closing)
        return;
    if (pool->breaker.state == CBPOOL_BREAKER_HALF_OPEN) {
        /* the probe failed: open again, for longer */
        pool->breaker.reopens++;
        pool->breaker.state = CBPOOL_BREAKER_OPEN;
        pool->breaker.until_ns = now + cbpool__breaker_period_ns(pool);
    } else if (pool->breaker.state == CBPOOL_BREAKER_CLOSED &&
               (pool->breaker.unreachable >= pool->cfg.breaker_failures ||
                now - pool->breaker.unreachable_since_ns >=
                    (int64_t)pool->cfg.breaker_after_ms * 1000000)) {
        int64_t period = cbpool__breaker_period_ns(pool);
        pool->breaker.state = CBPOOL_BREAKER_OPEN;
        pool->breaker.until_ns = now + period;
        CBPOOL__COUNT(pool, breaker_openings);
        cbpool__slots_wake_waiters_locked(pool);
        cbpool__format(msg, CBPOOL_LOG_WARN, "breaker-open",
                       "the server is unreachable (%d connects failed in %.1f s): the "
                       "circuit breaker is open, acquires that find no idle connection "
                       "fail at once; the next try in %.1f s",
                       pool->breaker.unreachable,
                       (double)(now - pool->breaker.unreachable_since_ns) / 1e9,
                       (double)period / 1e9);
    }
}

/*
 * After a failed connect (outcome CBPOOL__CONNECT_*, text libpq's
 * message): no connect before breaker.backoff_until_ns.  With the lock.
 *   - 53300: the refusal registered this pod with the server, which
 *     shrinks the others at their next refresh: retry at that pace and no
 *     faster, within the pod's lease.  A pool that never read its share
 *     learns the pace from the refusal.
 *   - 42501, 53400: the refusal will not change by itself: retry no
 *     sooner than CBPOOL__REFUSED_INTERVALS refresh intervals, or
 *     CBPOOL__REFUSED_MS before the pool knows the interval.
 *   - anything else: exponential backoff with full jitter.
 */
static void cbpool__breaker_backoff_locked(cbpool *pool, int outcome, const char *text)
{
    int64_t now = cbpool__now_ns();
    pool->breaker.failures++;
    if (outcome == CBPOOL__CONNECT_BACKPRESSURE) {
        int stated = pool->cfg.refresh_ms > 0 ? 0 : cbpool__stated_refresh_ms(text);
        int cap;
        if (stated)
            cbpool__share_learn_pace_locked(pool, stated);
        cap = pool->share.refresh_ms < pool->cfg.backoff_max_ms ? pool->share.refresh_ms
                                                                 : pool->cfg.backoff_max_ms;
        pool->breaker.backoff_until_ns = now + cbpool__jitter_ns(pool, cap, 100, 120);
    } else if (outcome == CBPOOL__CONNECT_REFUSED) {
        int known = pool->cfg.refresh_ms > 0 || pool->share.reported;
        int ms = known ? pool->share.refresh_ms * CBPOOL__REFUSED_INTERVALS : CBPOOL__REFUSED_MS;
        pool->breaker.backoff_until_ns = now + cbpool__jitter_ns(pool, ms, 100, 110);
    } else
        pool->breaker.backoff_until_ns =
            now + cbpool__backoff_ns(pool, pool->cfg.backoff_initial_ms, pool->cfg.backoff_max_ms,
                                     pool->breaker.failures - 1);
    if (outcome == CBPOOL__CONNECT_FAILED || outcome == CBPOOL__CONNECT_BACKPRESSURE)
        pool->breaker.refused = 0;   /* the server takes this identity again */
}

/* A permanent refusal (42501, 53400), after its backoff: counted, logged
   as an error once per distinct message, and while the pool holds no
   connection its waiting acquirers fail at once with CBPOOL_EREFUSED.
   With the lock. */
static void cbpool__breaker_refused_locked(cbpool *pool, const char *line, cbpool__msg *msg)
{
    CBPOOL__COUNT(pool, refusals_permanent);
    pool->breaker.refused = 1;
    if (strcmp(line, pool->breaker.refusal) != 0) {
        cbpool__format(msg, CBPOOL_LOG_ERROR, "refused-permanently",
                       "the server refuses pod \"%s\" of \"%s\" for good: %s; this will not "
                       "change by itself (fix the role or connbudget.application_limits), "
                       "the next try in %.1f s",
                       pool->ident.pod, pool->ident.application_name, line,
                       (double)(pool->breaker.backoff_until_ns - cbpool__now_ns()) / 1e9);
        snprintf(pool->breaker.refusal, sizeof pool->breaker.refusal, "%s", line);
    }
    if (pool->slots.total == 0)
        cbpool__slots_wake_waiters_locked(pool);
}

/* A connect succeeded: no backoff, no refusal, and the circuit closes (a
   probe that got through); with the lock. */
static void cbpool__breaker_connected_locked(cbpool *pool, cbpool__msg *msg)
{
    pool->breaker.failures = 0;
    pool->breaker.backoff_until_ns = 0;
    pool->breaker.refused = 0;
    cbpool__breaker_answered_locked(pool, msg);
}

/*
 * Maintenance's gate: while the circuit is open, no connects at all (nor
 * the refresh's); when the open period is over, one probe, whether or not
 * anyone waits (the pool must learn that the server is back); while the
 * probe is under way, nothing more.
 */
static void cbpool__breaker_gate_locked(cbpool *pool, int64_t now, int *start,
                                        int *refresh_connect)
{
    if (pool->breaker.state == CBPOOL_BREAKER_CLOSED)
        return;
    *start = 0;
    *refresh_connect = 0;
    if (pool->breaker.state == CBPOOL_BREAKER_OPEN && !pool->slots.closing &&
        now >= pool->breaker.until_ns && pool->connect.nattempts == 0) {
        pool->breaker.state = CBPOOL_BREAKER_HALF_OPEN;
        *start = 1;
    }
}

/* Should an acquire that finds no idle connection fail at once, and with
   what error?  0: it may wait.  The server is unreachable (the circuit is
   open, or a cluster's host is down: the cluster goes to another), or it
   refused this pool for good and no connection is held. */
static int cbpool__breaker_fail_fast(const cbpool *pool)
{
    if (pool->breaker.state != CBPOOL_BREAKER_CLOSED || cbpool__member_down(pool))
        return CBPOOL_EUNAVAILABLE;
    if (pool->breaker.refused && pool->slots.total == 0)
        return CBPOOL_EREFUSED;
    return 0;
}

/* == [life] open and close =============================================== */

/* The pool's own copies of its strings, and the pool itself. */
static void cbpool__free_strings_and_pool(const cbpool_config *cfg, cbpool *pool)
{
    cbpool__free(cfg, pool->ident.conninfo);
    cbpool__free(cfg, pool->ident.application_name);
    cbpool__free(cfg, pool->ident.pod);
    cbpool__free(cfg, pool->ident.options);
    cbpool__free(cfg, pool->ident.options_plain);
    cbpool__free(cfg, pool);
}

/* A pool; member_check_ms > 0 makes it a host of a cluster. */
static cbpool *cbpool__open(const cbpool_config *cfg_in, int member_check_ms, char *err,
                            size_t errlen)
{
    cbpool *pool;
    cbpool_config cfg;
    PQconninfoOption *opts, *o;
    char *parse_err = NULL;
    const char *app = NULL, *user_options = NULL;
    int writes_only = -1;   /* target_session_attrs asks for a writable session */
    char host[256];

    if (err && errlen)
        err[0] = '\0';
    if (!cfg_in) {
        cbpool__config_fail(err, errlen, "cfg must not be NULL (use cbpool_config_default())");
        return NULL;
    }
    cfg = *cfg_in;
    if (!cfg.conninfo)
        cfg.conninfo = "";
    if (!cbpool__config_check(&cfg, err, errlen))
        return NULL;
    if (!PQisthreadsafe()) {
        cbpool__config_fail(err, errlen, "this libpq is not thread-safe (PQisthreadsafe() is 0)");
        return NULL;
    }
    opts = PQconninfoParse(cfg.conninfo, &parse_err);
    if (!opts) {
        size_t n = parse_err ? strlen(parse_err) : 0;
        while (n > 0 && (parse_err[n - 1] == '\n' || parse_err[n - 1] == ' '))
            parse_err[--n] = '\0';
        cbpool__config_fail(err, errlen, "invalid conninfo: %s",
                     parse_err ? parse_err : "out of memory");
        if (parse_err)
            PQfreemem(parse_err);
        return NULL;
    }
    for (o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "application_name") == 0 && o->val && *o->val)
            app = o->val;
        if (strcmp(o->keyword, "options") == 0 && o->val && *o->val)
            user_options = o->val;
        if (strcmp(o->keyword, "target_session_attrs") == 0 && o->val && *o->val)
            writes_only = strcmp(o->val, "read-write") == 0 || strcmp(o->val, "primary") == 0;
    }
    if (writes_only < 0 && getenv("PGTARGETSESSIONATTRS"))
        writes_only = strcmp(getenv("PGTARGETSESSIONATTRS"), "read-write") == 0 ||
                      strcmp(getenv("PGTARGETSESSIONATTRS"), "primary") == 0;
    /* the pool passes both to libpq itself, which then no longer reads
       PGAPPNAME and PGOPTIONS: read them as libpq would */
    if (!user_options && getenv("PGOPTIONS") && *getenv("PGOPTIONS"))
        user_options = getenv("PGOPTIONS");
    if (!app && getenv("PGAPPNAME") && *getenv("PGAPPNAME"))
        app = getenv("PGAPPNAME");
    if (cfg.application_name)
        app = cfg.application_name;
    if (!app)
        app = "cbpool";
    if (strlen(app) == 0 || strlen(app) > 63) {
        PQconninfoFree(opts);
        cbpool__config_fail(err, errlen, "application_name must be 1 to 63 bytes (got %zu)",
                     strlen(app));
        return NULL;
    }
    if (!cfg.pod) {
        if (gethostname(host, sizeof host) != 0 || !host[0])
            snprintf(host, sizeof host, "pid-%ld", (long)getpid());
        host[63] = '\0';
        cfg.pod = host;
    }
    if (!cbpool__config_valid_pod(cfg.pod)) {
        PQconninfoFree(opts);
        cbpool__config_fail(err, errlen,
                     "pod \"%.80s\" is not 1 to 63 bytes of printable ASCII", cfg.pod);
        return NULL;
    }

    pool = (cbpool *)cbpool__alloc(&cfg, sizeof(cbpool));
    if (!pool) {
        PQconninfoFree(opts);
        cbpool__config_fail(err, errlen, "out of memory");
        return NULL;
    }
    pool->cfg = cfg;
    pool->fast.writes_only = writes_only > 0;
    pool->ident.conninfo = cbpool__strdup(&cfg, cfg.conninfo);
    pool->ident.application_name = cbpool__strdup(&cfg, app);
    pool->ident.pod = cbpool__strdup(&cfg, cfg.pod);
    pool->rng = (uint64_t)cbpool__now_ns() ^ ((uint64_t)getpid() << 32) ^
                (uint64_t)(uintptr_t)pool;
    if (!pool->rng)
        pool->rng = 88172645463325252ULL;
    /* connections of this pool are one pool session of the pod, so that
       pools sharing a pod id split its share */
    snprintf(pool->ident.session, sizeof pool->ident.session, "%016llx",
             (unsigned long long)cbpool__rand(pool));
    pool->connect.session_option = 1;
    pool->ident.options = cbpool__config_options(&cfg, user_options, cfg.pod, pool->ident.session);
    pool->ident.options_plain = cbpool__config_options(&cfg, user_options, cfg.pod, NULL);
    PQconninfoFree(opts);
    pool->cfg.conninfo = pool->ident.conninfo;
    pool->cfg.application_name = pool->ident.application_name;
    pool->cfg.pod = pool->ident.pod;
    if (!pool->ident.conninfo || !pool->ident.application_name || !pool->ident.pod || !pool->ident.options ||
        !pool->ident.options_plain) {
        cbpool__config_fail(err, errlen, "out of memory");
        goto fail;
    }

    pool->share.extension = -1;
    pool->share.size = -1;
    pool->share.budget = -1;
    pool->share.refresh_ms = cfg.refresh_ms > 0 ? cfg.refresh_ms : 1000;
    pool->fast.id = __atomic_add_fetch(&cbpool__pool_ids, 1, __ATOMIC_RELAXED);
    pool->fast.observe = pool->cfg.log_debug || pool->cfg.hooks.on_connect ||
                    pool->cfg.hooks.on_close || pool->cfg.hooks.on_acquire ||
                    pool->cfg.hooks.on_release;
    pool->connect.ramp = 1;
    pool->connect.timeout_ms = cfg.connect_timeout_ms;
    pool->maint.wake_fds[0] = pool->maint.wake_fds[1] = -1;
    pool->member.check_ms = member_check_ms;
    pool->member.lag_ms = -1;
    cbpool__share_resize_locked(pool);

    pthread_mutex_init(&pool->lock, NULL);
    pthread_condattr_init(&pool->condattr);
    pthread_condattr_setclock(&pool->condattr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->slots.ready_cond, &pool->condattr);

    if (cfg.background) {
        if (pipe(pool->maint.wake_fds) != 0) {
            cbpool__config_fail(err, errlen, "pipe: %s", strerror(errno));
            goto fail_sync;
        }
        fcntl(pool->maint.wake_fds[0], F_SETFL, O_NONBLOCK);
        fcntl(pool->maint.wake_fds[1], F_SETFL, O_NONBLOCK);
        fcntl(pool->maint.wake_fds[0], F_SETFD, FD_CLOEXEC);
        fcntl(pool->maint.wake_fds[1], F_SETFD, FD_CLOEXEC);
        pool->maint.thread_started = 1;
        if (pthread_create(&pool->maint.thread, NULL, cbpool__maint_thread, pool) != 0) {
            pool->maint.thread_started = 0;
            cbpool__config_fail(err, errlen, "cannot start the maintenance thread");
            goto fail_sync;
        }
    }
    return pool;

fail_sync:
    if (pool->maint.wake_fds[0] >= 0) {
        close(pool->maint.wake_fds[0]);
        close(pool->maint.wake_fds[1]);
    }
    pthread_cond_destroy(&pool->slots.ready_cond);
    pthread_condattr_destroy(&pool->condattr);
    pthread_mutex_destroy(&pool->lock);
fail:
    cbpool__free_strings_and_pool(&cfg, pool);
    return NULL;
}

CBPOOL_DEF cbpool *cbpool_open(const cbpool_config *cfg, char *err, size_t errlen)
{
    return cbpool__open(cfg, 0, err, errlen);
}

/* Free everything once closed and nothing is out; called with the lock. */
static void cbpool__free_pool(cbpool *pool)
{
    cbpool_config cfg = pool->cfg;
    cbpool__conn *c, *next;
    cbpool__unlock(pool);
    for (c = pool->slots.spare; c; c = next) {
        next = c->next;
        cbpool__free(&cfg, c);
    }
    pthread_cond_destroy(&pool->slots.ready_cond);
    pthread_condattr_destroy(&pool->condattr);
    pthread_mutex_destroy(&pool->lock);
    cbpool__free(&cfg, pool->slots.idle);
    cbpool__free_strings_and_pool(&cfg, pool);
}

CBPOOL_DEF void cbpool_close(cbpool *pool)
{
    cbpool__conn *c, *next, *idle_list = NULL;
    cbpool__waiter *w;
    int out, leave;

    cbpool__msg msg;

    if (!pool)
        return;
    msg.id = NULL;
    cbpool__lock(pool);
    if (pool->slots.closing) {
        /* the pool is gone once closed with nothing out: calling close
           twice is undefined; while connections are out, it is harmless */
        cbpool__unlock(pool);
        return;
    }
    pool->slots.closing = 1;
    cbpool__fast_off_locked(pool);
    for (w = pool->slots.wait_head; w; w = w->next)
        pthread_cond_signal(&w->cond);
    pthread_cond_broadcast(&pool->slots.ready_cond);
    cbpool__maint_wake(pool);
    cbpool__unlock(pool);

    if (pool->maint.thread_started) {
        pthread_join(pool->maint.thread, NULL);
        cbpool__lock(pool);
        close(pool->maint.wake_fds[0]);
        close(pool->maint.wake_fds[1]);
        pool->maint.wake_fds[0] = pool->maint.wake_fds[1] = -1;
        pool->maint.thread_started = 0;
        cbpool__unlock(pool);
    }

    cbpool__lock(pool);
    /* wait for acquirers and wait_ready() callers still inside to leave */
    while (pool->slots.waiters > 0 || pool->slots.ready_waiters > 0 || pool->maint.running) {
        pthread_cond_broadcast(&pool->slots.ready_cond);
        cbpool__unlock(pool);
        {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        cbpool__lock(pool);
    }
    /* connect attempts still under way (no-thread mode) */
    while (pool->connect.nattempts > 0) {
        PQfinish(pool->connect.attempts[--pool->connect.nattempts].pg);
    }
    cbpool__fast_drain_locked(pool, CBPOOL__RECLAIM_ALL);
    for (c = pool->slots.conns; c; c = next) {
        next = c->next;
        if (CBPOOL__LOAD(&c->state) != CBPOOL__IN_USE) {
            cbpool__slots_unlink_locked(pool, c);
            c->next = idle_list;
            idle_list = c;
        }
    }
    cbpool__share_close_locked(pool);
    pool->slots.idle_count = 0;
    out = pool->slots.in_use;
    pool->slots.out_at_close = out;
    pool->slots.closed_final = 1;
    leave = pool->share.extension == 1 ? pool->share.protocol : 0;
    if (out > 0)
        cbpool__format(&msg, CBPOOL_LOG_WARN, "close-in-use",
                       "cbpool_close(): %d connection(s) still in use; each is closed "
                       "when released, and the pool is freed after the last",
                       out);
    cbpool__unlock(pool);
    cbpool__emit(pool, &msg);

    if (leave && idle_list)
        cbpool__share_leave(pool, idle_list->pg, leave);
    for (c = idle_list; c; c = next) {
        next = c->next;
        cbpool__slots_destroy(pool, c);
    }
    if (out == 0) {
        cbpool__lock(pool);
        cbpool__free_pool(pool);   /* unlocks */
    }
}

/* == [run] transactions with retry: cbpool_run() ========================= */

#ifndef CBPOOL_NO_RUN
struct cbpool_tx {
    cbpool *pool;
    PGconn *conn;
    int attempt;
    char sqlstate[6];
    int64_t deadline_ns;        /* 0: none */
    int statements;             /* run since statement_timeout was set */
    int expired;                /* a statement was not sent: too late */
};

CBPOOL_DEF PGconn *cbpool_tx_conn(cbpool_tx *tx)
{
    return tx ? tx->conn : NULL;
}

CBPOOL_DEF int cbpool_tx_attempt(cbpool_tx *tx)
{
    return tx ? tx->attempt : 0;
}

CBPOOL_DEF int cbpool_tx_check(cbpool_tx *tx, const PGresult *res)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY ||
        st == PGRES_SINGLE_TUPLE || st == PGRES_COPY_IN || st == PGRES_COPY_OUT)
        return 1;
    /* the first failure is the cause; later ones in the same transaction
       only say it is aborted (25P02) */
    if (tx && !tx->sqlstate[0]) {
        if (res)
            cbpool__sqlstate(res, tx->sqlstate);
        if (!tx->sqlstate[0] && tx->conn && PQstatus(tx->conn) != CONNECTION_OK)
            snprintf(tx->sqlstate, sizeof tx->sqlstate, "08006");
    }
    return 0;
}

/* Milliseconds left before deadline_ns, rounded up; 0 if none are left. */
/* Milliseconds left, at most what statement_timeout takes (INT_MAX). */
static long long cbpool__run_ms_left(int64_t deadline_ns)
{
    int64_t left = deadline_ns - cbpool__now_ns();
    if (left <= 0)
        return 0;
    left = left / 1000000 + (left % 1000000 != 0);
    return left < 2147483647 ? (long long)left : 2147483647LL;
}

/*
 * Under a deadline, each statement of a unit of work may run only for the
 * time left: the first one for the statement_timeout set with BEGIN, every
 * later one after setting it again.  Past the deadline, a statement is not
 * sent at all and fails with 57014 (query_canceled), as if the server had
 * cancelled it.  Returns that failure, or NULL to go ahead.
 */
static PGresult *cbpool__tx_before(cbpool_tx *tx)
{
    long long left;
    PGresult *res;
    if (!tx->deadline_ns)
        return NULL;
    left = cbpool__run_ms_left(tx->deadline_ns);
    if (left == 0) {
        res = PQmakeEmptyPGresult(tx->conn, PGRES_FATAL_ERROR);
        tx->expired = 1;   /* the server's transaction is not aborted: no COMMIT */
        if (!tx->sqlstate[0])
            snprintf(tx->sqlstate, sizeof tx->sqlstate, "57014");
        return res;
    }
    if (tx->statements > 0) {
        char sql[80];
        snprintf(sql, sizeof sql, "SET LOCAL statement_timeout = %lld", left);
        res = PQexec(tx->conn, sql);
        if (!cbpool_tx_check(tx, res))
            return res;
        PQclear(res);
    }
    tx->statements++;
    return NULL;
}

CBPOOL_DEF PGresult *cbpool_tx_exec(cbpool_tx *tx, const char *sql)
{
    PGresult *res;
    if (!tx || !sql)
        return NULL;
    if ((res = cbpool__tx_before(tx)) != NULL)
        return res;
    res = PQexec(tx->conn, sql);
    cbpool_tx_check(tx, res);
    return res;
}

CBPOOL_DEF PGresult *cbpool_tx_exec_params(cbpool_tx *tx, const char *sql, int nparams,
                                           const char *const *values)
{
    PGresult *res;
    if (!tx || !sql)
        return NULL;
    if ((res = cbpool__tx_before(tx)) != NULL)
        return res;
    res = PQexecParams(tx->conn, sql, nparams, NULL, values, NULL, NULL, 0);
    cbpool_tx_check(tx, res);
    return res;
}

static int cbpool__run_retryable(const char *state)
{
    return strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
           strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
           strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0;
}

static int cbpool__run_lost(const char *state)
{
    return strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0;
}

/* Where cbpool__run takes its connections: one pool, or (a cluster's)
   take, which chooses the pool again for each attempt. */
typedef struct cbpool__run_source {
    cbpool *pool;               /* the one pool, or NULL and take */
    PGconn *(*take)(void *arg, int64_t deadline_ns, cbpool **from);
    int (*unreachable)(void *arg);  /* no attempt could reach a server now */
    void *arg;
    int timeout_ms;             /* acquire timeout when opts has none */
} cbpool__run_source;

/* cbpool_run() on a source of connections. */
static int cbpool__run(const cbpool__run_source *src, cbpool_tx_fn fn, void *arg,
                       cbpool_run_opts *opts)
{
    cbpool_run_opts defaults;
    int max_attempts, attempt, rc = CBPOOL_EQUERY;
    int64_t deadline_ns;
    cbpool *pool = src->pool;

    if (!fn)
        return CBPOOL_EINVAL;
    if (!opts) {
        memset(&defaults, 0, sizeof defaults);
        opts = &defaults;
    }
    max_attempts = opts->max_attempts > 0 ? opts->max_attempts : 5;
    deadline_ns = opts->deadline_us > 0 ? cbpool__deadline_ns(opts->deadline_us) : 0;
    opts->attempts = 0;
    opts->sqlstate[0] = '\0';

    for (attempt = 1; attempt <= max_attempts; attempt++) {
        cbpool_tx tx;
        PGresult *res;
        int fn_rc, before_fn = 1, retry;
        int64_t until = cbpool__now_ns() +
                        (int64_t)(opts->acquire_timeout_ms > 0 ? opts->acquire_timeout_ms
                                                               : src->timeout_ms) * 1000000;
        const char *begin = opts->begin ? opts->begin : "BEGIN";

        if (deadline_ns && cbpool__run_ms_left(deadline_ns) == 0)
            return CBPOOL_ETIMEOUT;   /* too late: not started (again) */
        memset(&tx, 0, sizeof tx);
        tx.attempt = attempt;
        tx.deadline_ns = deadline_ns;
        opts->attempts = attempt;
        if (deadline_ns && deadline_ns < until)
            until = deadline_ns;
        if (src->take)
            tx.conn = src->take(src->arg, until, &pool);
        else
            tx.conn = cbpool_acquire_until(pool, until / 1000);
        if (!tx.conn)
            return cbpool_last_error();
        tx.pool = pool;

        if (deadline_ns) {
            /* the time left becomes the transaction's statement_timeout, in
               the same round trip as BEGIN */
            long long left = cbpool__run_ms_left(deadline_ns);
            size_t len = strlen(begin) + 64;
            char *sql = left > 0 ? (char *)cbpool__alloc(&pool->cfg, len) : NULL;
            if (sql) {
                snprintf(sql, len, "%s; SET LOCAL statement_timeout = %lld", begin, left);
                res = PQexec(tx.conn, sql);
                cbpool__free(&pool->cfg, sql);
            } else {
                res = NULL;
                snprintf(tx.sqlstate, sizeof tx.sqlstate, left > 0 ? "53200" : "57014");
            }
        } else
            res = PQexec(tx.conn, begin);
        if (cbpool_tx_check(&tx, res)) {
            PQclear(res);
            res = NULL;
            if (deadline_ns && cbpool__run_ms_left(deadline_ns) == 0) {
                /* the deadline passed while BEGIN was on its way: fn is not started */
                PQclear(PQexec(tx.conn, "ROLLBACK"));
                cbpool_release(pool, tx.conn);
                opts->attempts = attempt - 1;
                return CBPOOL_ETIMEOUT;
            }
            before_fn = 0;
            fn_rc = fn(&tx, arg);
            if (fn_rc == 0 && tx.expired) {
                /* fn went on past its deadline: roll back what it did */
                rc = CBPOOL_EQUERY;
            } else if (fn_rc == 0) {
                res = PQexec(tx.conn, "COMMIT");
                if (cbpool_tx_check(&tx, res) &&
                    strcmp(PQcmdStatus(res), "ROLLBACK") != 0) {
                    PQclear(res);
                    cbpool_release(pool, tx.conn);
                    return 0;
                }
                if (!tx.sqlstate[0])
                    snprintf(tx.sqlstate, sizeof tx.sqlstate, "25P02");
                rc = CBPOOL_EQUERY;
            } else
                rc = fn_rc;
        } else
            rc = CBPOOL_EQUERY;
        if (res)
            PQclear(res);
        if (!tx.sqlstate[0] && PQstatus(tx.conn) != CONNECTION_OK)
            snprintf(tx.sqlstate, sizeof tx.sqlstate, "08006");
        cbpool_release(pool, tx.conn);   /* rolls back whatever is open */
        memcpy(opts->sqlstate, tx.sqlstate, sizeof opts->sqlstate);
        retry = cbpool__run_retryable(tx.sqlstate) &&
                (opts->idempotent || (before_fn && cbpool__run_lost(tx.sqlstate)));
        if (!retry || attempt == max_attempts)
            return rc;
        {
            int64_t pause;
            struct timespec ts;
            int open;
            cbpool__lock(pool);
            pause = cbpool__backoff_ns(pool, 10, 1000, attempt - 1);
            open = pool->breaker.state != CBPOOL_BREAKER_CLOSED;
            cbpool__unlock(pool);
            if (src->take)   /* a cluster's next attempt may go to another host */
                open = src->unreachable(src->arg);
            if (open)
                return rc;   /* the server is unreachable: no retry now */
            if (deadline_ns && deadline_ns - cbpool__now_ns() <= pause)
                return rc;   /* no time for another attempt */
            ts.tv_sec = (time_t)(pause / 1000000000);
            ts.tv_nsec = (long)(pause % 1000000000);
            nanosleep(&ts, NULL);
        }
    }
    return rc;
}

CBPOOL_DEF int cbpool_run(cbpool *pool, cbpool_tx_fn fn, void *arg, cbpool_run_opts *opts)
{
    cbpool__run_source src;
    if (!pool)
        return CBPOOL_EINVAL;
    memset(&src, 0, sizeof src);
    src.pool = pool;
    src.timeout_ms = pool->cfg.acquire_timeout_ms;
    return cbpool__run(&src, fn, arg, opts);
}

#endif /* CBPOOL_NO_RUN */

/* == [metrics] statistics and the Prometheus text ======================== */

/* acquire-wait histogram: bucket i holds waits up to 2^(i/4) microseconds */
static int cbpool__stats_bucket(uint64_t us)
{
    int b = 0;
    double bound = 1.0;
    while (b < CBPOOL__HIST_BUCKETS - 1 && (double)us > bound) {
        bound *= 1.189207115002721; /* 2^(1/4) */
        b++;
    }
    return b;
}

static uint64_t cbpool__stats_bucket_bound(int b)
{
    double bound = 1.0;
    int i;
    for (i = 0; i < b; i++)
        bound *= 1.189207115002721;
    return (uint64_t)(bound + 0.5);
}

static uint64_t cbpool__stats_percentile(const uint64_t *hist, double q)
{
    uint64_t n = 0, seen = 0, rank;
    int b;
    for (b = 0; b < CBPOOL__HIST_BUCKETS; b++)
        n += hist[b];
    if (n == 0)
        return 0;
    rank = (uint64_t)(q * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    for (b = 0; b < CBPOOL__HIST_BUCKETS; b++) {
        seen += hist[b];
        if (seen >= rank)
            return cbpool__stats_bucket_bound(b);
    }
    return cbpool__stats_bucket_bound(CBPOOL__HIST_BUCKETS - 1);
}

static void cbpool__stats_record_wait(cbpool *pool, int64_t waited_ns)
{
    uint64_t us = waited_ns > 0 ? (uint64_t)(waited_ns / 1000) : 0;
    uint64_t max = __atomic_load_n(&pool->stats.wait_us_max, __ATOMIC_RELAXED);
    __atomic_fetch_add(&pool->stats.hist[cbpool__stats_bucket(us)], 1, __ATOMIC_RELAXED);
    while (us > max &&
           !__atomic_compare_exchange_n(&pool->stats.wait_us_max, &max, us, 1,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

CBPOOL_DEF void cbpool_stats(cbpool *pool, cbpool_stats_t *out)
{
    uint64_t fast, barged, moved;
    cbpool__conn *c;
    int kept;
    if (!pool || !out)
        return;
    cbpool__lock(pool);
    kept = cbpool__fast_drain_locked(pool, CBPOOL__RECLAIM_STALE);
    /* the per-record counters: of open connections, and of those gone */
    fast = pool->stats.gone_fast;
    barged = pool->stats.gone_barged;
    moved = pool->stats.gone_moved;
    for (c = pool->slots.conns; c; c = c->next) {
        fast += __atomic_load_n(&c->fast_acquires, __ATOMIC_RELAXED);
        barged += __atomic_load_n(&c->barged_acquires, __ATOMIC_RELAXED);
        moved += __atomic_load_n(&c->moved, __ATOMIC_RELAXED);
    }
    *out = pool->stats.counts;
    out->barged_acquires = barged;
    out->handoffs_moved = moved;
    out->total = pool->slots.total;
    /* kept connections are released: idle, for a moment, to their thread */
    out->idle = pool->slots.idle_count + kept;
    out->in_use = pool->slots.in_use - kept;
    out->connecting = pool->connect.connecting;
    out->waiters = pool->slots.waiters;
    out->max_size = pool->share.limit;
    out->min_size = pool->share.floor;
    out->share = pool->share.size;
    out->budget = pool->share.budget;
    out->demand = pool->share.reported ? pool->share.last_demand : -1;
    out->extension = pool->share.extension;
    out->breaker_state = pool->breaker.state;
    cbpool__unlock(pool);
    {
        uint64_t hist[CBPOOL__HIST_BUCKETS];
        int b;
        for (b = 0; b < CBPOOL__HIST_BUCKETS; b++)
            hist[b] = __atomic_load_n(&pool->stats.hist[b], __ATOMIC_RELAXED);
        hist[0] += fast;
        out->acquired = 0;
        for (b = 0; b < CBPOOL__HIST_BUCKETS; b++)
            out->acquired += hist[b];
        out->acquire_wait_us_max = __atomic_load_n(&pool->stats.wait_us_max, __ATOMIC_RELAXED);
        out->acquire_wait_us_p50 = cbpool__stats_percentile(hist, 0.50);
        out->acquire_wait_us_p99 = cbpool__stats_percentile(hist, 0.99);
    }
}

#ifndef CBPOOL_NO_PROMETHEUS
/* a Prometheus label value: backslash, double quote and newline escaped */
static void cbpool__stats_label(char *out, size_t len, const char *in)
{
    size_t n = 0;
    for (; *in && n + 2 < len; in++) {
        if (*in == '\\' || *in == '"') {
            out[n++] = '\\';
            out[n++] = *in;
        } else if (*in == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else
            out[n++] = *in;
    }
    out[n] = '\0';
}

CBPOOL_DEF int cbpool_prometheus(cbpool *pool, char *buf, size_t len)
{
    cbpool_stats_t s;
    char app[160], pod[160], host[620], labels[1000];
    size_t used = 0;
    int n;

    if (!pool || (!buf && len))
        return CBPOOL_EINVAL;
    cbpool_stats(pool, &s);
    cbpool__stats_label(app, sizeof app, pool->ident.application_name);
    cbpool__stats_label(pod, sizeof pod, pool->ident.pod);
    cbpool__stats_label(host, sizeof host, pool->member.label ? pool->member.label : "");
    snprintf(labels, sizeof labels, "application=\"%s\",pod=\"%s\"%s%s%s", app, pod,
             pool->member.label ? ",host=\"" : "", host, pool->member.label ? "\"" : "");

#define CBPOOL__EMIT(...)                                                       \
    do {                                                                        \
        n = snprintf(buf ? buf + (used < len ? used : len) : NULL,              \
                     used < len ? len - used : 0, __VA_ARGS__);                 \
        if (n > 0)                                                              \
            used += (size_t)n;                                                  \
    } while (0)
#define CBPOOL__GAUGE(name, help, value)                                        \
    CBPOOL__EMIT("# HELP cbpool_" name " " help "\n# TYPE cbpool_" name " gauge\n" \
                 "cbpool_" name "{%s} %lld\n", labels, (long long)(value))
#define CBPOOL__COUNTER(name, help, value)                                      \
    CBPOOL__EMIT("# HELP cbpool_" name " " help "\n# TYPE cbpool_" name " counter\n" \
                 "cbpool_" name "{%s} %llu\n", labels, (unsigned long long)(value))

    CBPOOL__EMIT("# HELP cbpool_connections Open connections by state.\n"
                 "# TYPE cbpool_connections gauge\n"
                 "cbpool_connections{%s,state=\"idle\"} %d\n"
                 "cbpool_connections{%s,state=\"in_use\"} %d\n"
                 "cbpool_connections{%s,state=\"connecting\"} %d\n",
                 labels, s.idle, labels, s.in_use, labels, s.connecting);
    CBPOOL__GAUGE("waiters", "Threads waiting for a connection.", s.waiters);
    CBPOOL__GAUGE("max_size", "Current upper bound of the pool.", s.max_size);
    CBPOOL__GAUGE("min_size", "Connections the pool keeps.", s.min_size);
    CBPOOL__GAUGE("share", "This pod's share from connbudget.pool_share(), -1 if unknown.",
                  s.share);
    CBPOOL__GAUGE("budget", "The server's connection budget, -1 if unknown.", s.budget);
    CBPOOL__GAUGE("demand", "Demand reported at the last share refresh, -1 before the first.",
                  s.demand);
    CBPOOL__GAUGE("extension", "1 if the server has connbudget, 0 if not, -1 unknown.",
                  s.extension);
    CBPOOL__COUNTER("acquired_total", "Successful acquires.", s.acquired);
    CBPOOL__COUNTER("acquire_timeouts_total", "Acquires that timed out.", s.acquire_timeouts);
    CBPOOL__COUNTER("acquire_rejected_total", "Acquires refused by max_waiters.",
                    s.acquire_rejected);
    CBPOOL__COUNTER("handoffs_total",
                    "Acquires served by a hand-off after waiting in line.", s.handoffs);
    CBPOOL__COUNTER("barged_acquires_total",
                    "Connections taken straight back by the thread that released them "
                    "while others waited (barge_limit).", s.barged_acquires);
    CBPOOL__COUNTER("barges_expired_total",
                    "Connections kept for their thread and handed to a waiter before "
                    "the thread came back.", s.barges_expired);
    CBPOOL__COUNTER("handoffs_moved_total",
                    "Hand-offs after which the thread moved to the CPU the connection "
                    "was last released on (follow_cpu).", s.handoffs_moved);
    CBPOOL__EMIT("# HELP cbpool_acquire_wait_seconds Wait of successful acquires.\n"
                 "# TYPE cbpool_acquire_wait_seconds summary\n"
                 "cbpool_acquire_wait_seconds{%s,quantile=\"0.5\"} %.6f\n"
                 "cbpool_acquire_wait_seconds{%s,quantile=\"0.99\"} %.6f\n"
                 "cbpool_acquire_wait_seconds_count{%s} %llu\n",
                 labels, (double)s.acquire_wait_us_p50 / 1e6, labels,
                 (double)s.acquire_wait_us_p99 / 1e6, labels,
                 (unsigned long long)s.acquired);
    CBPOOL__EMIT("# HELP cbpool_acquire_wait_max_seconds Longest wait of a successful acquire.\n"
                 "# TYPE cbpool_acquire_wait_max_seconds gauge\n"
                 "cbpool_acquire_wait_max_seconds{%s} %.6f\n",
                 labels, (double)s.acquire_wait_us_max / 1e6);
    CBPOOL__COUNTER("connects_total", "Connections opened.", s.connects);
    CBPOOL__COUNTER("connect_failures_total", "Failed connect attempts.", s.connect_failures);
    CBPOOL__COUNTER("connects_refused_total",
                    "Connect attempts refused with SQLSTATE 53300.", s.connects_refused);
    CBPOOL__COUNTER("refusals_permanent_total",
                    "Connect attempts refused for good (SQLSTATE 42501 or 53400).",
                    s.refusals_permanent);
    CBPOOL__EMIT("# HELP cbpool_closed_total Connections closed, by reason.\n"
                 "# TYPE cbpool_closed_total counter\n"
                 "cbpool_closed_total{%s,reason=\"idle\"} %llu\n"
                 "cbpool_closed_total{%s,reason=\"lifetime\"} %llu\n"
                 "cbpool_closed_total{%s,reason=\"broken\"} %llu\n"
                 "cbpool_closed_total{%s,reason=\"over_share\"} %llu\n",
                 labels, (unsigned long long)s.closed_idle, labels,
                 (unsigned long long)s.closed_lifetime, labels,
                 (unsigned long long)s.closed_broken, labels,
                 (unsigned long long)s.closed_over_share);
    CBPOOL__COUNTER("budget_refreshes_total", "Share refreshes the server answered.",
                    s.budget_refreshes);
    CBPOOL__COUNTER("budget_errors_total",
                    "Share refreshes that failed or were answered with nonsense.",
                    s.budget_errors);
    CBPOOL__COUNTER("leaks_detected_total", "Connections held beyond leak_threshold_ms.",
                    s.leaks_detected);
    CBPOOL__COUNTER("rollbacks_on_release_total",
                    "Open transactions rolled back when their connection was released.",
                    s.rollbacks_on_release);
    CBPOOL__COUNTER("validations_failed_total",
                    "Idle connections that failed validation and were closed.",
                    s.validations_failed);
    CBPOOL__COUNTER("misuse_total", "Releases of NULL, twice, or of a foreign connection.",
                    s.misuse);
    CBPOOL__GAUGE("breaker_state",
                  "Circuit breaker: 0 closed, 1 open (server unreachable), 2 half-open.",
                  s.breaker_state);
    CBPOOL__COUNTER("breaker_openings_total", "Times the circuit breaker opened.",
                    s.breaker_openings);
    CBPOOL__COUNTER("breaker_fast_failures_total",
                    "Acquires failed at once because the circuit breaker was open.",
                    s.breaker_fast_failures);
    CBPOOL__COUNTER("host_check_errors_total",
                    "Failed checks of a cluster host's role and lag and invalid answers.",
                    s.host_check_errors);
#undef CBPOOL__COUNTER
#undef CBPOOL__GAUGE
#undef CBPOOL__EMIT
    return (int)used;
}
#endif /* CBPOOL_NO_PROMETHEUS */

#ifndef CBPOOL_NO_CLUSTER

/* == [member] what a cluster needs from a host's pool ==================== */

/* A cluster's host: its role, and when it became the primary; with the lock. */
static void cbpool__member_set_role_locked(cbpool *pool, int role, int64_t now)
{
    int was = CBPOOL__LOAD(&pool->member.role);
    if (role == CBPOOL_HOST_PRIMARY && was != CBPOOL_HOST_PRIMARY)
        CBPOOL__STORE(&pool->member.primary_ns, now);
    CBPOOL__STORE(&pool->member.role, role);
}

/*
 * Replay lag as a standby's own view: 0 once it has replayed everything it
 * received, else the age of the last transaction it replayed (so an idle
 * primary does not make a caught-up standby look late).  Writable as
 * libpq's target_session_attrs=read-write judges it.
 */
#define CBPOOL__HOST_SQL                                                        \
    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on', " \
    "CASE WHEN NOT pg_is_in_recovery() THEN 0 "                                 \
    "WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 " \
    "ELSE coalesce(greatest(0, extract(epoch FROM clock_timestamp() - "        \
    "pg_last_xact_replay_timestamp()) * 1000), 0)::bigint END, "              \
    "CASE WHEN pg_is_in_recovery() THEN 0 ELSE "                                 \
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"

/* Is res an answer of CBPOOL__HOST_SQL: one row of read-only ("t" or "f"),
   lag (a bigint >= 0) and timeline (an integer >= 0)?  0 and the values;
   else what was wrong, as cbpool__check_share. */
static int cbpool__member_check_answer(const PGresult *res, int *standby, long long *lag,
                                     long long *timeline, char *why, size_t whylen)
{
    static const char what[] = "the host check";
    const char *v;
    char quoted[160];
    int bad = cbpool__one_row(res, 3, what, why, whylen);

    if (bad)
        return bad;
    if (PQgetisnull(res, 0, 0)) {
        snprintf(why, whylen, "%s answered NULL for read_only", what);
        return CBPOOL__BAD_NULL * 16;
    }
    v = PQgetvalue(res, 0, 0);
    if (PQfformat(res, 0) != 0 || PQgetlength(res, 0, 0) != 1 || (v[0] != 't' && v[0] != 'f')) {
        cbpool__quote(v, PQgetlength(res, 0, 0), quoted, sizeof quoted);
        snprintf(why, whylen, "%s answered read_only %s, not t or f", what, quoted);
        return CBPOOL__BAD_TEXT * 16;
    }
    *standby = v[0] == 't';
    bad = cbpool__field_int(res, 1, what, "lag_ms", 0, LLONG_MAX, lag, why, whylen);
    if (bad)
        return bad * 16 + 1;
    bad = cbpool__field_int(res, 2, what, "timeline", 0, INT_MAX, timeline, why, whylen);
    if (bad)
        return bad * 16 + 2;
    return 0;
}

/* Check a cluster's host on one of its connections, outside the lock;
   returns 1 if the connection broke.  An answer that is not one (see
   cbpool__member_check_answer) changes nothing: not the role, not the lag. */
static int cbpool__member_check(cbpool *pool, PGconn *pg)
{
    PGresult *res;
    ExecStatusType st;
    int failed;
    int bad = 0, standby = 0;
    long long lag = 0, timeline = 0;
    char why[320];
    int64_t now;
    int64_t next;
    cbpool__msg msg;

    if (!pool->member.check_ms)
        return 0;   /* not a cluster's host */
    res = cbpool__exec_deadline(pg, CBPOOL__HOST_SQL, 0, NULL, pool->cfg.validate_timeout_ms);
    st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    failed = !res || st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR ||
             st == PGRES_BAD_RESPONSE;

    if (!failed)
        bad = cbpool__member_check_answer(res, &standby, &lag, &timeline, why, sizeof why);
    now = cbpool__now_ns();
    msg.id = NULL;
    cbpool__lock(pool);
    if (!failed && !bad) {
        int role = standby ? CBPOOL_HOST_STANDBY : CBPOOL_HOST_PRIMARY;
        int was = CBPOOL__LOAD(&pool->member.role);
        cbpool__member_set_role_locked(pool, role, now);
        CBPOOL__STORE(&pool->member.lag_ms, lag > INT_MAX ? INT_MAX : (int)lag);
        CBPOOL__STORE(&pool->member.timeline, (int)timeline);
        pool->member.invalid = 0;
        if (was != role && was != CBPOOL_HOST_UNKNOWN)
            cbpool__format(&msg, CBPOOL_LOG_INFO, "host-role",
                           "the host is now %s", role == CBPOOL_HOST_PRIMARY
                                                      ? "the primary" : "a standby");
    } else if (bad) {
        /* the host answered, but not an answer: what the pool knew stands */
        CBPOOL__COUNT(pool, host_check_errors);
        if (bad != pool->member.invalid)
            cbpool__format(&msg, CBPOOL_LOG_WARN, "host-invalid",
                           "%s; ignored, the host's role and lag stay as they were", why);
        pool->member.invalid = bad;
    } else {
        CBPOOL__COUNT(pool, host_check_errors);
        cbpool__format(&msg, CBPOOL_LOG_WARN, "host-check",
                       "checking the host's role and lag failed: %s",
                       res ? PQresultErrorMessage(res) : PQerrorMessage(pg));
    }
    /* every check_ms at least, whatever the share's refresh interval */
    next = now + cbpool__jitter_ns(pool, pool->member.check_ms, 90, 110);
    cbpool__share_due_locked(pool, next);
    cbpool__unlock(pool);
    cbpool__emit(pool, &msg);
    if (res)
        PQclear(res);
    return (failed || bad) && PQstatus(pg) != CONNECTION_OK;
}

/* A cluster's host is down while its connects fail as unreachable. */
static int cbpool__member_down(const cbpool *pool)
{
    return pool->member.check_ms && CBPOOL__LOAD(&pool->breaker.unreachable) > 0;
}

/* A new connection: servers from 14 on say at once whether its session
   can write, which is the host's role; with the lock. */
static void cbpool__member_connected_locked(cbpool *pool, PGconn *pg, int64_t now)
{
    if (pool->member.check_ms && PQparameterStatus(pg, "in_hot_standby"))
        cbpool__member_set_role_locked(pool, cbpool__read_only(pg) ? CBPOOL_HOST_STANDBY
                                                                   : CBPOOL_HOST_PRIMARY, now);
}

/* The host went down (its first connect failed as unreachable): its role
   is unknown, and its waiters go to another host; with the lock. */
static void cbpool__member_unreachable_locked(cbpool *pool)
{
    if (!pool->member.check_ms)
        return;
    CBPOOL__STORE(&pool->member.role, CBPOOL_HOST_UNKNOWN);
    cbpool__slots_wake_waiters_locked(pool);
}

/* The host answers again: check its role at once; with the lock. */
static void cbpool__member_answered_locked(cbpool *pool)
{
    if (cbpool__member_down(pool))
        cbpool__share_due_locked(pool, 0);
}

/* == [cluster] the router: one pool per host ============================= */

typedef struct cbpool__host {
    cbpool_cluster *cluster;
    char host[256];
    char port[32];
    char label[300];            /* "host:port", for log messages */
} cbpool__host;

struct cbpool_cluster {
    cbpool_cluster_config cfg;
    int nhosts;
    cbpool **pools;
    cbpool__host *hosts;
    unsigned rr;                /* spreads ties between hosts, atomically */
    int64_t asked_ns;           /* every host was last asked to check then */
};

#ifndef CBPOOL__MAX_HOSTS
#define CBPOOL__MAX_HOSTS 64
#endif
#ifndef CBPOOL__ASK_NS
#define CBPOOL__ASK_NS 100000000   /* ask hosts to check at most this often */
#endif

/* A host pool's messages name their host. */
static void cbpool__cluster_host_log(void *user, cbpool_log_level level, const char *id,
                             const char *message)
{
    cbpool__host *h = (cbpool__host *)user;
    const cbpool_config *cfg = &h->cluster->cfg.pool;
    char text[600];
    snprintf(text, sizeof text, "host %s: %s", h->label, message);
    if (cfg->logger.func)
        cfg->logger.func(cfg->logger.user_data, level, id, text);
    else
        cbpool__default_log(NULL, level, id, text);
}

/* Item i of a comma-separated list (libpq's host, hostaddr and port), or "". */
static void cbpool__cluster_list_item(const char *list, int i, char *out, size_t len)
{
    const char *p = list ? list : "";
    size_t n;
    for (; i > 0 && *p; p++)
        if (*p == ',')
            i--;
    n = i > 0 ? 0 : strcspn(p, ",");
    if (n >= len)
        n = len - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

static int cbpool__cluster_list_count(const char *list)
{
    int n = 1;
    if (!list || !*list)
        return 0;
    for (; *list; list++)
        n += *list == ',';
    return n;
}

/* Append " key='value'" to buf, quoted as libpq reads it; 0 if it is full. */
static int cbpool__cluster_append_kv(char *buf, size_t len, size_t *used, const char *key,
                             const char *val)
{
    size_t u = *used;
    int n = snprintf(buf + u, len - u, "%s%s='", u ? " " : "", key);
    if (n < 0 || (size_t)n >= len - u)
        return 0;
    for (u += (size_t)n; *val; val++) {
        if (u + 3 >= len)
            return 0;
        if (*val == '\'' || *val == '\\')
            buf[u++] = '\\';
        buf[u++] = *val;
    }
    if (u + 2 >= len)
        return 0;
    buf[u++] = '\'';
    buf[u] = '\0';
    *used = u;
    return 1;
}

static void cbpool__cluster_free(cbpool_cluster *cl)
{
    cbpool_config cfg = cl->cfg.pool;
    int i;
    for (i = 0; i < cl->nhosts; i++)
        if (cl->pools && cl->pools[i])
            cbpool_close(cl->pools[i]);
    cbpool__free(&cfg, cl->pools);
    cbpool__free(&cfg, cl->hosts);
    cbpool__free(&cfg, cl);
}

CBPOOL_DEF cbpool_cluster_config cbpool_cluster_config_default(void)
{
    cbpool_cluster_config c;
    memset(&c, 0, sizeof c);
    c.pool = cbpool_config_default();
    c.max_lag_ms = 5000;
    c.check_ms = 1000;
    c.reads_on_primary = 1;
    return c;
}

CBPOOL_DEF cbpool_cluster *cbpool_cluster_open(const cbpool_cluster_config *cfg, char *err,
                                               size_t errlen)
{
    PQconninfoOption *opts, *o;
    char *parse_err = NULL;
    const char *hosts = NULL, *addrs = NULL, *ports = NULL;
    cbpool_cluster *cl;
    char *conninfo = NULL;
    size_t size, base = 0;
    int n, nnames, naddrs, nports, i;

    if (err && errlen)
        err[0] = '\0';
    if (!cfg) {
        cbpool__config_fail(err, errlen, "cfg must not be NULL (use cbpool_cluster_config_default())");
        return NULL;
    }
    if (cfg->max_lag_ms < -1) {
        cbpool__config_fail(err, errlen, "max_lag_ms must be -1 (not checked) or more (got %d)",
                     cfg->max_lag_ms);
        return NULL;
    }
    if (cfg->check_ms < 10 || cfg->check_ms > 3600000) {
        cbpool__config_fail(err, errlen, "check_ms must be between 10 and 3600000 (got %d)",
                     cfg->check_ms);
        return NULL;
    }
    if (cfg->reads_on_primary != 0 && cfg->reads_on_primary != 1) {
        cbpool__config_fail(err, errlen, "reads_on_primary must be 0 or 1 (got %d)",
                     cfg->reads_on_primary);
        return NULL;
    }
    if (!cfg->pool.background) {
        cbpool__config_fail(err, errlen, "a cluster's pools need their maintenance threads "
                     "(pool.background must be 1)");
        return NULL;
    }
    if (!cbpool__config_check(&cfg->pool, err, errlen))
        return NULL;
    opts = PQconninfoParse(cfg->pool.conninfo ? cfg->pool.conninfo : "", &parse_err);
    if (!opts) {
        char line[200];
        cbpool__first_line(parse_err ? parse_err : "out of memory", line, sizeof line);
        cbpool__config_fail(err, errlen, "invalid conninfo: %s", line);
        if (parse_err)
            PQfreemem(parse_err);
        return NULL;
    }
    size = 64;
    for (o = opts; o->keyword; o++) {
        if (o->val && *o->val && strcmp(o->keyword, "host") == 0)
            hosts = o->val;
        else if (o->val && *o->val && strcmp(o->keyword, "hostaddr") == 0)
            addrs = o->val;
        else if (o->val && *o->val && strcmp(o->keyword, "port") == 0)
            ports = o->val;
        if (o->val)
            size += strlen(o->keyword) + 2 * strlen(o->val) + 4;
    }
    /* as libpq does: the environment when conninfo does not say */
    if (!hosts && !addrs) {
        hosts = getenv("PGHOST");
        addrs = getenv("PGHOSTADDR");
    }
    if (!ports)
        ports = getenv("PGPORT");
    nnames = cbpool__cluster_list_count(hosts);
    naddrs = cbpool__cluster_list_count(addrs);
    nports = cbpool__cluster_list_count(ports);
    n = nnames > naddrs ? nnames : naddrs;
    if (nnames && naddrs && nnames != naddrs) {
        PQconninfoFree(opts);
        cbpool__config_fail(err, errlen, "conninfo names %d hosts but %d host addresses", nnames,
                     naddrs);
        return NULL;
    }
    if (n == 0)
        n = 1;   /* libpq's default host */
    if (nports > 1 && nports != n) {
        PQconninfoFree(opts);
        cbpool__config_fail(err, errlen, "conninfo names %d hosts but %d ports", n, nports);
        return NULL;
    }
    if (n > CBPOOL__MAX_HOSTS) {
        PQconninfoFree(opts);
        cbpool__config_fail(err, errlen, "a cluster has at most %d hosts (conninfo names %d)",
                     CBPOOL__MAX_HOSTS, n);
        return NULL;
    }
    size += (size_t)3 * 300 + 64;
    cl = (cbpool_cluster *)cbpool__alloc(&cfg->pool, sizeof *cl);
    if (cl) {
        memset(cl, 0, sizeof *cl);
        cl->cfg = *cfg;
        cl->pools = (cbpool **)cbpool__alloc(&cfg->pool, (size_t)n * sizeof(cbpool *));
        cl->hosts = (cbpool__host *)cbpool__alloc(&cfg->pool, (size_t)n * sizeof(cbpool__host));
        conninfo = (char *)cbpool__alloc(&cfg->pool, size);
    }
    if (!cl || !cl->pools || !cl->hosts || !conninfo) {
        if (cl) {
            cbpool__free(&cfg->pool, cl->pools);
            cbpool__free(&cfg->pool, cl->hosts);
            cbpool__free(&cfg->pool, cl);
        }
        cbpool__free(&cfg->pool, conninfo);
        PQconninfoFree(opts);
        cbpool__config_fail(err, errlen, "out of memory");
        return NULL;
    }
    memset(cl->pools, 0, (size_t)n * sizeof(cbpool *));
    memset(cl->hosts, 0, (size_t)n * sizeof(cbpool__host));
    /* what every host's conninfo has in common: all but where to connect
       and which session to accept (the cluster routes) */
    conninfo[0] = '\0';
    for (o = opts; o->keyword; o++)
        if (o->val && *o->val && strcmp(o->keyword, "host") != 0 &&
            strcmp(o->keyword, "hostaddr") != 0 && strcmp(o->keyword, "port") != 0 &&
            strcmp(o->keyword, "target_session_attrs") != 0 &&
            strcmp(o->keyword, "load_balance_hosts") != 0)
            cbpool__cluster_append_kv(conninfo, size, &base, o->keyword, o->val);
    cl->nhosts = n;
    for (i = 0; i < n; i++) {
        cbpool__host *h = &cl->hosts[i];
        cbpool_config pcfg = cfg->pool;
        char name[256], addr[256], e[256];
        size_t used = base;
        h->cluster = cl;
        cbpool__cluster_list_item(hosts, i, name, sizeof name);
        cbpool__cluster_list_item(addrs, i, addr, sizeof addr);
        cbpool__cluster_list_item(ports, nports > 1 ? i : 0, h->port, sizeof h->port);
        snprintf(h->host, sizeof h->host, "%s", name[0] ? name : addr);
        snprintf(h->label, sizeof h->label, "%s:%s", h->host[0] ? h->host : "default",
                 h->port[0] ? h->port : "default");
        conninfo[base] = '\0';
        if ((name[0] && !cbpool__cluster_append_kv(conninfo, size, &used, "host", name)) ||
            (addr[0] && !cbpool__cluster_append_kv(conninfo, size, &used, "hostaddr", addr)) ||
            (h->port[0] && !cbpool__cluster_append_kv(conninfo, size, &used, "port", h->port)) ||
            !cbpool__cluster_append_kv(conninfo, size, &used, "target_session_attrs", "any")) {
            cbpool__config_fail(err, errlen, "host %s: conninfo too long", h->label);
            goto fail;
        }
        pcfg.conninfo = conninfo;
        pcfg.logger.func = cbpool__cluster_host_log;
        pcfg.logger.user_data = h;
        cl->pools[i] = cbpool__open(&pcfg, cfg->check_ms, e, sizeof e);
        if (!cl->pools[i]) {
            cbpool__config_fail(err, errlen, "host %s: %s", h->label, e);
            goto fail;
        }
        cl->pools[i]->member.label = h->label;   /* set before anyone can scrape */
    }
    cbpool__free(&cfg->pool, conninfo);
    PQconninfoFree(opts);
    return cl;

fail:
    cbpool__free(&cfg->pool, conninfo);
    PQconninfoFree(opts);
    cbpool__cluster_free(cl);
    return NULL;
}

static int cbpool__cluster_readable(const cbpool_cluster *cl, int i)
{
    cbpool *p = cl->pools[i];
    int lag = CBPOOL__LOAD(&p->member.lag_ms);
    return !cbpool__member_down(p) &&
           CBPOOL__LOAD(&p->member.role) == CBPOOL_HOST_STANDBY &&
           (cl->cfg.max_lag_ms < 0 || (lag >= 0 && lag <= cl->cfg.max_lag_ms));
}

/* The host writes go to: of those up and primary, the one on the latest
   timeline, then the one that became the primary last; -1 if none. */
static int cbpool__cluster_writer(const cbpool_cluster *cl)
{
    int i, best = -1, best_tli = 0;
    int64_t best_ns = 0;
    for (i = 0; i < cl->nhosts; i++) {
        cbpool *p = cl->pools[i];
        int tli;
        int64_t ns;
        if (cbpool__member_down(p) || CBPOOL__LOAD(&p->member.role) != CBPOOL_HOST_PRIMARY)
            continue;
        tli = CBPOOL__LOAD(&p->member.timeline);
        ns = CBPOOL__LOAD(&p->member.primary_ns);
        if (best < 0 || tli > best_tli || (tli == best_tli && ns > best_ns)) {
            best = i;
            best_tli = tli;
            best_ns = ns;
        }
    }
    return best;
}

/* The host for this access now, or -1. */
static int cbpool__cluster_pick(cbpool_cluster *cl, int access)
{
    int i, best = -1, best_free = INT_MIN, start, found = 0;
    if (access == CBPOOL_WRITE)
        return cbpool__cluster_writer(cl);
    /* the standby this thread used last while its connection waits for it
       there: the lock-free path */
    for (i = 0; i < cl->nhosts; i++) {
        cbpool__conn *mine = cbpool__fast_my_last(cl->pools[i]);
        if (mine && cbpool__cluster_readable(cl, i) &&
            CBPOOL__LOAD(&mine->state) == CBPOOL__PARKED)
            return i;
    }
    /* else the standby with the most room in its share */
    start = (int)(__atomic_fetch_add(&cl->rr, 1, __ATOMIC_RELAXED) % (unsigned)cl->nhosts);
    for (i = 0; i < cl->nhosts; i++) {
        int h = (start + i) % cl->nhosts, room;
        cbpool *p = cl->pools[h];
        if (!cbpool__cluster_readable(cl, h))
            continue;
        cbpool__lock(p);
        room = p->share.limit - p->slots.in_use - p->slots.waiters;
        cbpool__unlock(p);
        found = 1;
        if (room > best_free) {
            best = h;
            best_free = room;
        }
    }
    if (!found && cl->cfg.reads_on_primary)
        best = cbpool__cluster_writer(cl);
    return best;
}

/* Every host that is up checks its role and lag at once (at most every
   CBPOOL__ASK_NS). */
static void cbpool__cluster_ask(cbpool_cluster *cl, int64_t now)
{
    int64_t asked = __atomic_load_n(&cl->asked_ns, __ATOMIC_RELAXED);
    int i;
    if (now - asked < CBPOOL__ASK_NS ||
        !__atomic_compare_exchange_n(&cl->asked_ns, &asked, now, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return;
    for (i = 0; i < cl->nhosts; i++) {
        cbpool *p = cl->pools[i];
        if (cbpool__member_down(p))
            continue;
        cbpool__lock(p);
        cbpool__share_due_locked(p, 0);
        cbpool__maint_wake(p);
        cbpool__unlock(p);
    }
}

static int cbpool__cluster_all_down(const cbpool_cluster *cl)
{
    int i, down = 0;
    for (i = 0; i < cl->nhosts; i++)
        down += cbpool__member_down(cl->pools[i]);
    return down == cl->nhosts;
}

/* A connection for this access by deadline (ns), and the pool it is from. */
static PGconn *cbpool__cluster_take(cbpool_cluster *cl, int access, int64_t deadline,
                                    cbpool **from)
{
    int64_t now = cbpool__now_ns();
    for (;;) {
        int h = cbpool__cluster_pick(cl, access);
        if (h >= 0) {
            PGconn *pg = cbpool__acquire(cl->pools[h], now, deadline > now ? deadline : now,
                                         NULL, 0);
            if (pg && (access == CBPOOL_READ || cbpool__cluster_writer(cl) == h)) {
                *from = cl->pools[h];
                return pg;
            }
            if (pg)   /* the primary changed while this thread waited */
                cbpool_release(cl->pools[h], pg);
            else if (cbpool__errno != CBPOOL_EUNAVAILABLE)
                return NULL;   /* timed out, too many waiters, or closed */
            /* else the host went down meanwhile: another one */
        }
        now = cbpool__now_ns();
        if (cbpool__cluster_all_down(cl) || now >= deadline) {
            cbpool__errno = CBPOOL_EUNAVAILABLE;
            return NULL;
        }
        /* no host for this access yet (a promotion under way, a standby
           catching up): ask them all, look again shortly */
        cbpool__cluster_ask(cl, now);
        {
            int64_t pause = deadline - now < 5000000 ? deadline - now : 5000000;
            struct timespec ts;
            ts.tv_sec = 0;
            ts.tv_nsec = (long)pause;
            nanosleep(&ts, NULL);
        }
        now = cbpool__now_ns();
    }
}

CBPOOL_DEF PGconn *cbpool_cluster_acquire(cbpool_cluster *cl, int access, int timeout_ms)
{
    cbpool *from;
    if (!cl || (access != CBPOOL_READ && access != CBPOOL_WRITE)) {
        cbpool__errno = CBPOOL_EINVAL;
        return NULL;
    }
    if (timeout_ms < 0)
        timeout_ms = cl->cfg.pool.acquire_timeout_ms;
    return cbpool__cluster_take(cl, access, cbpool__now_ns() + (int64_t)timeout_ms * 1000000,
                                &from);
}

#ifndef CBPOOL_NO_RUN
/* cbpool_run()'s source of connections on a cluster: the host is chosen
   again for each attempt, so a retried write goes to the new primary. */
typedef struct cbpool__cluster_access {
    cbpool_cluster *cl;
    int access;
} cbpool__cluster_access;

static PGconn *cbpool__cluster_run_take(void *arg, int64_t deadline_ns, cbpool **from)
{
    cbpool__cluster_access *ca = (cbpool__cluster_access *)arg;
    return cbpool__cluster_take(ca->cl, ca->access, deadline_ns, from);
}

static int cbpool__cluster_run_unreachable(void *arg)
{
    return cbpool__cluster_all_down(((cbpool__cluster_access *)arg)->cl);
}

CBPOOL_DEF int cbpool_cluster_run(cbpool_cluster *cl, int access, cbpool_tx_fn fn, void *arg,
                                  cbpool_run_opts *opts)
{
    cbpool__cluster_access ca;
    cbpool__run_source src;
    if (!cl || (access != CBPOOL_READ && access != CBPOOL_WRITE))
        return CBPOOL_EINVAL;
    ca.cl = cl;
    ca.access = access;
    src.pool = NULL;
    src.take = cbpool__cluster_run_take;
    src.unreachable = cbpool__cluster_run_unreachable;
    src.arg = &ca;
    src.timeout_ms = cl->cfg.pool.acquire_timeout_ms;
    return cbpool__run(&src, fn, arg, opts);
}
#endif /* CBPOOL_NO_RUN */

CBPOOL_DEF void cbpool_cluster_release(cbpool_cluster *cl, PGconn *pg)
{
    int i;
    if (!cl)
        return;
    if (pg) {
        /* the connection this thread acquired last, usually */
        for (i = 0; i < cl->nhosts; i++) {
            cbpool__conn *c = cbpool__fast_my_last(cl->pools[i]);
            if (c && CBPOOL__LOAD(&c->pg) == pg) {
                cbpool_release(cl->pools[i], pg);
                return;
            }
        }
        for (i = 0; i < cl->nhosts; i++) {
            cbpool *p = cl->pools[i];
            cbpool__conn *c;
            cbpool__lock(p);
            c = cbpool__slots_find_locked(p, pg);
            cbpool__unlock(p);
            if (c) {
                cbpool_release(p, pg);
                return;
            }
        }
    }
    cbpool_release(cl->pools[0], pg);   /* reported there as misuse */
}

CBPOOL_DEF int cbpool_cluster_hosts(const cbpool_cluster *cl)
{
    return cl ? cl->nhosts : 0;
}

CBPOOL_DEF int cbpool_cluster_host_stats(cbpool_cluster *cl, int host, cbpool_host_stats *out)
{
    cbpool *p;
    if (!cl || !out || host < 0 || host >= cl->nhosts)
        return CBPOOL_EINVAL;
    p = cl->pools[host];
    memset(out, 0, sizeof *out);
    snprintf(out->host, sizeof out->host, "%s", cl->hosts[host].host);
    snprintf(out->port, sizeof out->port, "%s", cl->hosts[host].port);
    out->role = CBPOOL__LOAD(&p->member.role);
    out->down = cbpool__member_down(p);
    out->lag_ms = CBPOOL__LOAD(&p->member.lag_ms);
    out->readable = cbpool__cluster_readable(cl, host);
    out->writable = cbpool__cluster_writer(cl) == host;
    cbpool_stats(p, &out->pool);
    return CBPOOL_OK;
}

#ifndef CBPOOL_NO_PROMETHEUS
/* The start of the k-th "# HELP" block of a pool's metrics text, or its end. */
static const char *cbpool__cluster_family(const char *text, int k)
{
    const char *p = text;
    for (;;) {
        const char *next = strstr(p, "# HELP ");
        if (!next)
            return text + strlen(text);
        if (k-- == 0)
            return next;
        p = next + 1;
    }
}

/* A pool's metrics text in memory of its own, or NULL.  Written again into
   a larger buffer when it grew between sizing and writing (a counter that
   gained a digit), so that nothing is cut short. */
static char *cbpool__cluster_pool_text(cbpool *pool, const cbpool_config *cfg)
{
    size_t size = 4096;
    for (;;) {
        char *text = (char *)cbpool__alloc(cfg, size);
        int n;
        if (!text)
            return NULL;
        n = cbpool_prometheus(pool, text, size);
        if (n >= 0 && (size_t)n < size)
            return text;
        cbpool__free(cfg, text);
        if (n < 0)
            return NULL;
        size = (size_t)n + 256;
    }
}

CBPOOL_DEF int cbpool_cluster_prometheus(cbpool_cluster *cl, char *buf, size_t len)
{
    char *texts[CBPOOL__MAX_HOSTS];
    size_t used = 0;
    int i, k, n, rc = 0;

    if (!cl || (!buf && len))
        return CBPOOL_EINVAL;
    memset(texts, 0, sizeof texts);
    for (i = 0; i < cl->nhosts; i++) {
        texts[i] = cbpool__cluster_pool_text(cl->pools[i], &cl->cfg.pool);
        if (!texts[i]) {
            rc = CBPOOL_EINVAL;
            goto done;
        }
    }
#define CBPOOL__PUT(p, l)                                                       \
    do {                                                                        \
        size_t l_ = (l);                                                        \
        if (buf && used < len)                                                  \
            memcpy(buf + used, (p), used + l_ < len ? l_ : len - used);         \
        used += l_;                                                             \
    } while (0)
    /* every pool writes the same families in the same order: each family's
       HELP and TYPE once, then its samples from every host */
    for (k = 0; *cbpool__cluster_family(texts[0], k); k++) {
        for (i = 0; i < cl->nhosts; i++) {
            const char *from = cbpool__cluster_family(texts[i], k), *to = cbpool__cluster_family(texts[i], k + 1);
            const char *samples = from;
            int headers;
            for (headers = 0; headers < 2 && samples < to && *samples == '#'; headers++)
                samples = strchr(samples, '\n') ? strchr(samples, '\n') + 1 : to;
            if (i == 0)
                CBPOOL__PUT(from, (size_t)(samples - from));
            CBPOOL__PUT(samples, (size_t)(to - samples));
        }
    }
    {
        static const char *const heads[3] = {
            "# HELP cbpool_host_role Role of the host: 0 unknown or down, 1 primary, 2 standby.\n"
            "# TYPE cbpool_host_role gauge\n",
            "# HELP cbpool_host_down 1 while connects find the host unreachable.\n"
            "# TYPE cbpool_host_down gauge\n",
            "# HELP cbpool_host_lag_seconds Replay lag at the last check, -1 if unknown.\n"
            "# TYPE cbpool_host_lag_seconds gauge\n"};
        for (k = 0; k < 3; k++) {
            CBPOOL__PUT(heads[k], strlen(heads[k]));
            for (i = 0; i < cl->nhosts; i++) {
                cbpool *p = cl->pools[i];
                char app[160], pod[160], host[620], line[1200];
                int lag = CBPOOL__LOAD(&p->member.lag_ms);
                cbpool__stats_label(app, sizeof app, p->ident.application_name);
                cbpool__stats_label(pod, sizeof pod, p->ident.pod);
                cbpool__stats_label(host, sizeof host, cl->hosts[i].label);
                if (k == 2)
                    n = snprintf(line, sizeof line,
                                 "cbpool_host_lag_seconds{application=\"%s\",pod=\"%s\","
                                 "host=\"%s\"} %.3f\n", app, pod, host,
                                 lag < 0 ? -1.0 : lag / 1000.0);
                else
                    n = snprintf(line, sizeof line,
                                 "cbpool_host_%s{application=\"%s\",pod=\"%s\",host=\"%s\"} %d\n",
                                 k == 0 ? "role" : "down", app, pod, host,
                                 k == 0 ? CBPOOL__LOAD(&p->member.role)
                                        : cbpool__member_down(p));
                if (n > 0)
                    CBPOOL__PUT(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
            }
        }
    }
    if (buf && len)
        buf[used < len ? used : len - 1] = '\0';
#undef CBPOOL__PUT
    rc = (int)used;
done:
    for (i = 0; i < cl->nhosts; i++)
        cbpool__free(&cl->cfg.pool, texts[i]);
    return rc;
}
#endif /* CBPOOL_NO_PROMETHEUS */

CBPOOL_DEF cbpool *cbpool_cluster_pool(cbpool_cluster *cl, int host)
{
    return cl && host >= 0 && host < cl->nhosts ? cl->pools[host] : NULL;
}

CBPOOL_DEF void cbpool_cluster_close(cbpool_cluster *cl)
{
    if (cl)
        cbpool__cluster_free(cl);
}

#endif /* CBPOOL_NO_CLUSTER */

#ifdef __cplusplus
}
#endif

#endif /* CBPOOL_IMPLEMENTATION_DONE */
#endif /* CBPOOL_IMPLEMENTATION */

/*
   LICENCE (PostgreSQL Licence)

   Copyright (c) 2026, the connbudget authors

   Permission to use, copy, modify, and distribute this software and its
   documentation for any purpose, without fee, and without a written
   agreement is hereby granted, provided that the above copyright notice and
   this paragraph and the following two paragraphs appear in all copies.

   IN NO EVENT SHALL THE AUTHORS BE LIABLE TO ANY PARTY FOR DIRECT,
   INDIRECT, SPECIAL, INCIDENTAL, OR CONSEQUENTIAL DAMAGES, INCLUDING LOST
   PROFITS, ARISING OUT OF THE USE OF THIS SOFTWARE AND ITS DOCUMENTATION,
   EVEN IF THE AUTHORS HAVE BEEN ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

   THE AUTHORS SPECIFICALLY DISCLAIM ANY WARRANTIES, INCLUDING, BUT NOT
   LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A
   PARTICULAR PURPOSE.  THE SOFTWARE PROVIDED HEREUNDER IS ON AN "AS IS"
   BASIS, AND THE AUTHORS HAVE NO OBLIGATIONS TO PROVIDE MAINTENANCE,
   SUPPORT, UPDATES, ENHANCEMENTS, OR MODIFICATIONS.
*/
