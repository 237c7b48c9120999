#!/usr/bin/env bash
# Run every test of celery-stable on a fresh Linux machine (root): lint, the app's tests against a
# real Redis and real workers, then each Molecule scenario on real systemd containers.
#
#   scripts/test.sh                 # everything (what .ci/run calls)
#   scripts/test.sh app molecule:default   # only some stages
#
# Stages: lint app images molecule:<scenario>...  Prints a summary with the wall time of each.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

scenarios=(default faults trixie fleet arm64)
# The app stage's pytest paths. A skip there fails the stage unless tests/expected-skips.txt lists
# it (tests/infra/pytest_expected_skips.py).
pytest_paths=(app/runtime/tests app/video/tests roles/celery_stable/tests roles/celery_stable_broker/tests tests/infra)
all=(lint app images)
for s in "${scenarios[@]}"; do
  [[ -f "molecule/$s/molecule.yml" ]] && all+=("molecule:$s")
done
stages=("$@")
((${#stages[@]})) || stages=("${all[@]}")

scripts/bootstrap.sh
export PATH="$top/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

wants() { [[ " ${stages[*]} " == *" $1 "* ]]; }

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
# repeated after the summary, where a reader of only the end of the output sees them.
logs=.cache/stages
mkdir -p "$logs"
summary=()
failed=0
failed_stages=()
for stage in "${stages[@]}"; do
  printf '\n===== %s =====\n' "$stage"
  start=$SECONDS
  log="$logs/${stage//:/-}.log"
  if run_stage "$stage" > >(tee "$log") 2>&1; then
    result=ok
  else
    result=FAILED failed=1
    failed_stages+=("$stage")
  fi
  summary+=("$(printf '%-20s %-7s %5ss' "$stage" "$result" "$((SECONDS - start))")")
  # A failed stage does not hide the others' results, but nothing is reported green.
done
for stage in "${failed_stages[@]}"; do
  printf '\n===== why %s failed (from %s) =====\n' "$stage" "$logs/${stage//:/-}.log"
  grep -E -A12 'fatal:|FAILED!|^FAILED |^E  |Error|failed: [^0]|: FAIL' "$logs/${stage//:/-}.log" |
    grep -v 'RETRYING' | tail -60 || true
done
printf '\n===== summary =====\n'
printf '%s\n' "${summary[@]}"
exit "$failed"
