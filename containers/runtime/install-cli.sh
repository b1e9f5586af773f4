#!/bin/bash
# Build step of runtime/Dockerfile (stage "cli"): install one provider's CLI from the npm
# registry under /usr/local with Debian's npm running on the pinned Node (/usr/local/bin/node,
# first on PATH, so install scripts run on it too), then put the CLI's fastest entry point on
# PATH as /usr/local/bin/<cli>:
#   codex   the native binary of @openai/codex's platform package (no Node launcher in front)
#   claude  the native binary that @anthropic-ai/claude-code's postinstall puts in bin/claude.exe
#   gemini  bundle/gemini.js (a Node program)
#
# Build args (from containers/versions.tsv): PROVIDER, CLI_PACKAGE, CLI_VERSION.
set -euo pipefail
die() { printf 'install-cli: error: %s\n' "$*" >&2; exit 1; }
for arg in PROVIDER CLI_PACKAGE CLI_VERSION; do
    [ -n "${!arg:-}" ] || die "build arg $arg is required; containers/build-images.sh passes it from containers/versions.tsv"
done
[ "$(command -v node)" = /usr/local/bin/node ] || die "the pinned Node is not first on PATH"
if [ -s /run/secrets/ca ]; then
    export NODE_EXTRA_CA_CERTS=/run/secrets/ca npm_config_cafile=/run/secrets/ca
fi
missing="$CLI_PACKAGE has no version $CLI_VERSION on the npm registry: fix its row in containers/versions.tsv (newest: npm view $CLI_PACKAGE dist-tags)"
if ! found=$(npm view "$CLI_PACKAGE@$CLI_VERSION" version 2>/tmp/view.err); then
    # npm answers a version (or package) the registry does not have with E404.
    grep -q 'E404' /tmp/view.err && die "$missing"
    die "npm view $CLI_PACKAGE@$CLI_VERSION failed (registry unreachable? CA_BUNDLE?): $(grep -v 'complete log' /tmp/view.err | head -n 5 | tr '\n' ' ')"
fi
[ "$found" = "$CLI_VERSION" ] || die "$missing"
npm install --global --prefix /usr/local --no-audit --no-fund --omit=dev "$CLI_PACKAGE@$CLI_VERSION"
root=/usr/local/lib/node_modules/$CLI_PACKAGE
is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }
case $PROVIDER in
openai)
    native=$(find "$root/node_modules" -path '*/vendor/x86_64-unknown-linux-musl/bin/codex' -type f | head -n 1)
    [ -n "$native" ] && is_elf "$native" || die "$CLI_PACKAGE@$CLI_VERSION has no native linux x64 codex binary"
    ln -sfn "../${native#/usr/local/}" /usr/local/bin/codex
    ;;
anthropic)
    is_elf "$root/bin/claude.exe" ||
        die "$CLI_PACKAGE@$CLI_VERSION: its postinstall left no native binary in bin/claude.exe (install scripts and optional dependencies are needed)"
    # npm may install every linux x64 variant; the postinstall picked the glibc one.
    rm -rf "$root/node_modules/@anthropic-ai/claude-code-linux-x64-musl"
    ;;
google) ;;
*) die "unknown PROVIDER '$PROVIDER'" ;;
esac
npm cache clean --force 2>/dev/null
rm -rf /root/.npm /root/.cache /tmp/* /tmp/.[!.]* /var/tmp/*
