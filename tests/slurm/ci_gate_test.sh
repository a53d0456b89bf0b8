#!/usr/bin/env bash
# The Slurm tier never disappears silently under CI: run as a user who is not
# root, each Slurm test script skips (exit 77, one SKIP line) without CI and
# fails (exit 1, one FAIL line saying why) with CI=true.
#
# Usage: tests/slurm/ci_gate_test.sh
# As root it drops to the user `nobody` (setpriv) on a world-readable copy of the
# scripts; as another user it runs them as that user.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

T=$(mktemp -d /tmp/hpcml-ci-gate.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/tests/slurm" "$T/tests/support"
cp "$here"/*.sh "$T/tests/slurm/"
cp "$root/tests/support/ci.sh" "$T/tests/support/"
chmod -R a+rX "$T"

as_user=()
if [[ $(id -u) -eq 0 ]]; then
  as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi

for script in local_cluster_test.sh train_sbatch_test.sh serve_hetjob_test.sh preempt_requeue_test.sh \
  killed_rank_test.sh; do
  for ci in "" true; do
    out=$(cd "$T" && env -u CI ${ci:+CI=$ci} timeout 60 "${as_user[@]}" bash "$T/tests/slurm/$script" /bin/true 2>&1)
    rc=$?
    lines=$(printf '%s\n' "$out" | grep -c .)
    if [[ -z "$ci" ]]; then
      want_rc=77 want='^SKIP: .*needs root'
    else
      want_rc=1 want='^FAIL: .* cannot run and CI=true forbids skipping it: needs root'
    fi
    if [[ $rc -eq $want_rc && $lines -eq 1 && "$out" =~ $want ]]; then
      pass "$script, CI=${ci:-unset}: exit $rc, '$out'"
    else
      fail "$script, CI=${ci:-unset}: exit $rc (want $want_rc), $lines line(s) (want 1): $out"
    fi
  done
done

((failures == 0)) && echo "ALL PASSED" || echo "$failures FAILED"
((failures == 0))
