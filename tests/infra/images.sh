#!/usr/bin/env bash
# Build the systemd host images the Molecule scenarios and the local deploy run on, when absent
# or built from an older recipe. No registry is assumed: debootstrap a minimal Debian, then
# `docker import` it with systemd as PID 1. Users with a registry skip this by naming their own
# image (CELERY_STABLE_IMAGE*).
#
#   tests/infra/images.sh                        # the default: bookworm amd64
#   tests/infra/images.sh trixie amd64           # any Debian suite and architecture
#   tests/infra/images.sh bookworm arm64         # foreign architectures run under qemu-user (binfmt)
#   tests/infra/images.sh --rebuild SUITE ARCH   # build again even if the image is current
#   tests/infra/images.sh --probe SUITE ARCH     # boot it; report boot state, then what each
#                                                # systemd sandboxing directive and RLIMIT_AS do there
#
# Prints the image name on stdout: celery-stable/SUITE-systemd:ARCH. Measured on this project's
# build machine (2 cores): bookworm amd64 ~1 min, trixie amd64 ~1 min, bookworm arm64 ~3-4 min
# (the second debootstrap stage runs every maintainer script under qemu).
#
# Run the image (systemd as PID 1; --privileged is refused on these machines):
#   docker run -d --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
#     --security-opt apparmor=unconfined --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
#     --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3 --network NET --hostname NAME IMAGE
#
# Environment: DEBIAN_MIRROR, the Debian archive debootstrap fetches from. Default: the one apt on
# this machine already uses (the URI of the first Debian `main` entry of /etc/apt/sources.list,
# then /etc/apt/sources.list.d/*.list and *.sources in name order, deb822 included); only when
# none is configured (an Ubuntu host, say), http://deb.debian.org/debian, with a note.
set -euo pipefail
rebuild=0 probe=0
if [[ ${1:-} == --rebuild ]]; then rebuild=1; shift; fi
if [[ ${1:-} == --probe ]]; then probe=1; shift; fi

log() { echo "[images] $*" >&2; }
die() { log "error: $*"; exit 1; }

# The first Debian archive with `main` in apt's sources: prints "URI<TAB>FILE". Debian's by suite
# name (a codename or alias, not -security/-updates/-backports, whose archives debootstrap cannot
# use); `mirror+file:` lists are read for their first URL; schemes debootstrap lacks are skipped.
APT_SOURCES=${APT_SOURCES:-/etc/apt}
apt_debian_mirror() {
  local -a files=()
  [[ -f $APT_SOURCES/sources.list ]] && files+=("$APT_SOURCES/sources.list")
  local f
  for f in "$APT_SOURCES"/sources.list.d/*.list "$APT_SOURCES"/sources.list.d/*.sources; do
    [[ -f $f ]] && files+=("$f")
  done
  ((${#files[@]})) || return 1
  # sources.list first, then sources.list.d in name order whatever the format, as apt reads them.
  local sorted=() uri
  [[ ${files[0]} == "$APT_SOURCES/sources.list" ]] && sorted+=("${files[0]}") && files=("${files[@]:1}")
  if ((${#files[@]})); then mapfile -t -O "${#sorted[@]}" sorted < <(printf '%s\n' "${files[@]}" | sort); fi
  for f in "${sorted[@]}"; do
    while IFS= read -r uri; do
      if [[ $uri == mirror+file:* ]]; then
        uri=$(sed -n 's/^[[:space:]]*\([a-z]*:\/\/[^[:space:]]*\).*/\1/p' "${uri#mirror+file:}" 2>/dev/null | head -1)
      fi
      [[ $uri =~ ^(https?|file):// ]] || continue
      printf '%s\t%s\n' "${uri%/}" "$f"
      return 0
    done < <(awk -v deb822="$([[ $f == *.sources ]] && echo 1 || echo 0)" '
      function debian(suite) {
        return suite ~ /^(buster|bullseye|bookworm|trixie|forky|duke|sid|stable|testing|unstable|oldstable|oldoldstable)$/
      }
      function emit(types, uris, suites, comps, enabled,   n, i, s, ok) {
        if (types !~ /(^|[ \t])deb([ \t]|$)/ || comps !~ /(^|[ \t])main([ \t]|$)/ || enabled ~ /^(no|false)$/) return
        n = split(suites, s, /[ \t]+/); ok = 0
        for (i = 1; i <= n; i++) if (debian(s[i])) ok = 1
        if (!ok) return
        split(uris, s, /[ \t]+/); print s[1]
      }
      deb822 == 0 {
        sub(/#.*/, ""); if (NF < 3) next
        i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if (i + 1 > NF) next
        comps = ""; for (j = i + 2; j <= NF; j++) comps = comps " " $j
        emit($1, $i, $(i + 1), comps, "")
        next
      }
      deb822 == 1 {
        if ($0 ~ /^[ \t]*#/) next
        if ($0 ~ /^[ \t]*$/) { emit(t, u, su, c, e); t = u = su = c = e = ""; next }
        key = tolower($1); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
        if (key == "types:") t = val; else if (key == "uris:") u = val
        else if (key == "suites:") su = val; else if (key == "components:") c = val
        else if (key == "enabled:") e = tolower(val)
      }
      END { if (deb822 == 1) emit(t, u, su, c, e) }
    ' "$f")
  done
  return 1
}

if [[ -n ${DEBIAN_MIRROR:-} ]]; then
  mirror=${DEBIAN_MIRROR%/} mirror_from="DEBIAN_MIRROR"
elif found=$(apt_debian_mirror); then
  mirror=${found%%$'\t'*} mirror_from=${found#*$'\t'}
else
  mirror=http://deb.debian.org/debian mirror_from=""
  log "note: no Debian 'main' archive in apt's sources ($APT_SOURCES/sources.list{,.d/}); using $mirror" \
    "(set DEBIAN_MIRROR to use another)"
fi

# What a target needs before Ansible can manage it: systemd as init, a Python for Ansible's
# modules, apt bindings for the apt module, dbus for systemctl, CA certificates for HTTPS.
include=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,procps,iproute2

# Units whose only failure under qemu-user is LoadCredential= (seen with bookworm's systemd 252): setting
# up /run/credentials/UNIT fails there with EINVAL, so they die before exec with
# status=243/CREDENTIALS and the system boots 'degraded' (tmpfiles-setup, tmpfiles-setup-dev,
# sysusers at boot; tmpfiles-clean 15 min later, which would turn a long test run degraded).
credential_units="systemd-tmpfiles-setup systemd-tmpfiles-setup-dev systemd-tmpfiles-clean
  systemd-sysusers systemd-sysctl systemd-firstboot"

native_arch() { dpkg --print-architecture; }

qemu_name() { # Debian arch -> binfmt entry name
  case "$1" in
    arm64) echo aarch64 ;; armhf | armel) echo arm ;; ppc64el) echo ppc64le ;; *) echo "$1" ;;
  esac
}

# The recipe: what the image is built from. An image labelled with another recipe is rebuilt.
recipe() { # SUITE ARCH
  { echo "$1 $2 $mirror $include"; declare -f customize; [[ $2 == "$(native_arch)" ]] || echo "$credential_units"; } |
    sha256sum | cut -c1-16
}

# Changes to the debootstrapped tree before it becomes an image. Its code (`declare -f`: comments
# aside) is part of the recipe, so a change rebuilds every image: the drop-in text below still
# names scripts/images.sh, where this script used to live, so that moving it rebuilt nothing.
customize() { # ROOTFS EMULATED(0|1)
  local rootfs=$1 emulated=$2 unit
  # A container has no consoles and no kernel modules: these units only fail or wait there.
  for unit in getty@tty1.service console-getty.service systemd-modules-load.service \
              sys-kernel-config.mount sys-kernel-debug.mount systemd-remount-fs.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  if ((emulated)); then
    # Not masked: these units do real work (tmpfiles.d directories under /run and /var, stale
    # /tmp cleanup, sysusers.d accounts, sysctl.d), so masking would give the emulated host a
    # state no real host has. Only their credential import goes: an empty LoadCredential= resets
    # the list. Credentials come from a container manager or VMM (nspawn --set-credential, qemu
    # fw_cfg); docker passes none, so nothing is lost. Real arm64 hosts keep them (native images
    # do not get this drop-in).
    for unit in $credential_units; do
      [[ -e $rootfs/lib/systemd/system/$unit.service ]] || continue
      mkdir -p "$rootfs/etc/systemd/system/$unit.service.d"
      printf '%s\n' "# scripts/images.sh: qemu-user cannot set up /run/credentials (status=243/CREDENTIALS)" \
        '[Service]' 'LoadCredential=' >"$rootfs/etc/systemd/system/$unit.service.d/no-credentials-under-qemu.conf"
    done
  fi
  # systemd halts on SIGRTMIN+3: containers are run with --stop-signal (docker import cannot set it).
  # Let Docker's --hostname win, and give each container a fresh machine-id at boot.
  rm -f "$rootfs/etc/hostname"; : >"$rootfs/etc/machine-id"
  # Keep the image small: apt lists and caches are refetched by the role's apt tasks.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
}

build() {
  local suite=$1 arch=$2 image="celery-stable/$1-systemd:$2"
  local want have emulated=0
  want=$(recipe "$suite" "$arch")
  [[ $arch == "$(native_arch)" ]] || emulated=1
  have=$(docker image inspect -f '{{index .Config.Labels "org.celery-stable.recipe"}}' "$image" 2>/dev/null || true)
  if ((rebuild == 0)) && [[ $have == "$want" ]]; then
    echo "$image"; return
  fi
  [[ -n $have ]] && log "$image: recipe $have, want $want: rebuilding"
  command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install -y debootstrap)"
  if ((emulated)); then
    local q
    q=$(qemu_name "$arch")
    [[ -e /proc/sys/fs/binfmt_misc/qemu-$q ]] ||
      die "$arch needs qemu-$q registered with binfmt_misc: apt-get install -y qemu-user-static binfmt-support;" \
        "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc (if empty); update-binfmts --enable qemu-$q"
    grep -q '^flags:.*F' "/proc/sys/fs/binfmt_misc/qemu-$q" ||
      die "qemu-$q is registered without the F flag: it will not work inside containers (use qemu-user-static)"
  fi
  local rootfs start=$SECONDS
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/rootfs-$suite-$arch.XXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$rootfs' '$rootfs.log'" RETURN
  log "debootstrap $suite/$arch$( ((emulated)) && echo ' under qemu-user') from $mirror${mirror_from:+ ($mirror_from)} (1-4 min)"
  debootstrap --variant=minbase --arch="$arch" --include="$include" "$suite" "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; die "debootstrap $suite/$arch failed"; }
  customize "$rootfs" "$emulated"
  if ((emulated)); then
    # Measured with Debian 12's qemu-user-static 7.2: trixie's systemd 257 boots as PID 1 but cannot
    # start a single unit ("Failed to spawn executor: Invalid argument", Result: resources: journald,
    # dbus, tmp.mount...): its sd-executor spawn path is one qemu 7.2's linux-user does not emulate.
    # bookworm's systemd 252 forks directly and works. Built anyway: a newer qemu may cope.
    local sd
    sd=$(dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f '${Version}' systemd 2>/dev/null || true)
    if [[ ${sd%%[.-]*} =~ ^[0-9]+$ ]] && ((${sd%%[.-]*} >= 257)); then
      log "warning: $suite/$arch has systemd $sd: under qemu-user 7.2 (Debian 12) no unit starts;" \
        "see docs/test-infrastructure.md"
    fi
  fi
  # Docker 20.10 records an imported image as the engine's architecture whatever --platform
  # says; it still runs through binfmt.
  tar -C "$rootfs" -c . | docker import \
    --platform "linux/$arch" \
    -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
    -c "LABEL org.celery-stable.recipe=$want org.celery-stable.arch=$arch org.celery-stable.suite=$suite" \
    - "$image" >/dev/null
  log "$image built in $((SECONDS - start))s"
  echo "$image"
}


# --probe: facts about a platform, measured rather than assumed (emulated arm64 differs from a
# real host: see docs/test-infrastructure.md). Each directive runs alone in a transient service
# whose command reports what the kernel really applied to it, then all of the role's together.
probe() { # IMAGE
  local image=$1 name=celery-stable-infra-probe-$$
  # shellcheck disable=SC2064
  trap "docker rm -f $name >/dev/null 2>&1 || true" EXIT
  docker run -d --name "$name" --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
    --security-opt apparmor=unconfined --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3 --network none "$image" >/dev/null
  local t=$SECONDS state
  # systemctl answers only once PID 1 listens on its bus ("Failed to connect to bus" before).
  state=
  while [[ -z $state ]] && ((SECONDS - t < 300)); do
    state=$(docker exec "$name" timeout 300 systemctl is-system-running --wait 2>/dev/null || true)
    [[ -n $state ]] || sleep 1
  done
  echo "== $image: uname -m = $(docker exec "$name" uname -m); systemctl is-system-running = $state ($((SECONDS - t))s)"
  echo "== systemctl --failed:"
  docker exec "$name" systemctl --failed --no-legend --plain | sed 's/^/   /'
  docker exec -i "$name" tee /usr/local/lib/probe.py >/dev/null <<'EOF'
import mmap, os, socket
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
def ns(kind):
    try:
        return "own" if os.readlink(f"/proc/self/ns/{kind}") != os.readlink(f"/proc/1/ns/{kind}") else "host"
    except OSError:
        return "?"
out = {"seccomp": status("Seccomp"), "nnp": status("NoNewPrivs"), "mntns": ns("mnt"), "utsns": ns("uts"),
       "capbnd": status("CapBnd")[-8:]}
out["AS"] = next(l.split()[3] for l in open("/proc/self/limits") if l.startswith("Max address space"))
try:
    open("/usr/.probe", "w").close(); os.unlink("/usr/.probe"); out["/usr"] = "rw"
except OSError as e:
    out["/usr"] = "ro" if e.errno == 30 else f"errno{e.errno}"
out["/tmp"] = "shared" if os.path.exists("/tmp/.probe-marker") else "private"
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close(); out["AF_NETLINK"] = "allowed"
except OSError as e:
    out["AF_NETLINK"] = f"denied({e.errno})"
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close(); out["W+X mmap"] = "allowed"
except OSError as e:
    out["W+X mmap"] = f"denied({e.errno})"
print(" ".join(f"{k}={v}" for k, v in out.items()))
EOF
  docker exec -i "$name" bash -s <<'EOF'
touch /tmp/.probe-marker
run() { # LABEL [-p DIRECTIVE]...
  local label=$1 out rc; shift
  out=$(timeout 120 systemd-run --quiet --wait --pipe --collect "$@" /usr/bin/python3 /usr/local/lib/probe.py 2>&1)
  rc=$?
  if ((rc == 0)); then printf '%-48s starts  %s\n' "$label" "$out"
  else
    printf '%-48s FAILS   rc=%s\n' "$label" "$rc"
    journalctl -q --no-pager -o cat -n 30 | grep -E 'Failed (at step|to set up)' | tail -1 | sed 's/^/      /'
  fi
}
echo "== each directive alone (seccomp=2: a filter is loaded; 0: none)"
run "(no directive)"
all=() nouser=()
for d in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes PrivateDevices=yes \
  PrivateUsers=yes ProtectHostname=yes ProtectClock=yes ProtectKernelTunables=yes ProtectKernelModules=yes \
  ProtectKernelLogs=yes ProtectControlGroups=yes ProtectProc=invisible \
  "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" RestrictNamespaces=yes RestrictRealtime=yes \
  RestrictSUIDSGID=yes LockPersonality=yes MemoryDenyWriteExecute=yes RemoveIPC=yes CapabilityBoundingSet= \
  SystemCallArchitectures=native SystemCallFilter=@system-service UMask=0027; do
  run "$d" -p "$d"; all+=(-p "$d")
  [[ $d == PrivateUsers=yes ]] || nouser+=(-p "$d")
done
run "LimitAS=1G" -p LimitAS=1G
run "all of the above together" "${all[@]}"
run "all together but PrivateUsers" "${nouser[@]}"
echo "== why seccomp-based directives show seccomp=0 (systemd's debug log):"
systemd-analyze set-log-level debug
systemd-run --quiet --wait -p SystemCallFilter=@system-service -p MemoryDenyWriteExecute=yes /bin/true
systemd-analyze set-log-level info
journalctl -q --no-pager -o cat -n 300 | grep -iE 'SECCOMP features not detected|seccomp' | sort -u | tail -3 | sed 's/^/   /'
[ -n "$(journalctl -q --no-pager -o cat -n 300 | grep -i 'SECCOMP features not detected')" ] || echo "   (none: seccomp is available here)"
echo "== RLIMIT_AS set by the process itself (what the app does), then 3 GiB allocated:"
python3 -c '
import resource
resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))
print("   setrlimit(1 GiB) returned; getrlimit =", resource.getrlimit(resource.RLIMIT_AS))
try:
    b = bytearray(3 * 2**30); print("   3 GiB allocated: the limit is NOT enforced")
except MemoryError:
    print("   MemoryError: the limit is enforced")
'
echo "== MemoryMax=200M, 400 MiB allocated:"
systemd-run --wait -p MemoryMax=200M /usr/bin/python3 -c 'b = bytearray(400 * 2**20); print("not killed")' 2>&1 |
  grep -E 'Finished|terminated|not killed' | sed 's/^/   /'
EOF
}

(($# <= 2)) || die "usage: $0 [--rebuild | --probe] [SUITE [ARCH]]"
# Molecule's dependency step runs this for each scenario, maybe at the same time.
exec 9>"${TMPDIR:-/tmp}/celery-stable-images.lock"
flock 9
image=$(build "${1:-bookworm}" "${2:-amd64}")
if ((probe)); then
  flock -u 9
  probe "$image"
else
  echo "$image"
fi
