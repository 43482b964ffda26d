#!/bin/sh
# Runs the whole test suite: C unit tests, then integration and security tests against a
# real daemon.
# Prints one closing line "N passed, N failed, N skipped" and exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

upass=0; ufail=0; uskip=0
for t in build/tests/test_*; do
    [ -x "$t" ] || continue
    "$t" 2>&1 | tee -a "$log"
done
upass=$(grep -cE '^ok ' "$log" || true)
ufail=$(grep -cE '^FAIL' "$log" || true)
uskip=$(grep -cE '^skip ' "$log" || true)

/usr/bin/python3 -m pytest -q -rs tests/integration tests/security 2>&1 | tee "$log.py"
prc=$?
summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error)' "$log.py" | tail -n 1)
ipass=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
ifail=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
ierr=$(echo "$summary" | grep -oE '[0-9]+ errors?' | grep -oE '[0-9]+' || echo 0)
iskip=$(echo "$summary" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+' || echo 0)
rm -f "$log.py"

passed=$((upass + ${ipass:-0}))
failed=$((ufail + ${ifail:-0} + ${ierr:-0}))
skipped=$((uskip + ${iskip:-0}))
# pytest exits 5 when it collected nothing: that is a failure here too.
if [ "$prc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
fi
echo "unit: $upass passed, $ufail failed, $uskip skipped; integration: ${ipass:-0} passed, $((${ifail:-0} + ${ierr:-0})) failed, ${iskip:-0} skipped"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
