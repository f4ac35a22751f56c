# connbudget: PGXS build of the server extension, plus the project's targets.

EXTENSION = connbudget
EXTVERSION = $(shell grep default_version $(EXTENSION).control | sed -e "s/default_version[[:space:]]*=[[:space:]]*'\([^']*\)'/\1/")

MODULE_big = connbudget
OBJS = \
	extension/allocation.o \
	extension/allocator.o \
	extension/budget.o \
	extension/claim.o \
	extension/connbudget.o \
	extension/connect.o \
	extension/functions.o \
	extension/guards.o \
	extension/guc.o \
	extension/identity.o \
	extension/limits.o \
	extension/limits_table.o \
	extension/loader.o \
	extension/lookup.o \
	extension/registry.o \
	extension/share.o \
	extension/shmem.o

# sql/connbudget.sql is the current version's install script; released
# install scripts of older versions and the upgrade scripts are kept as
# they were released.
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(filter-out sql/$(EXTENSION)--$(EXTVERSION).sql,$(wildcard sql/$(EXTENSION)--*.sql))

# pg_regress runs in the database connbudget.database names (postgres by
# default) of a throwaway cluster started by test/run, which preloads the
# extension; "setup" creates the extensions and helpers the others use.
REGRESS = setup identity allocation limits enforcement teardown
REGRESS_OPTS = --inputdir=test --use-existing

# Isolation specs, run by pg_isolation_regress after REGRESS in the same
# database (ISOLATION_TESTDB, below): the concurrency rules, each
# interleaving forced (test/isolation/specs, expected output in
# test/isolation/expected).  Each spec puts back what it changes.
ISOLATION = limits-commit-order connect-vs-limits share-vs-limits share-vs-binding extension-drop-readers
ISOLATION_OPTS = --inputdir=test/isolation --use-existing

PG_CONFIG ?= pg_config
PG_CFLAGS += -Wall -Wextra

# make WERROR=1 (the test build): warnings are errors, assertions on.
# Without assertions, PostgreSQL 15's own bufpage.h has an unused parameter,
# so the release build does not warn about those.
ifdef WERROR
PG_CFLAGS += -Werror -DUSE_ASSERT_CHECKING
else
PG_CFLAGS += -Wno-unused-parameter
endif

EXTRA_CLEAN = sql/$(EXTENSION)--$(EXTVERSION).sql $(EXTENSION)-*.zip \
	client/pgbouncer/connbudget-pgbouncer

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# after the include, which sets them: the database named by connbudget.database
CONTRIB_TESTDB = postgres
ISOLATION_TESTDB = postgres

# connbudget-pgbouncer, the PgBouncer controller (client/pgbouncer): C11 and
# libpq only, built by `make` (`make install` leaves it where it is)
all: client/pgbouncer/connbudget-pgbouncer

client/pgbouncer/connbudget-pgbouncer: client/pgbouncer/connbudget_pgbouncer.c
	$(CC) -std=c11 -O2 -Wall -Wextra $(if $(WERROR),-Werror) -I$(shell $(PG_CONFIG) --includedir) \
		-o $@ $< -L$(shell $(PG_CONFIG) --libdir) -Wl,-rpath,$(shell $(PG_CONFIG) --libdir) -lpq -pthread

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql
	cp $< $@

.PHONY: test demo bench dist

# The PGXN release zip, connbudget-<version>.zip, from what is committed at
# HEAD (META.json's version must be the control file's, as x.y.0), written
# to DISTDIR (default: here).
DISTVERSION = $(EXTVERSION).0
DISTDIR ?= .
dist:
	@grep -q '"version": "$(DISTVERSION)"' META.json || \
		{ echo "META.json does not say version $(DISTVERSION)" >&2; exit 1; }
	git archive --format zip --prefix=$(EXTENSION)-$(DISTVERSION)/ \
		-o $(DISTDIR)/$(EXTENSION)-$(DISTVERSION).zip HEAD

test:
	bash test/run

demo:
	bash client/examples/demo.sh

bench:
	bash bench/run
