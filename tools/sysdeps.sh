#!/bin/sh
# Installs the Debian packages the build needs, only when something is
# missing, so a warm machine pays nothing.  Needs root (or sudo) on a fresh
# machine.
set -eu

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

if [ -n "$missing" ]; then
    echo "installing Debian packages:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi
