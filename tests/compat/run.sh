#!/bin/sh
# Builds a virtual environment at one keras/tensorflow pair, installs kerasmtl into it
# (not editable) and runs tests/compat/smoke.py there.
#
# Usage: tests/compat/run.sh VENV lowest|newest|REQUIREMENT...
#   lowest: the lower bounds of setup.cfg; newest: the newest releases its ranges allow;
#   or requirements of your own, e.g. keras==3.11.0 tensorflow==2.20.0.
# The environment is kept and reused while the requirements stay the same (kerasmtl itself
# is installed again each time).
set -eu
cd "$(dirname "$0")/../.."
venv=$1
shift
python=${PYTHON:-python3}
requirements=$($python tests/compat/requirements.py "$@")
start=$(date +%s)
if [ ! -f "$venv/.requirements" ] || [ "$(cat "$venv/.requirements")" != "$requirements" ]; then
    rm -rf "$venv"
    $python -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    # shellcheck disable=SC2086  (one word per requirement)
    "$venv/bin/pip" install -q $requirements
    echo "$requirements" > "$venv/.requirements"
else  # the same versions: only this checkout's kerasmtl, in place of the copy installed before
    "$venv/bin/pip" install -q --no-deps --force-reinstall .
fi
installed=$(date +%s)
echo "== $venv: pip install $requirements ($((installed - start)) s)"
if [ "$*" = "newest" ]; then
    "$venv/bin/pip" index versions keras 2>/dev/null | head -1 | sed 's/^/newest published: /'
    "$venv/bin/pip" index versions tensorflow 2>/dev/null | head -1 | sed 's/^/newest published: /'
fi
rm -rf "$venv/smoke"  # the last run's models and exports, written by smoke.py
status=0
(unset PYTHONPATH; "$venv/bin/python" tests/compat/smoke.py "$venv/smoke") || status=$?
echo "== $venv: smoke $([ $status -eq 0 ] && echo passed || echo FAILED) in $(($(date +%s) - installed)) s"
exit $status
