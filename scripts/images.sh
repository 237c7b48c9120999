#!/usr/bin/env bash
# Build the systemd host images the Molecule scenarios and the local deploy run on, when absent
# or built from an older recipe. No registry is assumed: debootstrap a minimal Debian, then
# `docker import` it with systemd as PID 1. Users with a registry skip this by naming their own
# image (CELERY_STABLE_IMAGE*).
#
#   scripts/images.sh                    # the default: bookworm amd64
#   scripts/images.sh trixie amd64       # any Debian suite and architecture
#   scripts/images.sh bookworm arm64     # foreign architectures run under qemu-user (binfmt)
#   scripts/images.sh --rebuild SUITE ARCH   # build again even if the image is current
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
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rebuild=0
if [[ ${1:-} == --rebuild ]]; then rebuild=1; shift; fi

log() { echo "[images] $*" >&2; }
die() { log "error: $*"; exit 1; }

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

# Changes to the debootstrapped tree before it becomes an image.
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
  log "debootstrap $suite/$arch$( ((emulated)) && echo ' under qemu-user') (1-4 min)"
  debootstrap --variant=minbase --arch="$arch" --include="$include" "$suite" "$rootfs" "$mirror" \
    >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; die "debootstrap $suite/$arch failed"; }
  customize "$rootfs" "$emulated"
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

(($# <= 2)) || die "usage: $0 [--rebuild] [SUITE [ARCH]]"
# Molecule's dependency step runs this for each scenario, maybe at the same time.
exec 9>"${TMPDIR:-/tmp}/celery-stable-images.lock"
flock 9
build "${1:-bookworm}" "${2:-amd64}"
