#!/bin/bash
# Build step of runtime/Dockerfile (stage "google"): fill a V8 compile cache for gemini at
# CACHE_DIR by running one real prompt against runtime/stand-in.mjs on the build's loopback,
# then make it read-only for everyone and link it for each uid in $COMPILE_CACHE_UIDS.
#
# Node keeps its cache in CACHE_DIR/v<node>-<arch>-<flags hash>-<uid>; a process of another uid
# does not see this one (and cannot add its own: CACHE_DIR belongs to root), so it runs without.
# Usage: fill-compile-cache.sh CACHE_DIR
set -euo pipefail
die() { printf 'fill-compile-cache: error: %s\n' "$*" >&2; exit 1; }
cache=${1:?usage: fill-compile-cache.sh CACHE_DIR}
[ -n "${COMPILE_CACHE_UIDS:-}" ] || die "build arg COMPILE_CACHE_UIDS is required (containers/build-images.sh passes it)"
for uid in $COMPILE_CACHE_UIDS; do
    case $uid in '' | *[!0-9]*) die "COMPILE_CACHE_UIDS holds '$uid', not a numeric uid" ;; esac
done
[ "$(id -u)" = 0 ] || die "run as root (the cache is root's, read by every uid)"

home=$(mktemp -d)
mkdir -p "$home/.gemini"
# The settings polydev launches gemini with (src/core/cli.rs), so the same code runs.
cat >"$home/.gemini/settings.json" <<'JSON'
{
  "security": { "auth": { "selectedType": "gemini-api-key" } },
  "privacy": { "usageStatisticsEnabled": false },
  "telemetry": { "enabled": false },
  "general": { "enableAutoUpdate": false, "enableAutoUpdateNotification": false }
}
JSON
port=47111
node /run/polydev/stand-in.mjs "$port" &
stand_in=$!
trap 'kill "$stand_in" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
cd "$home"
run() {
    env HOME="$home" NODE_COMPILE_CACHE="$cache" GEMINI_API_KEY=build-time-no-key \
        GOOGLE_GEMINI_BASE_URL="http://127.0.0.1:$port" GEMINI_CLI_TRUST_WORKSPACE=true \
        GEMINI_CLI_NO_RELAUNCH=true timeout 180 gemini "$@"
}
run --version >/dev/null
out=$(run -p 'Reply with one word.' 2>"$home/err") ||
    die "gemini -p against the stand-in failed: $(tail -n 5 "$home/err")"
case $out in *polydev-canned-reply-ok*) ;; *) die "gemini printed '$out', not the stand-in's reply" ;; esac
cd /

shopt -s nullglob
filled=("$cache"/v*-0)
[ "${#filled[@]}" -eq 1 ] || die "expected one cache directory for uid 0 in $cache, found ${#filled[@]}"
tag=$(basename "${filled[0]}")
for uid in $COMPILE_CACHE_UIDS; do
    [ "$uid" = 0 ] || ln -sfn "$tag" "$cache/${tag%-0}-$uid"
done
chown -R root:root "$cache"
chmod -R u=rwX,go=rX "$cache"
echo "fill-compile-cache: $(find "${filled[0]}" -type f | wc -l) entries, $(du -sh "${filled[0]}" | cut -f1), linked for uids $COMPILE_CACHE_UIDS"
rm -rf "$home" /tmp/* /tmp/.[!.]*
