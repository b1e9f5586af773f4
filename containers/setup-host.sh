#!/usr/bin/env bash
# Prepare this host to run polydev: a Docker engine that answers, and polydev's images.
#
# Usage: containers/setup-host.sh [build-images.sh options]
#   e.g. containers/setup-host.sh --provider openai     # engine + the Codex image
#        containers/setup-host.sh --test-only           # engine + the tiny test image
#
# - Installs Debian's docker.io when no Docker engine is installed (needs root and apt).
# - Starts dockerd in the background when none answers (logs to /var/log/polydev-dockerd.log),
#   and waits until it does.
# - Then runs containers/build-images.sh with the given options (idempotent: unchanged images
#   are not rebuilt).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'setup-host.sh: error: %s\n' "$*" >&2; exit 1; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if ! command -v dockerd >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "Docker is not installed and installing it needs root: rerun with sudo"
  log "installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if ! engine_answers; then
  [ "$(id -u)" = 0 ] || die "no Docker engine answers and starting one needs root: rerun with sudo"
  log "starting dockerd in the background (log: /var/log/polydev-dockerd.log)"
  nohup dockerd >>/var/log/polydev-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    engine_answers && break
    sleep 1
  done
  engine_answers || die "dockerd did not answer within 60 s; see /var/log/polydev-dockerd.log"
fi
log "Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers"

exec "$here/build-images.sh" "$@"
