#!/usr/bin/env bash
# The team gateway end to end in a real engine: docker/compose.team.yaml (two keyproxy replicas
# and Redis) brought up by Compose, with a stand-in provider (docker/smoke-mock.py) as one more
# service on its network. Shows a budget held across the replicas, a key that one replica rested
# skipped by the other, and `keyproxy usage` on one replica counting what the other answered.
# Prints PASS or FAIL per step; exits non-zero on any failure.
#
#   docker/smoke-team.sh [podman|docker]        # default podman (with podman-compose)
#   SMOKE_OFFLINE=1 docker/smoke-team.sh podman  # no image registry: local stand-ins
#
# Compose runs the file as written, from a copy in a temporary folder that holds what the file
# asks you to write beside it (compose-team/, openrouter_key, .env), with two changes: the
# build context is this checkout, and compose-team/keyproxy.toml routes to the stand-in
# provider, with a second client and a budget of $1.00 reserving $0.30 (each answer costs
# $0.30). A second file adds the stand-in service; the replicas are published on free ports.
# SMOKE_OFFLINE=1 builds Redis from docker/redis/Dockerfile (REDIS_IMAGE) and the stand-in from
# the Debian 12 minbase image of ../shared/tools/container-engine.sh, instead of pulling
# redis:7-alpine and debian:bookworm-slim. Keys and the Redis password are random per run and
# never printed.
set -uo pipefail

engine=${1:-podman}
cd "$(dirname "$0")/.." || exit 2
root=$(pwd)
run_id=kp-team-$$
work=$(mktemp -d)
failures=0
case $engine in
    podman) compose=(podman-compose) ;;
    docker) compose=(docker compose) ;;
    *) echo "usage: $0 [podman|docker]"; exit 2 ;;
esac

pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...: PASS when the command succeeds
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
# Compose in the run's folder, its own project name, its output to a file.
comp() { (cd "$work" && "${compose[@]}" -p "$run_id" -f compose.team.yaml -f mock.yaml "$@") >>"$work/compose.log" 2>&1; }
cleanup() {
    comp down -v -t 5
    rm -rf "$work"
}
trap cleanup EXIT

for tool in "$engine" "${compose[0]}" curl python3 jq sha256sum; do
    command -v "$tool" >/dev/null || { echo "FAIL $tool is not installed"; exit 1; }
done
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# wait_for SECONDS 'COMMAND': true once the command (evaluated afresh each time) succeeds.
wait_for() {
    local until=$((SECONDS + $1))
    while ! eval "$2"; do
        [ "$SECONDS" -ge "$until" ] && return 1
        sleep 0.1
    done
}
build() { # build TAG CONTEXT [ARGS...]: quietly, the log kept for a failure
    local tag=$1 context=$2
    shift 2
    if ! nice -n 10 "$engine" build "$@" -t "$tag" "$context" >"$work/build.log" 2>&1; then
        tail -n 30 "$work/build.log"
        fail "builds $tag"
        exit 1
    fi
}

# 1. Images: keyproxy from docker/Dockerfile (as docker/smoke.sh builds it), Redis, the stand-in.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
format=()
[ "$engine" = podman ] && format=(--format docker)
keyproxy_image=localhost/keyproxy:team-smoke
started=$SECONDS
build "$keyproxy_image" . -f docker/Dockerfile "${format[@]}" --build-arg "VERSION=$version"
pass "keyproxy image builds from docker/Dockerfile in $((SECONDS - started)) s"
if [ -n "${SMOKE_OFFLINE:-}" ]; then
    debian=localhost/bookworm-minbase:12
    redis_image=localhost/keyproxy-redis:7
    build "$redis_image" docker/redis -f docker/redis/Dockerfile --build-arg "BASE=$debian"
    pass "Redis stand-in $redis_image builds from docker/redis/Dockerfile"
else
    debian=docker.io/library/debian:bookworm-slim
    redis_image=docker.io/library/redis:7-alpine
fi
mkdir -p "$work/mock-image" "$work/mock"
cp docker/smoke-mock.py "$work/mock-image/"
cat >"$work/mock-image/Containerfile" <<EOF
FROM $debian
RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*
COPY smoke-mock.py /smoke-mock.py
EOF
build localhost/keyproxy-smoke-provider:1 "$work/mock-image" -f "$work/mock-image/Containerfile"

# 2. The folder Compose runs in: the file as written but for its build context, and what it
# asks for beside it.
key_a=sk-or-v1-$(random_hex 32)
key_b=sk-or-v1-$(random_hex 32)
fingerprint() { echo "${1:0:8}...${1: -8}"; }
agent=$(random_hex 24)
ops=$(random_hex 24)
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
sed "s|^    context: \.\.$|    context: $root|" docker/compose.team.yaml >"$work/compose.team.yaml"
check "the copy differs from docker/compose.team.yaml only in its build context" \
    [ "$(diff docker/compose.team.yaml "$work/compose.team.yaml" | grep -c '^>')" = 1 ]
mkdir -p "$work/compose-team"
# The shipped config with the route to the stand-in, the agent's token and a $1.00 budget
# reserving $0.30, plus a client without limits for the key-health step.
sed -e 's|^provider = "openrouter"$|upstream = "http://provider:8080"\nprofile = "openrouter:default"|' \
    -e "s|^token_sha256 = \"0*\"$|token_sha256 = \"$(sha "$agent")\"|" \
    -e 's|^budget_usd = 10.0$|budget_usd = 1.0\nreserve_usd = 0.3|' \
    docker/compose-team/keyproxy.toml >"$work/compose-team/keyproxy.toml"
cat >>"$work/compose-team/keyproxy.toml" <<EOF

[[clients]]
name = "ops"
token_sha256 = "$(sha "$ops")"
profiles = ["openrouter:default"]
EOF
check "the shipped compose-team/keyproxy.toml took the run's three changes" \
    [ "$(diff docker/compose-team/keyproxy.toml "$work/compose-team/keyproxy.toml" | grep -c '^>')" = 10 ]
# The shipped keys file (the secret through key_file) and a second key, so there is a pool.
{ cat docker/compose-team/keys.toml; printf 'key = "%s"\n' "$key_b"; } >"$work/compose-team/keys.toml"
chmod 644 "$work/compose-team/keyproxy.toml"
(umask 027 && printf %s "$key_a" >"$work/openrouter_key")
a_port=$(free_port)
b_port=$(free_port)
(umask 077 && cat >"$work/.env" <<EOF
KEYPROXY_GID=$(id -g)
REDIS_PASSWORD=$(random_hex 16)
KEYPROXY_IMAGE=$keyproxy_image
REDIS_IMAGE=$redis_image
KEYPROXY_A_PORT=$a_port
KEYPROXY_B_PORT=$b_port
EOF
)
cat >"$work/mock.yaml" <<EOF
services:
  provider:
    image: localhost/keyproxy-smoke-provider:1
    command: ["python3", "/smoke-mock.py", "/mock/port", "/mock/seen"]
    environment:
      MOCK_BIND: 0.0.0.0
      MOCK_PORT: "8080"
      MOCK_COST: "0.3"
      MOCK_REFUSE: /mock/refuse
    volumes:
      - ./mock:/mock
EOF

# 3. Up: Redis, both replicas, the stand-in.
if ! comp up -d; then
    tail -n 30 "$work/compose.log"
    fail "$engine compose up"
    exit 1
fi
a=http://127.0.0.1:$a_port
b=http://127.0.0.1:$b_port
get() { curl -s -H "authorization: Bearer $ops" "$@"; }
shared_ready() { # both replicas see the store and each other
    [ "$(get "$1/_keyproxy/status" | jq -r '.shared | "\(.reachable) \(.replicas)"')" = "true 2" ]
}
if wait_for 60 'shared_ready "$a" && shared_ready "$b" && test -s "$work/mock/port"'; then
    pass "both replicas serve and see Redis and each other ($(get "$a/_keyproxy/status" | jq -c .shared))"
else
    (cd "$work" && "${compose[@]}" -p "$run_id" -f compose.team.yaml -f mock.yaml logs 2>&1 | tail -n 30)
    fail "both replicas serve and see Redis and each other"
    exit 1
fi

chat() { # chat URL TOKEN: one completion; prints the status and the x-keyproxy-error
    curl -s -o /dev/null -D - -H "authorization: Bearer $2" -H 'content-type: application/json' \
        -d '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' \
        "$1/api/v1/chat/completions" | tr -d '\r' |
        awk 'NR == 1 { s = $2 } tolower($1) == "x-keyproxy-error:" { e = " " $2 } END { print s e }'
}

# 4. Key health: the provider refuses key A with 429 and Retry-After: 30. Replica A meets it
# (and answers with key B); replica B rests key A too, within a second, and sends only key B.
echo "Bearer $key_a" >"$work/mock/refuse"
sent_a() { cat "$work/mock/seen" 2>/dev/null | grep -cxF "Bearer $key_a"; }
for _ in 1 2 3; do
    [ "$(sent_a)" -gt 0 ] && break
    chat "$a" "$ops" >/dev/null
done
started=$(date +%s%N)
resting_on_b() {
    get "$b/_keyproxy/status" |
        jq -e --arg fp "$(fingerprint "$key_a")" \
            '[.profiles[].keys[] | select(.fingerprint == $fp and .state != "active")] | length > 0' >/dev/null
}
if [ "$(sent_a)" -gt 0 ] && wait_for 5 resting_on_b; then
    waited=$((($(date +%s%N) - started) / 1000000))
    check "the key replica A was refused (429, Retry-After: 30) rests on replica B ${waited} ms later" \
        [ "$waited" -lt 1500 ]
else
    fail "the key replica A was refused rests on replica B"
fi
before=$(sent_a)
statuses=$(for _ in 1 2 3 4; do chat "$b" "$ops"; done | tr '\n' ' ')
check "replica B answers ($statuses) and never sends the key A rested" \
    [ "$statuses" = "200 200 200 200 " -a "$(sent_a)" = "$before" ]

# 5. The budget: $1.00 with $0.30 reserved per request and $0.30 per answer is four answers
# across both replicas in all (each alone would give four), then a local 429 on either.
statuses=$(for i in 1 2 3 4 5 6; do
    if [ $((i % 2)) = 1 ]; then chat "$a" "$agent"; else chat "$b" "$agent"; fi
done | tr '\n' ',')
check "a \$1.00 budget across both replicas, in turn A, B, ...: $statuses" \
    [ "$statuses" = "200,200,200,200,429 budget-exhausted,429 budget-exhausted," ]

# Redis restarted (its append-only file on the volume): the spent budget is still spent.
comp restart redis
if wait_for 30 'shared_ready "$a" && shared_ready "$b"'; then
    statuses=$(chat "$a" "$agent"),$(chat "$b" "$agent")
    check "Redis restarted: both replicas find it again and the budget stays spent ($statuses)" \
        [ "$statuses" = "429 budget-exhausted,429 budget-exhausted" ]
else
    fail "Redis restarted: both replicas find it again"
fi

# 6. Usage: keyproxy usage on replica B counts what replica A answered too.
usage() { # usage [--local]: replica B's usage --json, asked inside its container
    (cd "$work" && "${compose[@]}" -p "$run_id" -f compose.team.yaml -f mock.yaml \
        exec -T keyproxy-b keyproxy usage --json --token "$agent" "$@") 2>/dev/null
}
agent_today() { jq -r '.today.by_client.agent // {} | "\(.requests // 0) \(.cost_usd // 0)"'; }
group=
wait_for 10 'group=$(usage | agent_today); [ "$group" = "4 1.2" ]'
own=$(usage --local | agent_today)
check "keyproxy usage on replica B: the agent's 4 answers and \$1.2 of both replicas (B alone: $own)" \
    [ "$group" = "4 1.2" -a "$own" = "2 0.6" ]
(cd "$work" && "${compose[@]}" -p "$run_id" -f compose.team.yaml -f mock.yaml \
    exec -T keyproxy-b keyproxy usage --token "$agent") 2>/dev/null | sed 's/^/     /'

# 7. No key and no Redis password in any container's logs (which are not empty).
(cd "$work" && "${compose[@]}" -p "$run_id" -f compose.team.yaml -f mock.yaml logs) >"$work/logs" 2>&1
password=$(sed -n 's/^REDIS_PASSWORD=//p' "$work/.env")
leaks=0
for secret in "$key_a" "$key_b" "$password" "$agent" "$ops"; do
    grep -qF "$secret" "$work/logs" && leaks=$((leaks + 1))
done
check "no key, token or Redis password in the logs ($(grep -c '"proxied"' "$work/logs") proxied)" \
    [ "$leaks" = 0 -a "$(grep -c '"proxied"' "$work/logs")" -ge 10 ]

if [ "$failures" = 0 ]; then
    echo "smoke-team: all steps passed"
else
    echo "--- compose said:"
    tail -n 20 "$work/compose.log"
    echo "smoke-team: $failures step(s) failed"
    exit 1
fi
