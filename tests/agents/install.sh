#!/usr/bin/env bash
# Installs one pinned agent CLI from the npm registry into a folder under target/, with npm's
# cache inside it (nothing in ~/.npm), for the tests/*_e2e.rs agent specs. Prints the folder.
# Exit 75 (EX_TEMPFAIL) when npm or the registry cannot be reached: the spec is then skipped.
set -euo pipefail
package=${1:?usage: install.sh PACKAGE@VERSION DIR}
dir=${2:?usage: install.sh PACKAGE@VERSION DIR}
stamp="$dir/.installed-${package//\//_}"
if [ -f "$stamp" ]; then echo "$dir"; exit 0; fi
command -v npm >/dev/null 2>&1 || { echo "npm is not installed" >&2; exit 75; }
mkdir -p "$dir"
export npm_config_cache="$dir/.npm-cache" npm_config_update_notifier=false
timeout 60 npm ping >/dev/null 2>&1 || { echo "the npm registry cannot be reached" >&2; exit 75; }
timeout 900 npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$package" >&2
touch "$stamp"
echo "$dir"
