#!/bin/sh
# Installs the Debian packages the build needs, only when something is
# missing, so a warm machine pays nothing.  Needs root (or sudo) on a fresh
# machine.
#
#   sh tools/sysdeps.sh          the build: compiler, liburing, Python headers
#   sh tools/sysdeps.sh --test   the same, plus the PostgreSQL server that
#                                tests/test_psycopg.py starts (tests/pg.py)
#                                and tmux, which tests/test_shadow_ui.py
#                                drives fibers-shadow's live UI in (and
#                                tests/test_debug_cli.py `python -m fibers
#                                top`), and
#                                openssl, tests/test_ssl.py's TLS peer,
#                                and redis-server, which tests/test_libs_redis.py starts
#                                and curl, wrk and ab (apache2-utils), the real
#                                clients of tests/test_http_real.py
#                                and prometheus, the real server that
#                                tests/test_metrics.py has scrape fibers.metrics
#   sh tools/sysdeps.sh --bench  the build, plus OpenSSL's headers for
#                                bench-tls's C load generator, and for
#                                bench-http: wrk and ab (apache2-utils), the
#                                clients, and libev's headers, which bjoern
#                                (a peer server) compiles against
set -eu

with_postgres=0
with_bench=0
[ "${1:-}" = "--test" ] && with_postgres=1
[ "${1:-}" = "--bench" ] && with_bench=1

missing=""
command -v cc >/dev/null 2>&1 || missing="$missing gcc libc6-dev"
command -v make >/dev/null 2>&1 || missing="$missing make"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
# liburing is optional for the build (epoll works alone) but wanted.
if ! pkg-config --exists liburing 2>/dev/null; then
    missing="$missing liburing-dev"
fi
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
    missing="$missing python3 python3-dev python3-venv"
else
    "$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing="$missing python3-dev"
    "$PY" -c 'import venv, ensurepip' 2>/dev/null || missing="$missing python3-venv"
fi

# The tests run their own throwaway clusters (initdb + pg_ctl from
# /usr/lib/postgresql/<version>/bin), never the system's.
if [ "$with_postgres" -eq 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing="$missing postgresql"
fi
# tests/test_ssl.py talks to real `openssl s_server` and `s_client` peers.
if [ "$with_postgres" -eq 1 ] && ! command -v openssl >/dev/null 2>&1; then
    missing="$missing openssl"
fi
# tests/test_libs_redis.py runs redis-py against its own redis-server
# (tests/libservers.py), never the system's: no service is enabled for it.
if [ "$with_postgres" -eq 1 ] && ! command -v redis-server >/dev/null 2>&1; then
    missing="$missing redis-server"
fi
# tests/test_http_real.py points real clients at fibers.http: curl, and the
# load generators wrk and ab (apache2-utils).
if [ "$with_postgres" -eq 1 ] && ! command -v curl >/dev/null 2>&1; then
    missing="$missing curl"
fi
if [ "$with_postgres" -eq 1 ] && ! command -v wrk >/dev/null 2>&1; then
    missing="$missing wrk"
fi
if [ "$with_postgres" -eq 1 ] && ! command -v ab >/dev/null 2>&1; then
    missing="$missing apache2-utils"
fi
# tests/test_metrics.py starts its own Prometheus server (on a free loopback
# port, with its own scrape config and data directory) to scrape
# fibers.metrics' endpoint and query it back; no service is enabled for it.
if [ "$with_postgres" -eq 1 ] && ! command -v prometheus >/dev/null 2>&1; then
    missing="$missing prometheus"
fi
# bench/echo/tls_loadgen.c links libssl.
if [ "$with_bench" -eq 1 ] && ! pkg-config --exists openssl 2>/dev/null; then
    missing="$missing libssl-dev"
fi
# bench/http_run.py drives every HTTP server with wrk (ab is the issue's
# other client); pip builds bjoern from source against libev.
if [ "$with_bench" -eq 1 ] && ! command -v wrk >/dev/null 2>&1; then
    missing="$missing wrk"
fi
if [ "$with_bench" -eq 1 ] && ! command -v ab >/dev/null 2>&1; then
    missing="$missing apache2-utils"
fi
if [ "$with_bench" -eq 1 ] && ! [ -e /usr/include/ev.h ]; then
    missing="$missing libev-dev"
fi
# tests/test_shadow_ui.py runs the live UI in a tmux pane and reads it back;
# tests/test_debug_cli.py does the same with `python -m fibers top`.
if [ "$with_postgres" -eq 1 ] && ! command -v tmux >/dev/null 2>&1; then
    missing="$missing tmux"
fi

if [ -n "$missing" ]; then
    echo "installing Debian packages:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    case "$missing" in
    *postgresql*)
        # No default cluster (and so no server on port 5432) for the tests'
        # sake: postgresql-common reads this before it creates "main".
        $SUDO mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" |
            $SUDO tee /etc/postgresql-common/createcluster.d/fibers-no-main.conf >/dev/null
        ;;
    esac
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi
