#!/usr/bin/env bash
# Build polydev's container images locally, without any container registry.
#
# Usage: containers/build-images.sh [--test-only] [--provider openai|anthropic|google]... [--force]
#
#   (no option)         base image, test image and all three provider images
#   --test-only         only polydev-test-runtime:latest (busybox, seconds to build)
#   --provider NAME     only the named provider image(s) (and the base they need); repeatable
#   --force             rebuild the test/provider images even when their inputs are unchanged
#   --rebuild-base      debootstrap the base image again even though its tag exists (slow; changes
#                       its id, so the provider images are rebuilt too)
#
# Images:
#   polydev-node-base:20           debootstrap'd Debian (trixie: Node 20) + nodejs, npm, ca-certificates
#   polydev-test-runtime:latest    busybox-static rootfs + the entrypoint (for the driver's tests)
#   polydev-<provider>-runtime:latest   base + the provider's CLI at a pinned version
#
# Environment:
#   CA_BUNDLE=path      CA certificates npm must trust (a TLS-intercepting proxy); passed to the
#                       build as a BuildKit secret, never stored in an image.
#                       Default: /etc/ssl/certs/ca-certificates.crt
#   DEBIAN_MIRROR=url   mirror for debootstrap (default http://deb.debian.org/debian)
#   DEBIAN_SUITE=name   Debian release for the base (default trixie, whose nodejs is 20.x)
#   DOCKER=path         the docker CLI to use (default: the first one that can do BuildKit builds)
#
# Idempotent: every image carries a label io.polydev.inputs-hash, a hash of everything it is
# built from (Dockerfile, entrypoint, build args, base image id). An image whose label matches
# is not rebuilt. The base image is built only when its tag is absent (or with --rebuild-base).
#
# Requires root (debootstrap, chown) and a running Docker daemon. Installs debootstrap and
# busybox-static with apt-get when they are missing.

set -euo pipefail

# The whole script is one brace group: bash parses it completely before running any of it, so
# editing this file while a (long) build runs cannot change what the running build executes.
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
entrypoint="$here/entrypoint.sh"

BASE_TAG=polydev-node-base:20
TEST_TAG=polydev-test-runtime:latest
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=${DEBIAN_SUITE:-trixie}
# Bump when the way an image is assembled changes without its input files changing.
RECIPE_VERSION=1

declare -A CLI_PACKAGE=([openai]=@openai/codex [anthropic]=@anthropic-ai/claude-code [google]=@google/gemini-cli)
declare -A CLI_NAME=([openai]=codex [anthropic]=claude [google]=gemini)
declare -A CLI_VERSION_ARG=([openai]=CODEX_VERSION [anthropic]=CLAUDE_CODE_VERSION [google]=GEMINI_CLI_VERSION)
declare -A CLI_VERSION=([openai]=0.171.0 [anthropic]=2.1.100 [google]=0.61.0)
ALL_PROVIDERS=(openai anthropic google)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-images.sh: error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ arguments
test_only=
force=
rebuild_base=
providers=()
while [ "$#" -gt 0 ]; do
    case $1 in
    --test-only) test_only=1 ;;
    --force) force=1 ;;
    --rebuild-base) rebuild_base=1 ;;
    --provider)
        [ "$#" -ge 2 ] || die "--provider needs a value (openai, anthropic or google)"
        [ -n "${CLI_PACKAGE[$2]:-}" ] || die "unknown provider '$2' (want openai, anthropic or google)"
        providers+=("$2")
        shift
        ;;
    --provider=*)
        p=${1#--provider=}
        [ -n "${CLI_PACKAGE[$p]:-}" ] || die "unknown provider '$p' (want openai, anthropic or google)"
        providers+=("$p")
        ;;
    -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
build_test=1
if [ -n "$test_only" ]; then
    [ "${#providers[@]}" -eq 0 ] || die "--test-only and --provider exclude each other"
elif [ "${#providers[@]}" -gt 0 ]; then
    build_test=
else
    providers=("${ALL_PROVIDERS[@]}")
fi

# ------------------------------------------------------------------ prerequisites
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and the image rootfs ownership need it)"
[ -r "$entrypoint" ] || die "missing $entrypoint"

need_pkgs=()
# The test image needs a statically linked busybox (it has no libc): Debian's busybox-static.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ||
    need_pkgs+=(busybox-static)
if [ "${#providers[@]}" -gt 0 ]; then
    command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
fi
if [ "${#providers[@]}" -gt 0 ]; then
    [ -r "$CA_BUNDLE" ] && [ -s "$CA_BUNDLE" ] || die "CA_BUNDLE $CA_BUNDLE is not a readable, non-empty file"
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${need_pkgs[*]} by hand"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null ||
        die "apt-get install ${need_pkgs[*]} failed"
fi
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing although busybox-static is installed"

# Docker CLI: any works for import/inspect/run; builds need one that can do BuildKit builds.
# Debian's docker.io CLI (20.10) has BuildKit built in; a newer standalone CLI without the
# buildx plugin refuses DOCKER_BUILDKIT=1. Probe with a trivial build instead of guessing.
docker_candidates=()
[ -n "${DOCKER:-}" ] && docker_candidates+=("$DOCKER")
docker_candidates+=(/usr/bin/docker "$(command -v docker 2>/dev/null || true)" /usr/local/bin/docker)
DOCKER_ANY=
for c in "${docker_candidates[@]}"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        DOCKER_ANY=$c
        break
    fi
done
[ -n "$DOCKER_ANY" ] || die "no docker CLI can reach the daemon (is dockerd running? tried: ${docker_candidates[*]})"

DOCKER_BK=
pick_buildkit_cli() {
    local probe c
    probe=$(mktemp -d)
    printf 'FROM scratch\n' >"$probe/Dockerfile"
    for c in "${docker_candidates[@]}"; do
        [ -n "$c" ] && [ -x "$c" ] || continue
        if DOCKER_BUILDKIT=1 "$c" build -q "$probe" >/dev/null 2>&1; then
            DOCKER_BK=$c
            break
        fi
    done
    rm -rf "$probe"
    [ -n "$DOCKER_BK" ] || die "no docker CLI can do BuildKit builds (tried: ${docker_candidates[*]}); install docker.io or the buildx plugin"
    log "using $DOCKER_BK for BuildKit builds"
}

# ------------------------------------------------------------------ helpers
image_id() { "$DOCKER_ANY" image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
image_label() { "$DOCKER_ANY" image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }
hash_of() { sha256sum | cut -c1-32; }

# up_to_date TAG HASH: the image exists and was built from the same inputs.
up_to_date() {
    [ -z "$force" ] && [ "$(image_label "$1" io.polydev.inputs-hash)" = "$2" ]
}

workdirs=()
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local d
    for d in "${workdirs[@]}"; do
        # Never follow a rootfs's own mounts or symlinks out of it.
        mountpoint -q "$d/rootfs/proc" 2>/dev/null && umount "$d/rootfs/proc"
        rm -rf --one-file-system "$d"
    done
}
trap cleanup EXIT
# Turn signals into a normal exit so the EXIT trap unmounts and removes scratch trees.
trap 'exit 130' INT
trap 'exit 143' TERM
# new_workdir: a fresh scratch directory in $WORKDIR, removed on exit. (Not printed: a
# command substitution would run it in a subshell, and the cleanup list would lose it.)
new_workdir() {
    WORKDIR=$(mktemp -d /var/tmp/polydev-build.XXXXXX)
    workdirs+=("$WORKDIR")
}

# ------------------------------------------------------------------ test image
build_test_image() {
    local bb_version hash d root applet
    bb_version=$("$BUSYBOX" 2>&1 | sed -n '1s/^BusyBox v\([^ ]*\).*/\1/p')
    hash=$({
        echo "recipe=$RECIPE_VERSION test"
        sha256sum "$BUSYBOX" "$entrypoint" | cut -d' ' -f1
    } | hash_of)
    if up_to_date "$TEST_TAG" "$hash"; then
        log "$TEST_TAG is up to date"
        return
    fi
    log "building $TEST_TAG (busybox $bb_version)"
    new_workdir
    d=$WORKDIR
    root=$d/rootfs
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,tmp,root,home/runtime,proc,sys,dev}
    install -m 0755 "$BUSYBOX" "$root/bin/busybox"
    # One symlink per applet, at the place busybox says it belongs (/bin/sh, /usr/bin/env ...).
    while read -r applet; do
        [ -n "$applet" ] && [ "$applet" != bin/busybox ] || continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -sf /bin/busybox "$root/$applet"
    done < <("$BUSYBOX" --list-full)
    [ -e "$root/bin/sh" ] || die "busybox has no sh applet"
    # Same script as the provider images; there is no bash here, so it runs under ash.
    install -m 0755 "$entrypoint" "$root/usr/local/bin/polydev-entrypoint"
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
runtime:x:1000:1000:polydev runtime:/home/runtime:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
runtime:x:1000:
nogroup:x:65534:
EOF
    chmod 1777 "$root/tmp"
    chmod 0700 "$root/root"
    chown 1000:1000 "$root/home/runtime"
    tar --numeric-owner -C "$root" -c . | "$DOCKER_ANY" import \
        --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin' \
        --change 'ENV HOME=/home/runtime' \
        --change 'ENV POLYDEV_PROVIDER=test' \
        --change 'ENV POLYDEV_CLI=busybox' \
        --change "ENV POLYDEV_CLI_VERSION=$bb_version" \
        --change 'ENV POLYDEV_REQUIRED_ENV=""' \
        --change 'LABEL io.polydev.provider=test' \
        --change "LABEL io.polydev.inputs-hash=$hash" \
        --change 'USER 1000:1000' \
        --change 'WORKDIR /home/runtime' \
        --change 'ENTRYPOINT ["/usr/local/bin/polydev-entrypoint"]' \
        - "$TEST_TAG" >/dev/null || die "docker import of $TEST_TAG failed"
    # Smoke check: args mode runs a busybox applet as uid 1000.
    local uid
    uid=$("$DOCKER_ANY" run --rm "$TEST_TAG" id -u 2>/dev/null) || die "$TEST_TAG does not run"
    [ "$uid" = 1000 ] || die "$TEST_TAG runs as uid '$uid', want 1000"
}

# ------------------------------------------------------------------ base image
build_base_image() {
    if [ -z "$rebuild_base" ] && [ -n "$(image_id "$BASE_TAG")" ]; then
        log "$BASE_TAG exists; not rebuilding it (--rebuild-base to rebuild)"
        return
    fi
    log "building $BASE_TAG: debootstrap $DEBIAN_SUITE from $DEBIAN_MIRROR (takes a few minutes)"
    local d root node_version
    new_workdir
    d=$WORKDIR
    root=$d/rootfs
    debootstrap --variant=minbase --include=ca-certificates "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" \
        >"$d/debootstrap.log" 2>&1 || {
        tail -n 30 "$d/debootstrap.log" >&2
        die "debootstrap $DEBIAN_SUITE failed (log above)"
    }
    # No daemons may start inside the chroot; some maintainer scripts want /proc.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    mount -t proc proc "$root/proc"
    if ! chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm' \
        >"$d/apt.log" 2>&1; then
        umount "$root/proc"
        tail -n 30 "$d/apt.log" >&2
        die "installing nodejs/npm in the $DEBIAN_SUITE chroot failed (log above)"
    fi
    umount "$root/proc"
    node_version=$(chroot "$root" node --version) || die "node does not run in the new rootfs"
    case $node_version in
    v2[0-9].* | v[3-9][0-9].*) ;;
    *) die "$DEBIAN_SUITE gives Node $node_version; the CLIs need >= 20 (set DEBIAN_SUITE)" ;;
    esac
    log "base has Node $node_version, npm $(chroot "$root" npm --version 2>/dev/null)"
    # Leave no package caches, lists, logs or docs in the image.
    rm -f "$root/usr/sbin/policy-rc.d"
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/var/log/* "$root"/tmp/* "$root"/root/.npm "$root"/usr/share/man/* \
        "$root"/usr/share/info/* "$root"/usr/share/doc-base/*
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
    tar --numeric-owner -C "$root" -c . | "$DOCKER_ANY" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "ENV NODE_VERSION=${node_version#v}" \
        --change "LABEL io.polydev.base=debootstrap-$DEBIAN_SUITE" \
        --change 'CMD ["/bin/bash"]' \
        - "$BASE_TAG" >/dev/null || die "docker import of $BASE_TAG failed"
}

# ------------------------------------------------------------------ provider images
build_provider_image() {
    local provider=$1 tag="polydev-$1-runtime:latest" dir="$here/$1-runtime"
    local version_arg=${CLI_VERSION_ARG[$1]} version=${CLI_VERSION[$1]}
    local base_id hash
    [ -f "$dir/Dockerfile" ] || die "missing $dir/Dockerfile"
    base_id=$(image_id "$BASE_TAG")
    [ -n "$base_id" ] || die "base image $BASE_TAG is missing"
    hash=$({
        echo "recipe=$RECIPE_VERSION provider=$provider base=$base_id $version_arg=$version"
        sha256sum "$dir/Dockerfile" "$entrypoint" | cut -d' ' -f1
    } | hash_of)
    if up_to_date "$tag" "$hash"; then
        log "$tag is up to date"
        return
    fi
    [ -n "$DOCKER_BK" ] || pick_buildkit_cli
    log "building $tag (${CLI_PACKAGE[$provider]}@$version on $BASE_TAG)"
    # The build context is containers/ so every image copies the one shared entrypoint.sh.
    DOCKER_BUILDKIT=1 "$DOCKER_BK" build \
        --progress=plain \
        --file "$dir/Dockerfile" \
        --secret "id=ca,src=$CA_BUNDLE" \
        --build-arg "BASE_IMAGE=$BASE_TAG" \
        --build-arg "$version_arg=$version" \
        --label "io.polydev.inputs-hash=$hash" \
        --tag "$tag" \
        "$here" >&2 || die "docker build of $tag failed (output above)"
    local out
    out=$("$DOCKER_ANY" run --rm "$tag" "${CLI_NAME[$provider]}" --version 2>/dev/null) || true
    [ -n "$out" ] || die "$tag: '${CLI_NAME[$provider]} --version' failed in the new image"
    log "$tag: ${CLI_NAME[$provider]} --version prints: $out"
}

# take_lock NAME: serialize concurrent runs of this script (parallel tests, several worktrees)
# per image family, so a quick --test-only never waits behind an npm build. Held until exit.
take_lock() {
    local dir=/run/lock fd
    [ -d "$dir" ] || dir=/tmp
    exec {fd}>"$dir/polydev-build-images.$1.lock"
    if ! flock -n "$fd"; then
        log "another build-images.sh is building the $1 image(s); waiting for it"
        flock "$fd"
    fi
}

# ------------------------------------------------------------------ main
built=()
if [ -n "$build_test" ]; then
    take_lock test
    build_test_image
    built+=("$TEST_TAG")
fi
if [ "${#providers[@]}" -gt 0 ]; then
    take_lock node
    build_base_image
    built+=("$BASE_TAG")
    for p in "${providers[@]}"; do
        build_provider_image "$p"
        built+=("polydev-$p-runtime:latest")
    done
fi

log "images:"
for t in "${built[@]}"; do
    size=$("$DOCKER_ANY" image inspect -f '{{.Size}}' "$t")
    printf '    %-38s %6d MB  %s\n' "$t" $((size / 1000000)) "$(image_id "$t" | cut -c8-19)" >&2
done
exit 0
}
