#!/bin/sh
# Runs every unit-test binary given as argument; exit status is non-zero if any failed.
rc=0
for t in "$@"; do
    "$t" || rc=1
done
exit $rc
