#!/usr/bin/env bash
# Runs the whole Python suite on every CPython 3.10-3.13 that pyenv has, one
# private virtualenv per interpreter (.venv-3.10, ...), each built the way
# `make test` builds .venv.  An interpreter that is not installed is
# skipped, and said so (with FIBERS_REQUIRE set, as on CI, it fails the
# run); any present one failing fails the whole run.  Each run's pytest
# prints its skips' reasons (-rs) and the capabilities it did not test.
set -u
cd "$(dirname "$0")/.."

MAKE=${MAKE:-make}
root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
mkdir -p build
summary=()
failed=0
total_passed=0
total_failed=0
total_skipped=0
for v in 3.10 3.11 3.12 3.13; do
    # The newest patch release of that minor version, if any.
    py=""
    for d in $(ls -d "$root"/versions/"$v".* 2>/dev/null | sort -V); do
        [ -x "$d/bin/python$v" ] && py="$d/bin/python$v"
    done
    if [ -z "$py" ]; then
        echo "=== CPython $v: not found under $root/versions, skipped"
        if [ -n "${FIBERS_REQUIRE:-}" ]; then
            # On CI (.ci/run) an interpreter not tested is a failure, as
            # a skipped capability is (tests/capabilities.py).
            failed=1
            summary+=("CPython $v: FAILED (not installed; FIBERS_REQUIRE is set)")
        else
            summary+=("CPython $v: skipped (not installed)")
        fi
        continue
    fi
    echo "=== CPython $v: $py"
    log="build/test-pythons-$v.log"
    start=$(date +%s)
    # The editable build puts each interpreter's extension beside the
    # others (the file names carry the ABI tag), so they coexist; they are
    # built one after the other because the generated C is shared.
    $MAKE --no-print-directory pytest VENV=".venv-$v" PYTHON="$py" 2>&1 \
        | tee "$log"
    rc=${PIPESTATUS[0]}
    secs=$(( $(date +%s) - start ))
    last=$(grep -E '(passed|failed|error)' "$log" | tail -1 | tr -d '=' |
           sed 's/^ *//; s/ *$//')
    for word in passed failed skipped error errors; do
        n=$(echo "$last" | grep -oE "[0-9]+ $word\b" | grep -oE '^[0-9]+')
        case $word in
            passed) total_passed=$(( total_passed + ${n:-0} )) ;;
            skipped) total_skipped=$(( total_skipped + ${n:-0} )) ;;
            *) total_failed=$(( total_failed + ${n:-0} )) ;;
        esac
    done
    if [ "$rc" -eq 0 ]; then
        summary+=("CPython $v: ok: ${last:-?} (build and test ${secs} s)")
    else
        failed=1
        summary+=("CPython $v: FAILED (exit $rc): ${last:-?} (${secs} s)")
    fi
done
echo "=== test-pythons summary"
printf '%s\n' "${summary[@]}"
# One closing line for all interpreters together.
[ "$failed" -ne 0 ] && [ "$total_failed" -eq 0 ] && total_failed=1
echo "test-pythons: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit $failed
