#!/usr/bin/env bash
# Run every test of celery-stable on a fresh Linux machine (root): lint, the app's tests against a
# real Redis and real workers, then each Molecule scenario on real systemd containers.
#
#   scripts/test.sh                 # everything (what .ci/run calls)
#   scripts/test.sh app molecule:default   # only some stages
#
# Stages: lint images app molecule:<scenario>... (molecule:arm64 beside the others, see below).
# Prints a summary with the wall time of each, and the run's.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

scenarios=(default faults trixie fleet arm64)
# The app stage's pytest paths. A skip there fails the stage unless tests/expected-skips.txt lists
# it (tests/infra/pytest_expected_skips.py).
pytest_paths=(app/runtime/tests app/video/tests roles/celery_stable/tests roles/celery_stable_broker/tests tests/infra)
all=(lint images app)
for s in "${scenarios[@]}"; do
  [[ -f "molecule/$s/molecule.yml" ]] && all+=("molecule:$s")
done
requested=("$@")
((${#requested[@]})) || requested=("${all[@]}")
stages=("${requested[@]}")

scripts/bootstrap.sh
export PATH="$top/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

wants() { [[ " ${requested[*]} " == *" $1 "* ]]; }

run_stage() {
  case "$1" in
    # Each stage's commands are chained: run_stage is called in an `if`, where set -e is off,
    # so an unchained failure would be hidden by the next command's success.
    lint)
      ruff check app tests roles molecule &&
        ruff format --check app tests roles molecule &&
        yamllint -s . &&
        ansible-lint --offline
      ;;
    app)
      # Node ids relative to the repository (the list's), whichever pyproject.toml pytest picks.
      PYTHONPATH="$top/tests/infra${PYTHONPATH:+:$PYTHONPATH}" pytest -q -rs --rootdir="$top" \
        -p pytest_expected_skips --expected-skips=tests/expected-skips.txt "${pytest_paths[@]}"
      ;;
    images)
      tests/infra/images.sh bookworm amd64 &&
        { ! { wants molecule:trixie || wants molecule:fleet; } || tests/infra/images.sh trixie amd64; } &&
        { ! wants molecule:arm64 || tests/infra/images.sh bookworm arm64; } &&
        tests/infra/python-mirror.sh &&
        tests/infra/wheelhouse.sh
      ;;
    molecule:*)
      # The shared base named explicitly: Molecule finds it by the git root only.
      molecule --base-config "$top/.config/molecule/config.yml" test -s "${1#molecule:}"
      ;;
    *) echo "unknown stage: $1" >&2; return 2 ;;
  esac
}

# Each stage's output is also kept in .cache/stages/<stage>.log: a failed stage's errors are
# repeated after the summary, where a reader of only the end of the output sees them. Its result
# goes to .cache/stages/<stage>.result ("ok SECONDS" or "FAILED SECONDS"), which the summary reads.
logs=.cache/stages
mkdir -p "$logs"
log_of() { echo "$logs/${1//:/-}.log"; }
result_of() { echo "$logs/${1//:/-}.result"; }

# run_logged STAGE [quiet]: runs it, its output to its log (and to ours unless quiet).
run_logged() {
  local stage=$1 start=$SECONDS result=ok
  if [[ ${2:-} == quiet ]]; then
    run_stage "$stage" >"$(log_of "$stage")" 2>&1 || result=FAILED
  else
    run_stage "$stage" > >(tee "$(log_of "$stage")") 2>&1 || result=FAILED
  fi
  echo "$result $((SECONDS - start))" >"$(result_of "$stage")"
}

# The arm64 scenario runs beside the others, started once the images are built: its emulated
# modules keep one core busy for some 14 minutes (qemu-user runs one module at a time) while the
# stages in front mostly wait on systemd, renders and the fault matrix's clocks. Its output goes
# to its log only, printed whole once it has ended, so that the two never interleave.
beside=molecule:arm64
beside_pid=
if ((${#stages[@]} > 1)) && wants "$beside"; then
  stages=()
  for stage in "${requested[@]}"; do [[ $stage == "$beside" ]] || stages+=("$stage"); done
else
  beside=
fi
start_beside() {
  [[ -n $beside && -z $beside_pid ]] || return 0
  printf '\n===== %s (beside the next stages; output in %s) =====\n' "$beside" "$(log_of "$beside")"
  run_logged "$beside" quiet &
  beside_pid=$!
}

for stage in "${requested[@]}"; do rm -f "$(result_of "$stage")"; done
for stage in "${stages[@]}"; do
  # Before the first stage after the images it needs (or the first, when they are not asked for).
  if [[ $stage != images ]] && { ! wants images || [[ -f $(result_of images) ]]; }; then
    start_beside
  fi
  printf '\n===== %s =====\n' "$stage"
  run_logged "$stage"
done
start_beside
if [[ -n $beside_pid ]]; then
  wait "$beside_pid" || true
  printf '\n===== %s (ran beside the stages above) =====\n' "$beside"
  cat "$(log_of "$beside")"
fi

summary=()
failed=0
failed_stages=()
for stage in "${requested[@]}"; do
  read -r result secs <"$(result_of "$stage")" || { result=FAILED secs=0; }
  [[ $result == ok ]] || { failed=1; failed_stages+=("$stage"); }
  summary+=("$(printf '%-20s %-7s %5ss' "$stage" "$result" "$secs")")
done
for stage in "${failed_stages[@]}"; do
  printf '\n===== why %s failed (from %s) =====\n' "$stage" "$(log_of "$stage")"
  grep -E -A12 'fatal:|FAILED!|^FAILED |^E  |Error|failed: [^0]|: FAIL' "$(log_of "$stage")" |
    grep -v 'RETRYING' | tail -60 || true
done
printf '\n===== summary =====\n'
printf '%s\n' "${summary[@]}"
printf '%-20s %-7s %5ss\n' "total (wall)" "" "$SECONDS"
exit "$failed"
