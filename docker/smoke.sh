#!/usr/bin/env bash
# The container sidecar end to end in a real engine: builds docker/Dockerfile and runs the image
# as docs/operations.md, "Running in a container", says, against a stand-in provider on this host's
# loopback (docker/smoke-mock.py). Prints PASS or FAIL per step; exits non-zero on any failure.
#
#   docker/smoke.sh [docker|podman]            # default docker
#
# The containers use the host's network (`--network host`) and listen on 127.0.0.1 only, so all
# traffic stays on loopback; this needs a Linux engine (Docker Desktop's host network differs).
# Extra build flags go in SMOKE_BUILD_FLAGS (for example "--network=host" where the build
# cannot otherwise reach crates.io). Keys here are random per run and never printed.
set -uo pipefail

engine=${1:-docker}
cd "$(dirname "$0")/.." || exit 2
image=${SMOKE_IMAGE:-keyproxy:smoke}
run_id=kp-smoke-$$
volume=$run_id-state
work=$(mktemp -d)
failures=0
mock_pid=

# The engine's own complaints (podman without systemd reports, per container, that it cannot
# schedule health checks) go to a file, shown when a step fails; container logs are not these.
eng() { "$engine" "$@" 2>>"$work/engine.log"; }
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...: PASS when the command succeeds
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
cleanup() {
    for c in "$run_id-denied" "$run_id-1" "$run_id-2"; do
        "$engine" rm -f -v "$c" >/dev/null 2>&1   # -v: the anonymous /state of the denied run
    done
    "$engine" volume rm -f "$volume" >/dev/null 2>&1
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

command -v "$engine" >/dev/null || { echo "FAIL $engine is not installed"; exit 1; }
for tool in curl python3 jq; do
    command -v "$tool" >/dev/null || { echo "FAIL $tool is needed on the host"; exit 1; }
done

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
random_key() { echo "sk-smoke-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }
# wait_for SECONDS 'COMMAND': true once the command (evaluated afresh each time) succeeds,
# false after SECONDS.
wait_for() {
    local until=$((SECONDS + $1))
    while ! eval "$2"; do
        [ "$SECONDS" -ge "$until" ] && return 1
        sleep 0.2
    done
}

# 1. Build, with the version label from Cargo.toml.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
build=(build -f docker/Dockerfile -t "$image" --build-arg "VERSION=$version" --build-arg "REVISION=$revision")
# podman and buildah write OCI images by default, which have no HEALTHCHECK.
[ "$engine" = podman ] && build+=(--format docker)
# shellcheck disable=SC2206 # extra flags are meant to split
build+=(${SMOKE_BUILD_FLAGS:-} .)
started=$SECONDS
if nice -n 10 "$engine" "${build[@]}" >"$work/build.log" 2>&1; then
    pass "image builds from docker/Dockerfile in $((SECONDS - started)) s"
else
    tail -n 30 "$work/build.log"
    fail "image builds from docker/Dockerfile"
    exit 1
fi
inspect() { "$engine" image inspect --format "$1" "$image"; }
size=$(inspect '{{.Size}}')
echo "     image $image: $((size / 1000000)) MB, user $(inspect '{{.Config.User}}')"
check "the image runs as user 65532" [ "$(inspect '{{.Config.User}}')" = 65532:65532 ]
label=$(inspect '{{index .Config.Labels "org.opencontainers.image.version"}}')
binary=$(eng run --rm "$image" --version)
check "label org.opencontainers.image.version=$label is the binary's ($binary)" \
    [ "$label" = "$version" -a "$binary" = "keyproxy $version" ]
check "the image declares the state volume /state" \
    grep -q '/state' <<<"$(inspect '{{json .Config.Volumes}}')"

# 2. The provider stand-in and the mounted folder: keyproxy.toml and keys.toml, group-readable
# by the group the container runs in (docs/operations.md: --user 65532:GID).
python3 docker/smoke-mock.py "$work/mock.port" "$work/seen" &
mock_pid=$!
wait_for 10 'test -s "$work/mock.port"' || { fail "the mock provider starts"; exit 1; }
mock=http://127.0.0.1:$(cat "$work/mock.port")
gid=$(id -g)
key_a=$(random_key)
key_b=$(random_key)
etc=$work/keyproxy
mkdir -p "$etc"
cat >"$etc/keyproxy.toml" <<EOF
keys_files = ["keys.toml"]
[[routes]]
prefix = "/"
upstream = "$mock"
profile = "mock"
EOF
write_keys() { # write_keys FOLDER KEY: as an editor would, a new file renamed over the old
    (umask 077 && printf '[profiles.mock]\nkey = "%s"\n' "$2" >"$1/keys.toml.new")
    chgrp "$gid" "$1/keys.toml.new" && chmod 640 "$1/keys.toml.new"
    mv -f "$1/keys.toml.new" "$1/keys.toml"
}
write_keys "$etc" "$key_a"
chgrp "$gid" "$etc" "$etc/keyproxy.toml" && chmod 750 "$etc" && chmod 640 "$etc/keyproxy.toml"

serve() { # serve NAME PORT FOLDER: the run command of docs/operations.md, on the host's loopback
    eng run -d --name "$1" --network host --read-only \
        --user "65532:$gid" \
        -v "$3:/etc/keyproxy:ro" -v "$volume:/state" \
        -e "KEYPROXY_LISTEN=127.0.0.1:$2" "$image" >/dev/null
}
status_of() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
ready() { [ "$(status_of "$1/_keyproxy/ready")" = 200 ]; }
chat() { # chat URL: one completion; prints the status
    status_of -H 'content-type: application/json' \
        -d '{"model":"mock/model","messages":[{"role":"user","content":"hi"}]}' "$1/chat/completions"
}
last_key_is() { [ "$(tail -n 1 "$work/seen")" = "Bearer $1" ]; }

# 3. A keys file as `keyproxy keys add` leaves it (0600, the host user's) is unreadable to user
# 65532: the documented failure, answered locally and never forwarded.
if [ "$(id -u)" != 65532 ]; then
    denied=$work/denied
    mkdir -p "$denied" && cp "$etc/keyproxy.toml" "$denied/" && chmod 755 "$denied"
    chmod 644 "$denied/keyproxy.toml"
    (umask 077 && printf '[profiles.mock]\nkey = "%s"\n' "$key_a" >"$denied/keys.toml")
    port=$(free_port)
    eng run -d --name "$run_id-denied" --network host --read-only -v "$denied:/etc/keyproxy:ro" \
        -e "KEYPROXY_LISTEN=127.0.0.1:$port" "$image" >/dev/null
    url=http://127.0.0.1:$port
    wait_for 30 '[ "$(status_of "$url/_keyproxy/health")" = 200 ]'
    reason=$(curl -s -o /dev/null -D - "$url/chat/completions" -d '{}' | tr -d '\r' | sed -n 's/^x-keyproxy-error: //Ip')
    check "a 0600 keys file of the host user: 401 $reason inside the container, as docs/operations.md says" \
        [ "$reason" = missing-key -a ! -s "$work/seen" ]
    eng stop -t 10 "$run_id-denied" >/dev/null
fi

# 4. Serve: folder mounted read-only, root file system read-only, usage on the named volume.
port=$(free_port)
url=http://127.0.0.1:$port
serve "$run_id-1" "$port" "$etc"
if wait_for 30 'ready "$url"'; then
    pass "serves with the keys folder mounted read-only, --read-only root and the state volume"
else
    "$engine" logs "$run_id-1" 2>&1 | tail -n 20
    tail -n 20 "$work/engine.log"
    fail "serves with the keys folder mounted read-only, --read-only root and the state volume"
    exit 1
fi
check "the root file system is read-only" \
    [ "$("$engine" inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$run_id-1")" = true ]
forwarded_with() { [ "$(chat "$url")" = 200 ] && last_key_is "$1"; }
check "a request is forwarded with the mounted key" forwarded_with "$key_a"
warned=$("$engine" logs "$run_id-1" 2>&1 | jq -R 'fromjson? | select(.level == "WARN" and (.fields.file // .file) == "/etc/keyproxy/keys.toml")' | wc -l)
check "no permission warning for the 0640 keys file with --user 65532:$gid" [ "$warned" = 0 ]

# 5. The image's HEALTHCHECK is `keyproxy health`, and it passes.
# podman shows the image's Docker-format health check beside its OCI config, Docker inside it.
if [ "$engine" = podman ]; then
    test_cmd=$(inspect '{{json .HealthCheck.Test}}')
else
    test_cmd=$(inspect '{{json .Config.Healthcheck.Test}}')
fi
health_ok() {
    if [ "$engine" = podman ]; then
        eng healthcheck run "$run_id-1" >/dev/null
    else
        [ "$(docker inspect --format '{{.State.Health.Status}}' "$run_id-1")" = healthy ]
    fi
}
check "the image's health check is keyproxy health: $test_cmd" grep -q 'keyproxy","health' <<<"$test_cmd"
check "the health check passes" wait_for 40 health_ok
check "keyproxy health in the container exits 0" eng exec "$run_id-1" /usr/local/bin/keyproxy health >/dev/null

# 6. Rotation: a new keys file renamed over the old in the mounted folder; the next request
# after the reload carries the new key.
reloads() { curl -s "$url/_keyproxy/status" | jq -r '.reload.count'; }
before=$(reloads)
write_keys "$etc" "$key_b"
check "the rename is seen: keyproxy reloads" wait_for 15 '[ "$(reloads)" -gt "$before" ]'
check "the next request carries the rotated key" forwarded_with "$key_b"

# 7. Usage survives the container: stop (SIGTERM, exit 0), a new container on the same volume.
requests() { curl -s "$1/_keyproxy/usage" | jq -r '.all_time.total.requests // 0'; }
wait_for 10 '[ "$(requests "$url")" -ge 2 ]'
counted=$(requests "$url")
eng stop -t 30 "$run_id-1" >/dev/null
check "$engine stop: keyproxy exits 0" \
    [ "$("$engine" inspect --format '{{.State.ExitCode}}' "$run_id-1")" = 0 ]
port=$(free_port)
url=http://127.0.0.1:$port
serve "$run_id-2" "$port" "$etc"
wait_for 30 'ready "$url"'
check "usage is kept across containers on the state volume ($counted requests before, $(requests "$url") after)" \
    [ "$counted" -ge 2 -a "$(requests "$url")" = "$counted" ]

# 8. SIGTERM during a stream: the stream finishes, then keyproxy exits 0.
curl -sN -H 'content-type: application/json' -d '{"model":"mock/model","stream":true}' \
    "$url/chat/completions" >"$work/stream" &
stream_pid=$!
if wait_for 10 'grep -qs "^data:" "$work/stream"'; then
    eng kill --signal TERM "$run_id-2" >/dev/null
    wait "$stream_pid"
    chunks=$(grep -c '"delta"' "$work/stream")
    check "SIGTERM mid-stream: the stream ends complete ($chunks of 8 chunks and [DONE])" \
        grep -q '^data: \[DONE\]' "$work/stream"
    [ "$chunks" = 8 ] || fail "SIGTERM mid-stream: 8 chunks arrived"
    code=$(eng wait "$run_id-2" | tail -n 1)
    check "SIGTERM mid-stream: keyproxy exits 0 (exit code $code)" [ "$code" = 0 ]
else
    fail "SIGTERM mid-stream: the stream started"
fi

# 9. No key in any container's logs (which are not empty).
logs=$work/logs
: >"$logs"
for c in "$run_id-denied" "$run_id-1" "$run_id-2"; do
    "$engine" logs "$c" >>"$logs" 2>&1
done
leaks=0
for k in "$key_a" "$key_b"; do
    grep -qF "$k" "$logs" && leaks=$((leaks + 1))
done
check "no key in the logs ($(wc -l <"$logs") lines, $(grep -c '"proxied"' "$logs") proxied)" \
    [ "$leaks" = 0 -a "$(grep -c '"proxied"' "$logs")" -ge 3 ]

if [ "$failures" = 0 ]; then
    :
elif [ -s "$work/engine.log" ]; then
    echo "--- $engine said:"
    sort -u "$work/engine.log" | tail -n 20
fi
if [ "$failures" = 0 ]; then
    echo "smoke: all steps passed"
else
    echo "smoke: $failures step(s) failed"
    exit 1
fi
