#!/bin/bash
# Build step of runtime/Dockerfile (stage "openai"): capture the state the CLI
# writes under $HOME on its first run into SKEL_DIR, a root-owned, world-readable home skeleton
# that polydev-entrypoint copies into each task's empty home (see "Home skeleton" there), so a
# task's CLI skips that first-run work.
#
# How: run one real prompt, with polydev's launch settings (src/core/cli.rs), against
# runtime/stand-in.mjs on the build's loopback in an empty home; then keep only an allowlist
# of what it wrote, clean that, and refuse the result if anything of the run is still in it.
#
# Kept (and why):
#   codex   .codex/installation_id      an anonymous random UUID codex creates once per home
#                                       (every task of this image shares it; see README)
#           .codex/.sandbox_migration   marks a one-time migration as done
#           .codex/skills/              its bundled system skills, unpacked on first start
#           .codex/*.sqlite but logs_*  its databases, migrated to the current schema; rows of
#                                       the build's thread (tables thread*, but the default
#                                       thread_sections) are deleted, then VACUUMed, no WAL
# Only codex has one. claude 2.1.332 with a seeded ~/.claude.json (its migration markers and
# userID) still rewrites it on every start, plus a backup of the old one: no faster. gemini
# 0.61.0 with its seeded project registry: no faster either (README "Images" has the numbers).
# Dropped: the launch files (the driver writes its own), sessions/rollouts, transcripts,
# history, logs, backups, locks, tmp and shell snapshots.
#
# Usage: seed-home.sh PROVIDER SKEL_DIR
set -euo pipefail
die() { printf 'seed-home: error: %s\n' "$*" >&2; exit 1; }
provider=${1:?usage: seed-home.sh PROVIDER SKEL_DIR}
skel=${2:?usage: seed-home.sh PROVIDER SKEL_DIR}
[ "$(id -u)" = 0 ] || die "run as root (the skeleton is root's, read by every uid)"

port=47112
base=http://127.0.0.1:$port
key=build-time-no-key
prompt='Reply with one word.'
home=$(mktemp -d)
work=$(mktemp -d)
node /run/polydev/stand-in.mjs "$port" &
stand_in=$!
trap 'kill "$stand_in" 2>/dev/null || true; rm -rf "$home" "$work"' EXIT
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

cd "$work"
case $provider in
openai)
    mkdir -p "$home/.codex"
    cat >"$home/.codex/config.toml" <<TOML
model_provider = "polydev"
check_for_update_on_startup = false

[model_providers.polydev]
name = "polydev credential broker"
base_url = "$base/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
supports_websockets = false

[analytics]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"

[features]
plugins = false
TOML
    out=$(env HOME="$home" OPENAI_API_KEY=$key timeout 120 \
        codex exec --skip-git-repo-check -- "$prompt" 2>"$work/err") ||
        die "codex exec against the stand-in failed: $(tail -n 5 "$work/err")"
    ;;
*) die "no home skeleton for provider '$provider' (only openai has one)" ;;
esac
case $out in *polydev-canned-reply-ok*) ;; *) die "the CLI printed '$out', not the stand-in's reply" ;; esac
kill "$stand_in" 2>/dev/null || true
wait "$stand_in" 2>/dev/null || true
cd /

# The ids of the build's session, to prove none is left: codex names its rollout after the
# thread.
session_ids=$(find "$home" -type f -name 'rollout-*.jsonl' |
    sed -E 's/.*([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.jsonl$/\1/')
[ -n "$session_ids" ] || die "the CLI left no session file; has where it keeps state changed? (see the list above)"

mkdir -p "$work/skel"
keep() { # keep PATH...: copy from the run's home into the skeleton
    local path
    for path in "$@"; do
        [ -e "$home/$path" ] || die "the first run wrote no $path any more: update the allowlist in seed-home.sh"
        mkdir -p "$work/skel/$(dirname "$path")"
        cp -R "$home/$path" "$work/skel/$path"
    done
}
case $provider in
openai)
    keep .codex/installation_id .codex/.sandbox_migration .codex/skills
    shopt -s nullglob
    dbs=()
    for db in "$home"/.codex/*.sqlite; do
        case ${db##*/} in logs_*) continue ;; esac
        dbs+=("${db##*/}")
    done
    [ "${#dbs[@]}" -gt 0 ] || die "codex created no database in its first run"
    for db in "${dbs[@]}"; do
        keep ".codex/$db"
        # Its write-ahead log holds what is not checkpointed into the file yet.
        for part in wal shm; do
            [ ! -e "$home/.codex/$db-$part" ] || keep ".codex/$db-$part"
        done
    done
    # node:sqlite (Node >= 22.13): applies the WAL, deletes the thread's rows, rewrites the file.
    node --no-warnings - "$work/skel/.codex" "${dbs[@]}" <<'JS'
const { DatabaseSync } = require('node:sqlite');
const [dir, ...files] = process.argv.slice(2);
for (const file of files) {
  const db = new DatabaseSync(`${dir}/${file}`);
  db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((r) => r.name);
  for (const table of tables) {
    if (table.startsWith('thread') && table !== 'thread_sections') db.exec(`DELETE FROM "${table}"`);
  }
  db.exec('PRAGMA journal_mode = DELETE');
  db.exec('VACUUM');
  db.close();
}
JS
    rm -f "$work/skel/.codex/"*.sqlite-wal "$work/skel/.codex/"*.sqlite-shm
    ;;
esac

# Nothing of the build's run may be left: its port, URL, key, prompt, reply, session ids or
# scratch paths.
for needle in "$port" "$base" "$key" "$prompt" polydev-canned-reply-ok "$home" "$work" $session_ids; do
    if grep -rlaF -- "$needle" "$work/skel" >"$work/hits"; then
        die "the home skeleton still holds '$needle' (in $(tr '\n' ' ' <"$work/hits")); not shipping it"
    fi
done

rm -rf "$skel"
mkdir -p "$(dirname "$skel")"
cp -R "$work/skel" "$skel"
chown -R root:root "$skel"
chmod -R u=rwX,go=rX "$skel"
echo "seed-home: $provider: $(find "$skel" -type f | wc -l) files, $(du -sh "$skel" | cut -f1) in $skel"
rm -rf /tmp/* /tmp/.[!.]* /root/.codex
