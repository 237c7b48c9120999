#!/usr/bin/env bash
# A CPython download source of our own for `uv python install`, built from a local CPython tree,
# for machines (air-gapped fleets, this build machine) where uv cannot reach python-build-standalone.
#
#   tests/infra/python-mirror.sh                 # build (cached), print the variables to use
#   tests/infra/python-mirror.sh check [IMAGE..] # prove it in systemd host containers (default:
#                                                # celery-stable/bookworm-systemd:amd64 and trixie)
#
# What it makes, in $PYTHON_MIRROR_DIR (default .cache/python-mirror):
#   <build>/cpython-<ver>+<build>-<triple>-install_only_stripped.tar.gz
#       python-build-standalone's layout (one top folder `python/`), self-contained like theirs:
#       every shared library the interpreter and its extension modules need, except glibc's own,
#       is copied into python/lib, and every ELF file finds them through an $ORIGIN RPATH.
#   downloads.json
#       uv's --python-downloads-json-url list (UV_PYTHON_DOWNLOADS_JSON_URL): one entry per
#       archive with its sha256; URLs under $PYTHON_MIRROR_URL, where the hosts see this directory.
#
# Where there is no local CPython (a fresh host with internet and no pyenv: README's two commands),
# nothing is built: the script says that uv will download CPython itself and exits 0, without a
# downloads.json, so the role's celery_stable_uv_python_downloads_json_url stays empty (Molecule's
# group_vars and scripts/deploy.sh set it only when that file exists). A downloads.json built
# earlier is kept, and said so: its archives are self-contained and still valid.
#
# Environment:
#   PYTHON_MIRROR_SRC   CPython install prefix(es), space-separated (default: pyenv's 3.12.1,
#                       skipped as above when absent). A shared-libpython build of a 3.x release,
#                       x86_64 or aarch64. Named explicitly, a prefix that is not there is an
#                       error (a typo must not turn into downloads from the internet, or into a
#                       failed download on an air-gapped fleet); set but empty: build nothing.
#   PYTHON_MIRROR_DIR   output directory (default: <repo>/.cache/python-mirror)
#   PYTHON_MIRROR_URL   how hosts reach that directory (default: file:///srv/celery-stable-mirror,
#                       the bind mount of the Molecule scenarios; https://artifacts.example/... for
#                       a fleet's artifact server)
#   PYTHON_MIRROR_BUILD build tag in names and JSON (default: the source's date, YYYYMMDD)
#
# The archive is rebuilt only when its inputs change (the source tree, the host libraries it
# bundles, this script); the tarball is reproducible (sorted, fixed mtime and owners, gzip -n).
# It keeps glibc from the host, so it runs where glibc is at least the build machine's (Debian 12:
# 2.36; Debian 13 has 2.41). Left out, as a headless server interpreter: the test suite, tkinter,
# IDLE, turtledemo, the static libpython, and every third-party package but pip.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
self="$top/tests/infra/$(basename "$0")"
pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
default_src=$pyenv_root/versions/3.12.1
# explicit: the sources were named (PYTHON_MIRROR_SRC set, even empty); else the default, if there.
explicit=${PYTHON_MIRROR_SRC+1}
srcs=${PYTHON_MIRROR_SRC-$default_src}
out=${PYTHON_MIRROR_DIR:-$top/.cache/python-mirror}
url_base=${PYTHON_MIRROR_URL:-file:///srv/celery-stable-mirror}
url_base=${url_base%/}

log() { echo "[python-mirror] $*" >&2; }
die() { log "error: $*"; exit 1; }

# glibc's own libraries: the host provides these (and must: they go with its ld.so).
is_glibc() {
  case "$1" in
    ld-linux*.so.* | libc.so.* | libm.so.* | libmvec.so.* | libpthread.so.* | libdl.so.* | \
      librt.so.* | libutil.so.* | libresolv.so.* | libanl.so.* | libnss_*.so.* | \
      libBrokenLocale.so.* | libthread_db.so.* | libc_malloc_debug.so.*) return 0 ;;
  esac
  return 1
}

elf_arch() { # x86_64 | aarch64, from the ELF header
  case "$(readelf -h "$1" | awk -F: '/Machine:/{gsub(/^ +/, "", $2); print $2}')" in
    "Advanced Micro Devices X86-64") echo x86_64 ;;
    AArch64) echo aarch64 ;;
    *) die "$1: unsupported machine" ;;
  esac
}

needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

# Resolve a soname the way ld.so would on a Debian host of that architecture (not with ldd, so
# an aarch64 tree can be packaged on an x86_64 machine that has the aarch64 libraries).
resolve() {
  local name=$1 d
  for d in "${libdirs[@]}"; do
    if [[ -e "$d/$name" ]]; then readlink -f "$d/$name"; return; fi
  done
  return 1
}

# Every non-glibc library the ELF files in $@ need, transitively: lines "soname<TAB>realpath".
collect_deps() {
  local -A seen=()
  local -a queue=("$@")
  local f n p
  while ((${#queue[@]})); do
    f=${queue[0]}; queue=("${queue[@]:1}")
    for n in $(needed "$f"); do
      [[ -n ${seen[$n]:-} ]] && continue
      seen[$n]=1
      is_glibc "$n" && continue
      [[ $n == libpython3* ]] && continue
      p=$(resolve "$n") || die "$f needs $n, not found in ${libdirs[*]}"
      printf '%s\t%s\n' "$n" "$p"
      queue+=("$p")
    done
  done
}

# Scripts in bin/ carry the source prefix in their shebang; python-build-standalone's trick makes
# them find the interpreter next to them wherever the tree lands.
relocate_shebangs() {
  local bin=$1 prefix=$2 minor=$3 f
  for f in "$bin"/*; do
    [[ -f $f && ! -L $f ]] || continue
    head -c 2 "$f" | grep -q '^#!' || continue
    head -1 "$f" | grep -q "^#!$prefix/bin/python" || continue
    { printf '#!/bin/sh\n'
      printf "'''exec' \"\$(dirname -- \"\$(realpath -- \"\$0\")\")\"/'python%s' \"\$0\" \"\$@\"\n' '''\n" "$minor"
      tail -n +2 "$f"; } >"$f.new"
    chmod --reference="$f" "$f.new"; mv "$f.new" "$f"
  done
}

package() { # SRC -> prints "json-entry-file"
  local src=$1
  [[ -d $src/bin && -d $src/lib ]] || die "$src is not a CPython install prefix"
  local exe minor
  exe=$(cd "$src/bin" && ls python3.[0-9]* 2>/dev/null | grep -E '^python3\.[0-9]+$' | sort -V | tail -1) ||
    die "no bin/python3.X in $src"
  minor=${exe#python}
  local libpy
  libpy=$(ls "$src"/lib/libpython"$minor".so.* 2>/dev/null | head -1) ||
    die "$src has no shared libpython$minor (build with --enable-shared)"
  local arch triple version
  arch=$(elf_arch "$src/bin/$exe")
  triple="$arch-unknown-linux-gnu"
  # The version from the headers, not by running the interpreter: works for any architecture.
  version=$(sed -n 's/^#define PY_VERSION *"\(.*\)"/\1/p' "$src/include/python$minor/patchlevel.h")
  [[ $version =~ ^3\.[0-9]+\.[0-9]+$ ]] || die "$src: unsupported version '$version' (final releases only)"
  libdirs=("/lib/$arch-linux-gnu" "/usr/lib/$arch-linux-gnu" /usr/local/lib)
  [[ $arch == x86_64 ]] && libdirs+=(/lib64 /usr/lib64)

  local dynload="$src/lib/python$minor/lib-dynload"
  local -a elves=("$src/bin/$exe" "$libpy")
  local so
  for so in "$dynload"/*.so; do
    [[ $(basename "$so") == _tkinter* ]] || elves+=("$so")
  done
  local deps
  deps=$(collect_deps "${elves[@]}" | sort -u)

  local build=${PYTHON_MIRROR_BUILD:-$(date -u -d "@$(stat -c %Y "$libpy")" +%Y%m%d)}
  local epoch
  epoch=$(stat -c %Y "$libpy")
  local name="cpython-$version+$build-$triple-install_only_stripped.tar.gz"
  local archive="$out/$build/$name"
  local stamp="$archive.inputs"
  local inputs
  inputs=$({
    sha256sum "$self"
    echo "$src $version $build"
    (cd "$src" && find . -path ./lib/python"$minor"/site-packages -prune -o -printf '%P %s %T@\n' | sort)
    printf '%s\n' "$deps" | while IFS=$'\t' read -r n p; do [[ -n $n ]] && echo "$n $(stat -c '%s %Y' "$p")"; done
  } | sha256sum | cut -d' ' -f1)

  if [[ -f $archive && -f $stamp && $(cat "$stamp") == "$inputs" ]]; then
    log "up to date: $archive"
  else
    log "packaging $src (Python $version, $arch) -> $archive"
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/python-mirror.XXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    local py="$work/python" lib="$work/python/lib/python$minor"
    mkdir -p "$py"
    (cd "$src" && tar -c \
      --exclude="./lib/python$minor/test" --exclude="./lib/python$minor/idlelib" \
      --exclude="./lib/python$minor/tkinter" --exclude="./lib/python$minor/turtledemo" \
      --exclude="./lib/python$minor/turtle.py" --exclude="./lib/python$minor/lib-dynload/_tkinter*" \
      --exclude="./lib/python$minor/site-packages" \
      --exclude="./lib/python$minor/config-*/libpython*.a" --exclude="./lib/python$minor/config-*/python.o" \
      --exclude='./bin/idle*' --exclude='./bin/python*-gdb.py' \
      .) | tar -C "$py" -x
    # site-packages: pip only (as python-build-standalone ships), nothing else of the source's.
    mkdir -p "$lib/site-packages"
    (cd "$src/lib/python$minor/site-packages" && cp -a README.txt pip pip-*.dist-info "$lib/site-packages/" 2>/dev/null) ||
      log "note: no pip in the source's site-packages (ensurepip still provides it)"

    # Bundle the libraries, then give every ELF file an RPATH into python/lib.
    printf '%s\n' "$deps" | while IFS=$'\t' read -r n p; do
      [[ -n $n ]] || continue
      cp -L "$p" "$py/lib/$n"
      chmod 0755 "$py/lib/$n"
    done
    local f
    while IFS= read -r f; do
      file -b "$f" | grep -q '^ELF' || continue
      chmod u+w "$f"
      strip --strip-unneeded "$f" 2>/dev/null || log "note: could not strip $f"
    done < <(find "$py" -type f \( -name '*.so' -o -name '*.so.*' -o -path '*/bin/*' \))
    patchelf --set-rpath '$ORIGIN/../lib' "$py/bin/$exe"
    for f in "$py"/lib/*.so*; do
      [[ -L $f ]] || patchelf --set-rpath '$ORIGIN' "$f"
    done
    for f in "$py/lib/python$minor/lib-dynload"/*.so; do
      patchelf --set-rpath '$ORIGIN/../..' "$f"
    done

    # The build prefix in sysconfig data, pkg-config files and python-config becomes /install,
    # python-build-standalone's, which `uv python install` rewrites to the real location.
    local prefix
    prefix=$(readlink -f "$src")
    grep -rlF "$prefix" "$py/lib/python$minor"/_sysconfigdata_*.py "$py/lib/pkgconfig" \
      "$py/lib/python$minor"/config-* "$py/bin" 2>/dev/null | while IFS= read -r f; do
      file -b "$f" | grep -q '^ELF' && continue
      sed -i "s#$prefix#/install#g" "$f"
    done
    relocate_shebangs "$py/bin" /install "$minor"
    # Pre-compiled sysconfig data must match the edited source.
    rm -f "$lib"/__pycache__/_sysconfigdata_*.pyc

    self_check "$py" "$exe" "$arch"

    mkdir -p "$out/$build"
    tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -c python |
      gzip -n -6 >"$archive.tmp.$$"
    mv "$archive.tmp.$$" "$archive"
    echo "$inputs" >"$stamp"
    rm -rf "$work"; trap - EXIT
  fi
  local sha size
  sha=$(sha256sum "$archive" | cut -d' ' -f1)
  size=$(stat -c %s "$archive")
  log "$(numfmt --to=iec "$size") sha256 $sha"
  IFS=. read -r vmaj vmin vpat <<<"$version"
  # One entry of uv's downloads list (crates/uv-python/download-metadata.json's schema).
  printf '%s\n' "cpython-$version-linux-$arch-gnu" "$arch" "$vmaj" "$vmin" "$vpat" \
    "$url_base/$build/${name/+/%2B}" "$sha" "$build" >"$out/.entry-$arch"
}

# Nothing outside glibc is resolved from the host: every ELF file's libraries are in the tree.
self_check() {
  local py=$1 exe=$2 arch=$3 f bad=0
  [[ $arch == "$(uname -m)" ]] || { log "note: $arch tree, no load test on $(uname -m)"; return 0; }
  while IFS= read -r f; do
    file -b "$f" | grep -q '^ELF' || continue
    while read -r n _ p _; do
      [[ $n == linux-vdso* || $p == "$py"/* ]] && continue
      is_glibc "$n" && continue
      log "$f: $n resolves outside the tree ($p)"; bad=1
    done < <(env -i ldd "$f" 2>/dev/null | awk '/=>/{print $1, $2, $3, $4}')
  done < <(find "$py" -type f \( -name '*.so' -o -name '*.so.*' -o -path "*/bin/$exe" \))
  ((bad == 0)) || die "the tree is not self-contained"
  env -i "$py/bin/$exe" -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, readline, uuid, curses, dbm, _decimal, pyexpat, hashlib' ||
    die "the packaged interpreter fails its imports"
}

write_json() {
  local tmp="$out/downloads.json.tmp.$$" e
  local -a entries=()
  for e in "$out"/.entry-*; do entries+=("$e"); done
  python3 - "${entries[@]}" >"$tmp" <<'EOF'
import json, sys
downloads = {}
for path in sys.argv[1:]:
    key, arch, major, minor, patch, url, sha, build = open(path).read().split("\n")[:8]
    downloads[key] = {
        "name": "cpython", "arch": {"family": arch, "variant": None},
        "os": "linux", "libc": "gnu",
        "major": int(major), "minor": int(minor), "patch": int(patch), "prerelease": None,
        "url": url, "sha256": sha, "variant": None, "build": build,
    }
print(json.dumps(downloads, indent=2, sort_keys=False))
EOF
  if cmp -s "$tmp" "$out/downloads.json"; then rm -f "$tmp"; else mv "$tmp" "$out/downloads.json"; fi
}

# No source to package: uv downloads CPython on the hosts, as on any host with internet.
# Returns 1 when there is a source to build from.
nothing_to_build() {
  local why
  if [[ -n $explicit ]]; then
    [[ -z ${srcs// /} ]] || return 1
    why="PYTHON_MIRROR_SRC is empty"
  else
    [[ -e $default_src ]] && return 1
    why="no local CPython at $default_src (the default source; PYTHON_MIRROR_SRC names others)"
  fi
  if [[ -f $out/downloads.json ]]; then
    log "$why: nothing to build; keeping the mirror built before in $out"
  else
    log "$why: no mirror built; uv will download CPython on the hosts itself" \
      "(celery_stable_uv_python_downloads_json_url stays empty)"
  fi
  return 0
}

build_all() {
  if nothing_to_build; then return 0; fi
  local src tool
  for src in $srcs; do [[ -d $src/bin && -d $src/lib ]] || die "$src is not a CPython install prefix"; done
  for tool in patchelf readelf strip file; do
    command -v "$tool" >/dev/null ||
      die "$tool is missing (apt-get install -y patchelf binutils file; scripts/bootstrap.sh installs them)"
  done
  mkdir -p "$out"
  # Molecule's dependency step runs this too, maybe at the same time: one build at a time.
  exec 9>"$out/.lock"
  flock 9
  rm -f "$out"/.entry-*
  for src in $srcs; do package "$src"; done
  write_json
  # Archives no longer listed (an old build tag) are removed.
  find "$out" -name '*.tar.gz' | while IFS= read -r f; do
    grep -qF "$(basename "$f" | sed 's/+/%2B/')" "$out/downloads.json" || { log "removing stale $f"; rm -f "$f" "$f.inputs"; }
  done
  find "$out" -mindepth 1 -type d -empty -delete
  cat <<EOF
# Python mirror: $out (downloads.json + archives), URLs under $url_base
# Role variables (host_vars/group_vars), with $out mounted or copied where $url_base points:
celery_stable_uv_python_downloads_json_url=$url_base/downloads.json
# The same for uv by hand:
UV_PYTHON_DOWNLOADS_JSON_URL=$url_base/downloads.json
EOF
  if [[ $url_base == file://* ]]; then
    echo "# Docker bind mount: -v $out:${url_base#file://}:ro"
  fi
}

check() {
  local -a images=("$@")
  ((${#images[@]})) || images=(celery-stable/bookworm-systemd:amd64 celery-stable/trixie-systemd:amd64)
  [[ $url_base == file://* ]] || die "check needs a file:// PYTHON_MIRROR_URL"
  # uv comes from PyPI inside the container, as on a real host (UV_VERSION, default the pin of
  # requirements-dev.txt). UV=/path/to/uv mounts that binary instead (faster, no apt, no PyPI).
  local uv_version=${UV_VERSION:-$(sed -n 's/^uv==\([^ ;#]*\).*/\1/p' "$top/requirements-dev.txt" 2>/dev/null | head -1)}
  local -a uv_mount=()
  if [[ -n ${UV:-} ]]; then
    [[ -x $UV ]] || die "UV=$UV is not an executable"
    uv_mount=(-v "$UV:/usr/local/bin/uv:ro")
  fi
  local image name rc=0
  for image in "${images[@]}"; do
    name=celery-stable-pymirror-check-$$
    log "check in $image"
    # No systemd needed for this: run the steps as the container's command.
    if ! docker run --rm --name "$name" --network host \
      -v "$out:${url_base#file://}:ro" "${uv_mount[@]}" \
      -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
      -e UV_PYTHON_DOWNLOADS_JSON_URL="$url_base/downloads.json" -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
      -e UV_VERSION="$uv_version" \
      --entrypoint /bin/bash "$image" -euc '
        . /etc/os-release; echo "== $PRETTY_NAME $(uname -m)"
        if ! command -v uv >/dev/null; then
          # minbase images lack ensurepip (python3-venv)
          python3 -c "import ensurepip" 2>/dev/null || {
            apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y python3-venv >/dev/null; }
          python3 -m venv /tmp/uv && /tmp/uv/bin/pip install --disable-pip-version-check -q "uv==$UV_VERSION"
          ln -s /tmp/uv/bin/uv /usr/local/bin/uv
        fi
        uv --version
        time uv python install 3.12 --install-dir /opt/x
        export PATH=/root/.local/bin:$PATH UV_PYTHON_INSTALL_DIR=/opt/x
        uv python list --only-installed
        python3.12 -c "import ssl, sqlite3, ctypes, lzma, bz2, zlib, readline, uuid; print(ssl.OPENSSL_VERSION)"
        # Self-contained: no ELF file of the install resolves a library outside it, except glibc.
        home=$(readlink -f /opt/x/cpython-3.12.*-linux-*-gnu)
        outside=$(find "$home" -type f \( -name "*.so*" -o -path "*/bin/python3.12" \) | while read -r f; do
          ldd "$f" | awk -v h="$home" -v f="$f" "\$2 == \"=>\" && index(\$3, h) != 1 && \$1 !~ /^(libc|libm|libpthread|libdl|librt|libutil|libresolv)\\.so/ {print f\": \"\$1\" from \"\$3}"
        done)
        [ -z "$outside" ] || { echo "NOT self-contained:"; echo "$outside"; exit 1; }
        echo "self-contained: $(find "$home" -type f \( -name "*.so*" -o -path "*/bin/python3.12" \) | wc -l) ELF files resolve nothing outside $home but glibc"
        ldd "$home"/lib/python3.12/lib-dynload/_ssl.*.so | grep -E "libssl|libcrypto"
        # The venv is made from the installation path, as the role does (uv python find):
        # a venv made through the ~/.local/bin symlink breaks on upstream CPython (uv#8821).
        py=$(uv python find --managed-python 3.12); echo "venv from $py"
        "$py" -m venv /tmp/venv
        # A binary wheel over HTTPS: ssl with the bundled OpenSSL, and the manylinux tag check.
        /tmp/venv/bin/pip install --disable-pip-version-check -q psutil
        /tmp/venv/bin/python -c "import psutil, sys; print(\"pip over HTTPS ok: psutil\", psutil.__version__, \"on\", sys.version)"
      '; then
      log "FAILED in $image"; rc=1
    fi
  done
  return "$rc"
}

case "${1:-build}" in
  build) build_all ;;
  check)
    shift; build_all >/dev/null
    [[ -f $out/downloads.json ]] || die "no mirror to check in $out"
    check "$@" ;;
  -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: $0 [build | check [IMAGE...]]" ;;
esac
