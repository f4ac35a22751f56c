#!/usr/bin/env bash
# dist.sh -- the PGXN release: META.json follows the PGXN meta spec and
# agrees with the control file, debian/changelog's newest entry is the same
# upstream version, and make dist produces a zip that holds it,
# from which the extension builds.  Prints TAP.  CB_SRC is the checkout
# (test/run passes it), which make dist archives with git.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
# shellcheck source=../lib/tap.sh
source test/lib/tap.sh
work=$(mktemp -d "${CB_WORK:-/tmp}/dist.XXXXXX")
trap 'rm -rf "$work"' EXIT
version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" connbudget.control)

# ---- META.json ----
python3 - "$version" >"$work/meta.out" 2>&1 <<'PY'
import json, os, sys
version = sys.argv[1] + ".0"
meta = json.load(open("META.json"))
problems = []
def need(cond, what):
    if not cond:
        problems.append(what)
for key in ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"):
    need(key in meta, "required key %s" % key)
need(meta.get("name") == "connbudget", "name is connbudget")
need(meta.get("version") == version, "version %s is the control file's %s" % (meta.get("version"), version))
need(meta.get("meta-spec", {}).get("version") == "1.0.0", "meta-spec 1.0.0")
need(meta.get("license") == "postgresql", "license postgresql")
ext = meta.get("provides", {}).get("connbudget", {})
need(ext.get("version") == version, "provides.connbudget.version")
need(os.path.exists(ext.get("file", "")), "provides.connbudget.file exists")
need(os.path.exists(ext.get("docfile", "")), "provides.connbudget.docfile exists")
need(meta.get("prereqs", {}).get("runtime", {}).get("requires", {}).get("PostgreSQL") == "15.0.0",
     "prereqs.runtime.requires.PostgreSQL is 15.0.0")
need("resources" in meta, "resources")
need(meta.get("release_status") in ("stable", "testing", "unstable"), "release_status")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
PY
ok $? "META.json follows the PGXN meta spec and says version $version.0$(sed 's/^/; /' "$work/meta.out" | tr -d '\n')"

# ---- debian/changelog ----
# the newest entry's version, without its epoch and Debian revision, is the
# release's: META.json's, and the control file's as x.y.0
deb_version=$(sed -n '1s/^connbudget (\([^)]*\)) .*/\1/p' debian/changelog)
deb_upstream=${deb_version#*:}
deb_upstream=${deb_upstream%-*}
meta_version=$(python3 -c 'import json; print(json.load(open("META.json")).get("version", ""))' 2>/dev/null)
ok "$([ -n "$deb_upstream" ] && [ "$deb_upstream" = "$meta_version" ] && [ "$deb_upstream" = "$version.0" ]
    echo $?)" "debian/changelog's upstream version (${deb_upstream:-none: its first line is not \"connbudget (VERSION) ...\"}) is META.json's ($meta_version) and default_version $version's ($version.0)"

# ---- make dist ----
if [ -z "${CB_SRC:-}" ] || { ! git -C "$CB_SRC" rev-parse --git-dir >/dev/null 2>&1 &&
    ! GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*' \
        git -C "$CB_SRC" rev-parse --git-dir >/dev/null 2>&1; }; then
    echo "ok $((n + 1)) # SKIP make dist: not run from a git checkout"
    n=$((n + 1))
else
    GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*' \
        make -s -C "$CB_SRC" dist DISTDIR="$work" >"$work/dist.out" 2>&1
    zip="$work/connbudget-$version.0.zip"
    ok "$([ -s "$zip" ]; echo $?)" "make dist writes connbudget-$version.0.zip$(sed 's/^/: /' "$work/dist.out" | head -3 | tr -d '\n')"
    python3 - "$zip" "$work" "$version" >"$work/zip.out" 2>&1 <<'PY'
import json, sys, zipfile
zip_path, out, version = sys.argv[1], sys.argv[2], sys.argv[3] + ".0"
z = zipfile.ZipFile(zip_path)
prefix = "connbudget-%s/" % version
names = set(z.namelist())
want = ["META.json", "connbudget.control", "Makefile", "README.md", "LICENSE",
        "sql/connbudget.sql", "sql/connbudget--1.0.sql", "sql/connbudget--1.0--1.1.sql",
        "sql/connbudget--1.1.sql", "sql/connbudget--1.1--1.2.sql",
        "extension/connect.c", "extension/allocation.c", "client/connbudget_pool.h",
        "monitoring/postgres_exporter.yml"]
missing = [w for w in want if prefix + w not in names]
outside = [n for n in names if not n.startswith(prefix)]
meta = json.loads(z.read(prefix + "META.json"))
z.extractall(out)
print("missing: %s; outside the prefix: %s; META.json version: %s" % (missing, outside, meta["version"]))
sys.exit(1 if missing or outside or meta["version"] != version else 0)
PY
    ok $? "the zip holds META.json, the sources and the SQL scripts under connbudget-$version.0/ ($(cat "$work/zip.out"))"
    make -s -C "$work/connbudget-$version.0" PG_CONFIG="${PG_CONFIG:-pg_config}" WERROR=1 \
        >"$work/build.out" 2>&1
    ok "$([ -f "$work/connbudget-$version.0/connbudget.so" ]; echo $?)" \
        "the extension builds from the unpacked zip with -Werror$(tail -3 "$work/build.out" | sed 's/^/: /' | tr -d '\n')"
fi
echo "1..$n"
[ "$failures" = 0 ]
