#!/usr/bin/env bash
# A local wheelhouse for the test hosts: the app's pinned requirements for every Python and
# architecture the scenarios run, plus uv's own wheel, so a converge (above all an emulated arm64
# one) installs from a bind-mounted directory instead of downloading for minutes. It is what the
# role's find-links variable points at (celery_stable_pip_find_links).
#
#   tests/infra/wheelhouse.sh          # download when the inputs changed; print the variables to use
#   tests/infra/wheelhouse.sh --force  # download again even if nothing changed
#
# Environment:
#   WHEELHOUSE_DIR        output (default: <repo>/.cache/wheelhouse), one flat directory of wheels
#   WHEELHOUSE_REQS       requirements files, space-separated (default: every requirements.txt
#                         under app/ and tests/ that git tracks; without git, every one found)
#   WHEELHOUSE_PYTHONS    CPython versions (default: "3.11 3.12": Debian 12's, and the role's)
#   WHEELHOUSE_ARCHES     architectures (default: "x86_64 aarch64")
#   WHEELHOUSE_GLIBC      newest manylinux glibc accepted (default: 2.36, Debian 12's)
#   WHEELHOUSE_UV_VERSION uv's version (default: the uv pin of requirements-dev.txt)
#   WHEELHOUSE_MOUNT      where hosts see the directory (default: /srv/celery-stable-wheels)
#
# Each requirements file is downloaded on its own (they are separate venvs and may pin the same
# package differently); a file with `--hash=` lines is downloaded in pip's hash-checking mode,
# which then needs a hash for every requirement of that file (as `uv pip compile
# --generate-hashes` writes them), and the others without.
# Wheels only (--only-binary=:all:): a host never compiles. A requirement without a wheel for a
# target fails here, naming it, rather than on the host. Wheels no longer needed are removed.
# No pip/setuptools/wheel: the role installs the app with uv (UV_FIND_LINKS) and uv itself with the
# venv's bundled pip, and every requirement is a wheel, so nothing here would ever use them.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
out=${WHEELHOUSE_DIR:-$top/.cache/wheelhouse}
pythons=${WHEELHOUSE_PYTHONS:-3.11 3.12}
arches=${WHEELHOUSE_ARCHES:-x86_64 aarch64}
glibc=${WHEELHOUSE_GLIBC:-2.36}
mount=${WHEELHOUSE_MOUNT:-/srv/celery-stable-wheels}
force=0
[[ ${1:-} == --force ]] && force=1

log() { echo "[wheelhouse] $*" >&2; }
die() { log "error: $*"; exit 1; }

reqs=()
if [[ -n ${WHEELHOUSE_REQS:-} ]]; then
  read -r -a reqs <<<"$WHEELHOUSE_REQS"
  for r in "${reqs[@]}"; do [[ -f $r ]] || die "$r does not exist (WHEELHOUSE_REQS)"; done
else
  if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t found < <(git -C "$top" ls-files ':(glob)app/**/requirements.txt' ':(glob)tests/**/requirements.txt')
  else
    mapfile -t found < <(cd "$top" && find app tests -name requirements.txt -type f -not -path '*/.*' 2>/dev/null | sort)
  fi
  for r in "${found[@]}"; do [[ -f $top/$r ]] && reqs+=("$top/$r"); done
  ((${#reqs[@]})) || die "no requirements.txt under app/ or tests/ (set WHEELHOUSE_REQS)"
fi
uv_version=${WHEELHOUSE_UV_VERSION:-$(sed -n 's/^uv==\([^ ;#]*\).*/\1/p' "$top/requirements-dev.txt" 2>/dev/null | head -1)}
[[ -n $uv_version ]] || die "no uv version (set WHEELHOUSE_UV_VERSION)"

pip=()
for candidate in "$top/.venv/bin/python" python3; do
  if "$candidate" -m pip --version >/dev/null 2>&1; then pip=("$candidate" -m pip); break; fi
done
((${#pip[@]})) || die "no Python with pip on this machine (run scripts/bootstrap.sh)"

# pip does not widen a manylinux_2_X platform to older ones: list every glibc from 2.17 (and the
# legacy aliases) up to the newest the hosts have.
platforms() {
  local arch=$1 minor max=${glibc#2.}
  [[ $arch == x86_64 ]] && echo "--platform=manylinux1_$arch --platform=manylinux2010_$arch --platform=manylinux_2_5_$arch --platform=manylinux_2_12_$arch"
  echo "--platform=manylinux2014_$arch"
  for ((minor = 17; minor <= max; minor++)); do echo "--platform=manylinux_2_${minor}_$arch"; done
}

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9   # molecule's dependency step may run this at the same time

stamp="$out/.inputs"
# Which files (by path) and what they say, this script, the targets.
inputs=$({
  for r in "${reqs[@]}"; do echo "${r#"$top"/} $(sha256sum <"$r" | cut -d' ' -f1)"; done
  sha256sum <"$0" | cut -d' ' -f1
  echo "$pythons|$arches|$glibc|$uv_version"
} | sha256sum | cut -d' ' -f1)
manifest="$out/.manifest"
# Up to date: same inputs, and every wheel the last run kept is still there (someone may have
# pruned the directory by hand).
complete() {
  [[ -f $manifest ]] || return 1
  local w
  while IFS= read -r w; do [[ -f $out/$w ]] || { log "missing $w"; return 1; }; done <"$manifest"
}
if ((force == 0)) && [[ -f $stamp && $(cat "$stamp") == "$inputs" ]] && complete; then
  log "up to date: $out ($(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1))"
else
  start=$SECONDS
  keep="$out/.keep.$$"
  : >"$keep"
  trap 'rm -f "$keep" "$out"/.pip.log.$$' EXIT
  # One download per target; pip reuses wheels already in the directory ("already downloaded").
  fetch() { # ARCH LABEL ARGS...
    local arch=$1 label=$2 t=$SECONDS; shift 2
    # shellcheck disable=SC2046
    if ! "${pip[@]}" download --disable-pip-version-check --no-cache-dir --progress-bar off \
      --only-binary=:all: --implementation cp $(platforms "$arch") -d "$out" "$@" \
      >"$out/.pip.log.$$" 2>&1; then
      tail -20 "$out/.pip.log.$$" >&2
      die "pip download failed for $label"
    fi
    sed -n -e 's/^ *Saved \(.*\)$/\1/p' -e 's/^ *File was already downloaded \(.*\)$/\1/p' "$out/.pip.log.$$" |
      xargs -r -n1 basename >>"$keep"
    log "$label: $(grep -c '^ *Saved ' "$out/.pip.log.$$" || true) downloaded, $(grep -c '^ *File was already downloaded' "$out/.pip.log.$$" || true) already there ($((SECONDS - t))s)"
  }
  for arch in $arches; do
    for py in $pythons; do
      for r in "${reqs[@]}"; do
        hashes=()
        grep -q -- '--hash=' "$r" && hashes=(--require-hashes)
        fetch "$arch" "cp${py/./} $arch ${r#"$top"/}${hashes:+ (hashes checked)}" --python-version "$py" "${hashes[@]}" -r "$r"
      done
    done
    fetch "$arch" "uv $uv_version $arch" --python-version "${pythons%% *}" "uv==$uv_version"
  done
  # Wheels no target needs any more (an old pin) go.
  find "$out" -maxdepth 1 -name '*.whl' | while IFS= read -r f; do
    grep -qxF "$(basename "$f")" "$keep" || { log "removing stale $(basename "$f")"; rm -f "$f"; }
  done
  sort -u "$keep" >"$manifest"
  echo "$inputs" >"$stamp"
  log "done in $((SECONDS - start))s: $(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1)"
fi

cat <<EOF
# Wheelhouse: $out, from ${reqs[*]#"$top"/}
# Role variables, with the directory bind-mounted (or copied) at $mount on the hosts:
celery_stable_pip_find_links=['$mount']
# Docker bind mount: -v $out:$mount:ro
# By hand: pip install --no-index --find-links=$mount -r requirements.txt
#          UV_FIND_LINKS=$mount uv pip install --offline ...   (or uv pip install --no-index --find-links $mount)
EOF
