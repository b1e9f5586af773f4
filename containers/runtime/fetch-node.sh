#!/bin/sh
# Build step of runtime/Dockerfile (stage "node"): download the pinned Node runtime from the npm
# registry, verify the tarball against the pinned integrity, and leave the binary at
# /out/node. Runs in polydev-node-base:20 (Debian's Node 20 and npm do the download).
#
# Build args (from containers/versions.tsv, row "node"): NODE_PACKAGE, NODE_VERSION,
# NODE_INTEGRITY ("sha512-<base64>", the registry's dist.integrity of that tarball).
set -eu
die() { printf 'fetch-node: error: %s\n' "$*" >&2; exit 1; }
for arg in NODE_PACKAGE NODE_VERSION NODE_INTEGRITY; do
    eval "value=\${$arg:-}"
    [ -n "$value" ] || die "build arg $arg is required; containers/build-images.sh passes it from containers/versions.tsv (row \"node\")"
done
case $NODE_INTEGRITY in
sha512-*) ;;
*) die "NODE_INTEGRITY must be the registry's sha512 dist.integrity (sha512-...), got '$NODE_INTEGRITY'" ;;
esac
if [ -s /run/secrets/ca ]; then
    export NODE_EXTRA_CA_CERTS=/run/secrets/ca npm_config_cafile=/run/secrets/ca
fi
work=$(mktemp -d)
cd "$work"
npm pack --silent "$NODE_PACKAGE@$NODE_VERSION" >pack.out 2>pack.err || {
    tail -n 5 pack.err >&2
    die "npm pack $NODE_PACKAGE@$NODE_VERSION failed (output above): does that version exist? (npm view $NODE_PACKAGE versions)"
}
tarball=$(tail -n 1 pack.out)
[ -f "$tarball" ] || die "npm pack $NODE_PACKAGE@$NODE_VERSION left no tarball"
actual=$(node -e '
    const data = require("fs").readFileSync(process.argv[1]);
    process.stdout.write("sha512-" + require("crypto").createHash("sha512").update(data).digest("base64"));
' "$tarball")
[ "$actual" = "$NODE_INTEGRITY" ] || die "integrity mismatch for $NODE_PACKAGE@$NODE_VERSION: the downloaded tarball is $actual but containers/versions.tsv pins $NODE_INTEGRITY. Not using it. If you bumped the version, pin the registry's value: npm view $NODE_PACKAGE@$NODE_VERSION dist.integrity"
tar -xzf "$tarball" package/bin/node
mkdir -p /out
install -m 0755 package/bin/node /out/node
cd /
rm -rf "$work" /root/.npm
got=$(/out/node --version)
[ "$got" = "v$NODE_VERSION" ] || die "$NODE_PACKAGE@$NODE_VERSION holds Node $got, not v$NODE_VERSION"
echo "fetch-node: $NODE_PACKAGE@$NODE_VERSION verified ($NODE_INTEGRITY)"
