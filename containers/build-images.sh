#!/usr/bin/env bash
# Build polydev's container images locally, without any container registry.
#
# Usage: containers/build-images.sh [--test-only | --baseline] [--provider openai|anthropic|google]... [--force]
#
#   (no option)         base images, test image and all three provider images
#   --test-only         only polydev-test-runtime:latest (busybox, seconds to build)
#   --provider NAME     only the named provider image(s) (and the bases they need); repeatable
#   --baseline          instead of the runtime images, the benchmark's baseline images
#                       polydev-<provider>-baseline:latest (all three, or those named by --provider)
#   --force             rebuild the test/provider/baseline images even when their inputs are unchanged
#   --rebuild-base      debootstrap the base image again even though its tag exists (slow; changes
#                       its id, so every image above it is rebuilt too)
#
# Images:
#   polydev-node-base:20           debootstrap'd Debian (trixie: Node 20) + nodejs, npm, ca-certificates;
#                                  the build stage of the runtime images and the baseline's base
#   polydev-runtime-base:trixie    polydev-node-base:20 without Debian's Node and npm, plus ripgrep
#   polydev-test-runtime:latest    busybox-static rootfs + the entrypoint (for the driver's tests)
#   polydev-<provider>-runtime:latest   runtime base + the pinned Node + the provider's pinned CLI
#   polydev-<provider>-baseline:latest  polydev-node-base:20 + `npm install -g` of the same CLI
#
# Versions: every npm package (the CLIs and the Node runtime) is pinned in containers/versions.tsv,
# passed to the Dockerfiles as build args. The Node tarball is verified against its pinned integrity.
#
# Environment:
#   CA_BUNDLE=path      CA certificates npm must trust (a TLS-intercepting proxy); passed to the
#                       build as a BuildKit secret, never stored in an image.
#                       Default: /etc/ssl/certs/ca-certificates.crt
#   POLYDEV_VERSIONS_FILE=path   another versions table (same format) instead of containers/versions.tsv
#   POLYDEV_IMAGE_TAG=name   tag of the provider and baseline images (default latest; another tag
#                       builds them side by side with the ones in use)
#   COMPILE_CACHE_UIDS="1000 2100000000"   uids whose gemini uses the image's V8 compile cache
#                       (add the driver's security.task_uid if it is not the default)
#   DEBIAN_MIRROR=url   mirror for debootstrap (default http://deb.debian.org/debian)
#   DEBIAN_SUITE=name   Debian release for the base (default trixie, whose nodejs is 20.x)
#   DOCKER=path         the docker CLI to use (default: the first one that can do BuildKit builds)
#
# Idempotent: every image carries a label io.polydev.inputs-hash, a hash of everything it is
# built from (Dockerfile, scripts, entrypoint, versions table rows, build args, base image ids).
# An image whose label matches is not rebuilt. polydev-node-base:20 is built only when its tag is
# absent (or with --rebuild-base).
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
RUNTIME_BASE_TAG=polydev-runtime-base:trixie
TEST_TAG=polydev-test-runtime:latest
VERSIONS_FILE=${POLYDEV_VERSIONS_FILE:-$here/versions.tsv}
COMPILE_CACHE_UIDS=${COMPILE_CACHE_UIDS:-1000 2100000000}
IMAGE_TAG=${POLYDEV_IMAGE_TAG:-latest}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=${DEBIAN_SUITE:-trixie}
# Bump when the way an image is assembled changes without its input files changing.
RECIPE_VERSION=2

declare -A CLI_NAME=([openai]=codex [anthropic]=claude [google]=gemini)
ALL_PROVIDERS=(openai anthropic google)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-images.sh: error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ arguments
test_only=
baseline=
force=
rebuild_base=
providers=()
while [ "$#" -gt 0 ]; do
    case $1 in
    --test-only) test_only=1 ;;
    --baseline) baseline=1 ;;
    --force) force=1 ;;
    --rebuild-base) rebuild_base=1 ;;
    --provider)
        [ "$#" -ge 2 ] || die "--provider needs a value (openai, anthropic or google)"
        [ -n "${CLI_NAME[$2]:-}" ] || die "unknown provider '$2' (want openai, anthropic or google)"
        providers+=("$2")
        shift
        ;;
    --provider=*)
        p=${1#--provider=}
        [ -n "${CLI_NAME[$p]:-}" ] || die "unknown provider '$p' (want openai, anthropic or google)"
        providers+=("$p")
        ;;
    -h | --help) sed -n '2,41p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
build_test=1
if [ -n "$test_only" ]; then
    [ "${#providers[@]}" -eq 0 ] || die "--test-only and --provider exclude each other"
    [ -z "$baseline" ] || die "--test-only and --baseline exclude each other"
elif [ -n "$baseline" ]; then
    build_test=
    [ "${#providers[@]}" -gt 0 ] || providers=("${ALL_PROVIDERS[@]}")
elif [ "${#providers[@]}" -gt 0 ]; then
    build_test=
else
    providers=("${ALL_PROVIDERS[@]}")
fi

# ------------------------------------------------------------------ versions table
# containers/versions.tsv: "role<TAB>npm package<TAB>version<TAB>integrity" per line; the one place
# a version is pinned. Read and checked before anything is built, so a bad row costs seconds.
declare -A PKG=() VERSION=() INTEGRITY=() ROW=()
read_versions() {
    local file=$VERSIONS_FILE line lineno=0 role package version integrity extra
    [ -r "$file" ] || die "versions table $file is missing or unreadable"
    while IFS= read -r line || [ -n "$line" ]; do
        lineno=$((lineno + 1))
        case $line in '' | '#'*) continue ;; esac
        IFS=$'\t' read -r role package version integrity extra <<<"$line"
        local where="$file line $lineno"
        [ -n "$integrity" ] && [ -z "$extra" ] ||
            die "$where: want 4 tab-separated columns (role, npm package, version, integrity), got: $line"
        case $role in node | openai | anthropic | google) ;;
        *) die "$where: unknown role '$role' (want node, openai, anthropic or google)" ;;
        esac
        [ -z "${PKG[$role]:-}" ] || die "$where: a second row for '$role'"
        [[ $package =~ ^(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*$ ]] ||
            die "$where: '$package' is not an npm package name"
        [[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] ||
            die "$where: '$version' is not an exact version (want e.g. 1.2.3; ranges and tags are not pinned)"
        if [ "$role" = node ]; then
            [[ $integrity =~ ^sha512-[A-Za-z0-9+/]{86}==$ ]] ||
                die "$where: the node row needs the registry's integrity, sha512-<88 base64 chars> (npm view $package@$version dist.integrity), got '$integrity'"
        else
            [ "$integrity" = - ] || [[ $integrity =~ ^sha512-[A-Za-z0-9+/]{86}==$ ]] ||
                die "$where: integrity must be - or sha512-<88 base64 chars>, got '$integrity'"
        fi
        PKG[$role]=$package VERSION[$role]=$version INTEGRITY[$role]=$integrity
        ROW[$role]="$role $package $version $integrity"
    done <"$file"
    for role in node "${ALL_PROVIDERS[@]}"; do
        [ -n "${PKG[$role]:-}" ] || die "$file has no row for '$role'"
    done
}
if [ "${#providers[@]}" -gt 0 ]; then
    read_versions
fi
[[ $IMAGE_TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "POLYDEV_IMAGE_TAG='$IMAGE_TAG' is not a valid image tag"
[[ $COMPILE_CACHE_UIDS =~ ^[0-9]+( [0-9]+)*$ ]] ||
    die "COMPILE_CACHE_UIDS='$COMPILE_CACHE_UIDS': want numeric uids separated by single spaces"

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

# ------------------------------------------------------------------ runtime base image
build_runtime_base_image() {
    local dockerfile="$here/runtime-base/Dockerfile" base_id hash
    base_id=$(image_id "$BASE_TAG")
    [ -n "$base_id" ] || die "base image $BASE_TAG is missing"
    hash=$({
        echo "recipe=$RECIPE_VERSION runtime-base build=$base_id"
        sha256sum "$dockerfile" | cut -d' ' -f1
    } | hash_of)
    if up_to_date "$RUNTIME_BASE_TAG" "$hash"; then
        log "$RUNTIME_BASE_TAG is up to date"
        return
    fi
    [ -n "$DOCKER_BK" ] || pick_buildkit_cli
    log "building $RUNTIME_BASE_TAG ($BASE_TAG without Debian's Node, with ripgrep)"
    DOCKER_BUILDKIT=1 "$DOCKER_BK" build \
        --progress=plain \
        --file "$dockerfile" \
        --build-arg "BUILD_IMAGE=$BASE_TAG" \
        --label "io.polydev.inputs-hash=$hash" \
        --tag "$RUNTIME_BASE_TAG" \
        "$here" >&2 || die "docker build of $RUNTIME_BASE_TAG failed (output above)"
}

# ------------------------------------------------------------------ provider images
build_provider_image() {
    local provider=$1 tag="polydev-$1-runtime:$IMAGE_TAG" dockerfile="$here/runtime/Dockerfile"
    local base_id runtime_base_id hash
    base_id=$(image_id "$BASE_TAG")
    runtime_base_id=$(image_id "$RUNTIME_BASE_TAG")
    [ -n "$base_id" ] && [ -n "$runtime_base_id" ] || die "base images $BASE_TAG / $RUNTIME_BASE_TAG are missing"
    hash=$({
        echo "recipe=$RECIPE_VERSION provider=$provider build=$base_id base=$runtime_base_id"
        echo "${ROW[node]}"
        echo "${ROW[$provider]}"
        echo "compile-cache-uids=$COMPILE_CACHE_UIDS"
        sha256sum "$dockerfile" "$here"/runtime/*.sh "$here"/runtime/*.mjs "$entrypoint" | cut -d' ' -f1
    } | hash_of)
    if up_to_date "$tag" "$hash"; then
        log "$tag is up to date"
        return
    fi
    [ -n "$DOCKER_BK" ] || pick_buildkit_cli
    log "building $tag (${PKG[$provider]}@${VERSION[$provider]} on Node ${VERSION[node]})"
    local started=$SECONDS
    # The build context is containers/ so every image copies the one shared entrypoint.sh.
    DOCKER_BUILDKIT=1 "$DOCKER_BK" build \
        --progress=plain \
        --file "$dockerfile" \
        --target "$provider" \
        --secret "id=ca,src=$CA_BUNDLE" \
        --build-arg "BUILD_IMAGE=$BASE_TAG" \
        --build-arg "BASE_IMAGE=$RUNTIME_BASE_TAG" \
        --build-arg "NODE_PACKAGE=${PKG[node]}" \
        --build-arg "NODE_VERSION=${VERSION[node]}" \
        --build-arg "NODE_INTEGRITY=${INTEGRITY[node]}" \
        --build-arg "PROVIDER=$provider" \
        --build-arg "CLI_NAME=${CLI_NAME[$provider]}" \
        --build-arg "CLI_PACKAGE=${PKG[$provider]}" \
        --build-arg "CLI_VERSION=${VERSION[$provider]}" \
        --build-arg "COMPILE_CACHE_UIDS=$COMPILE_CACHE_UIDS" \
        --label "io.polydev.inputs-hash=$hash" \
        --tag "$tag" \
        "$here" >&2 || die "docker build of $tag failed (output above)"
    log "$tag built in $((SECONDS - started)) s"
    smoke_check "$tag" "${CLI_NAME[$provider]}" "${VERSION[$provider]}"
}

# ------------------------------------------------------------------ baseline images
build_baseline_image() {
    local provider=$1 tag="polydev-$1-baseline:$IMAGE_TAG" dockerfile="$here/baseline/Dockerfile"
    local base_id hash
    base_id=$(image_id "$BASE_TAG")
    [ -n "$base_id" ] || die "base image $BASE_TAG is missing"
    hash=$({
        echo "recipe=$RECIPE_VERSION baseline=$provider build=$base_id"
        echo "${ROW[$provider]}"
        sha256sum "$dockerfile" | cut -d' ' -f1
    } | hash_of)
    if up_to_date "$tag" "$hash"; then
        log "$tag is up to date"
        return
    fi
    [ -n "$DOCKER_BK" ] || pick_buildkit_cli
    log "building $tag (${PKG[$provider]}@${VERSION[$provider]} on $BASE_TAG, the plain recipe)"
    DOCKER_BUILDKIT=1 "$DOCKER_BK" build \
        --progress=plain \
        --file "$dockerfile" \
        --secret "id=ca,src=$CA_BUNDLE" \
        --build-arg "BUILD_IMAGE=$BASE_TAG" \
        --build-arg "CLI_PACKAGE=${PKG[$provider]}" \
        --build-arg "CLI_VERSION=${VERSION[$provider]}" \
        --label "io.polydev.inputs-hash=$hash" \
        --label "io.polydev.baseline=$provider" \
        --tag "$tag" \
        "$here" >&2 || die "docker build of $tag failed (output above)"
    smoke_check "$tag" "${CLI_NAME[$provider]}" "${VERSION[$provider]}"
}

# smoke_check TAG CLI VERSION: `CLI --version` runs in the new image and names VERSION.
smoke_check() {
    local out
    out=$("$DOCKER_ANY" run --rm "$1" "$2" --version 2>/dev/null) || true
    [ -n "$out" ] || die "$1: '$2 --version' failed in the new image"
    case $out in *"$3"*) ;; *) die "$1: '$2 --version' prints '$out', not version $3" ;; esac
    log "$1: $2 --version prints: $out"
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
    if [ -n "$baseline" ]; then
        for p in "${providers[@]}"; do
            build_baseline_image "$p"
            built+=("polydev-$p-baseline:$IMAGE_TAG")
        done
    else
        build_runtime_base_image
        built+=("$RUNTIME_BASE_TAG")
        for p in "${providers[@]}"; do
            build_provider_image "$p"
            built+=("polydev-$p-runtime:$IMAGE_TAG")
        done
    fi
fi

log "images:"
for t in "${built[@]}"; do
    size=$("$DOCKER_ANY" image inspect -f '{{.Size}}' "$t")
    printf '    %-38s %6d MB  %s\n' "$t" $((size / 1000000)) "$(image_id "$t" | cut -c8-19)" >&2
done
exit 0
}
