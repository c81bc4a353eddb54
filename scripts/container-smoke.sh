#!/usr/bin/env bash
# Container smoke test: build the release image and run it, as CI does on a machine with
# Debian's buildah and podman but no Docker engine and no registry for base images.
#
#  1. installs what is missing (buildah, podman, runc, musl-tools, ...; the musl target),
#  2. builds a static musl binary with cargo and checks it is static,
#  3. builds deploy/Containerfile.runtime (the final stage of Containerfile, FROM scratch)
#     with `buildah bud` from a prepared context, so no base image is pulled,
#  4. fails when the image is 20 MB (20,000,000 bytes) or more,
#  5. runs it with `podman --runtime runc run --network=host` (cgroupfs, no default
#     ulimits: what works here), Discord and Slack targets pointing at a local sink,
#  6. runs the image's HEALTHCHECK (which finds the admin port through the config), POSTs a
#     Crisp event, waits until both deliveries reach the sink, and checks that the visitor's
#     message is not in the container's log (the console target is off by default),
#  7. stops it with SIGTERM and checks it exited 0, then cleans everything up.
#
# Run as root from anywhere: `bash scripts/container-smoke.sh`. Prints a summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
triple=x86_64-unknown-linux-musl
max_bytes=20000000
id="crisp-smoke-$$-$RANDOM"
image="localhost/$id:latest"
container="$id"
volume="$id-data"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/crisp-smoke.XXXXXX")"
sink_pid=""
image_built=""

step() { echo "-- container smoke: $*"; }
fail() {
  echo "container smoke: FAILED: $*" >&2
  exit 1
}

cleanup() {
  local rc=$?
  set +e
  if [[ $rc -ne 0 ]] && podman container exists "$container" 2>/dev/null; then
    echo "---- container logs (last 60 lines)" >&2
    podman logs --tail 60 "$container" >&2 2>&1
  fi
  if [[ $rc -ne 0 && -s "$tmp/sink.log" ]]; then
    echo "---- sink log" >&2
    cat "$tmp/sink.log" >&2
  fi
  if command -v podman >/dev/null 2>&1; then
    podman rm -f -t 0 "$container" >/dev/null 2>&1
    podman volume rm -f "$volume" >/dev/null 2>&1
    [[ -n $image_built ]] && podman rmi -f "$image" >/dev/null 2>&1
  fi
  [[ -n $sink_pid ]] && kill "$sink_pid" 2>/dev/null && wait "$sink_pid" 2>/dev/null
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
missing=()
for pair in buildah:buildah podman:podman runc:runc musl-gcc:musl-tools file:file \
  curl:curl python3:python3 strip:binutils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >"$tmp/apt.log" 2>&1 || {
    cat "$tmp/apt.log" >&2
    fail "apt-get install ${missing[*]}"
  }
fi
if ! grep -qx "$triple" <<<"$(rustup target list --installed 2>/dev/null)"; then
  step "adding the $triple target"
  rustup target add "$triple"
fi
# podman settings that work on this kind of machine: runc with cgroupfs, and no default
# ulimits (crun and the default ulimits are refused here).
cat >"$tmp/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
EOF
export CONTAINERS_CONF="$tmp/containers.conf"
# Without systemd, podman cannot add a timer for the image's HEALTHCHECK and says so on
# every run and stop; the smoke test runs the healthcheck itself (`podman healthcheck run`).
pod() { podman --runtime runc "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }

# ---------------------------------------------------------------- drift checks
# The final stage of Containerfile must be deploy/Containerfile.runtime with its sources
# taken from the build stage's /ctx.
final_stage() { sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' "$1" | awk '/^FROM scratch/{keep=1} keep'; }
diff -u <(final_stage deploy/Containerfile.runtime) \
  <(final_stage Containerfile | sed -e 's|--from=build ||' -e 's| /ctx/| |') >"$tmp/stage.diff" || {
  cat "$tmp/stage.diff" >&2
  fail "the final stage of Containerfile differs from deploy/Containerfile.runtime"
}
# The container config keeps relay.yaml's targets and routes; only the console's default
# differs (off in the container: it would print visitor messages to the container's log).
targets_and_routes() {
  sed -n '/^targets:/,$p' "$1" | sed -e '/^[[:space:]]*#/d' -e 's/CRISP_CONSOLE:-[a-z]*/CRISP_CONSOLE:-DEFAULT/'
}
grep -q 'CRISP_CONSOLE:-false' deploy/relay.container.yaml ||
  fail "the container config's console target must be off by default (CRISP_CONSOLE:-false)"
diff -u <(targets_and_routes relay.yaml) <(targets_and_routes deploy/relay.container.yaml) \
  >"$tmp/config.diff" || {
  cat "$tmp/config.diff" >&2
  fail "deploy/relay.container.yaml's targets/routes differ from relay.yaml's"
}

# ---------------------------------------------------------------- static binary
step "cargo build --release --target $triple"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$triple"
bin="target/$triple/release/crisp-relay"
kind="$(file -b "$bin")"
case "$kind" in
  *dynamically\ linked* | *interpreter*) fail "$bin is not static: $kind" ;;
  *static*) ;;
  *) fail "cannot tell that $bin is static: $kind" ;;
esac

# ---------------------------------------------------------------- image
ctx="$tmp/context"
mkdir -p "$ctx/data"
cp "$bin" "$ctx/crisp-relay"
strip "$ctx/crisp-relay"
cp deploy/relay.container.yaml "$ctx/relay.yaml"
cp -r templates "$ctx/templates"
step "buildah bud (FROM scratch, no base image)"
# docker format: the OCI image format has no HEALTHCHECK.
buildah bud --quiet --format docker --layers=false -f deploy/Containerfile.runtime -t "$image" "$ctx" >/dev/null
image_built=1
size="$(podman image inspect --format '{{.Size}}' "$image")"
size_mb="$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1000000 }')"
step "image $image: $size bytes ($size_mb MB)"
((size < max_bytes)) || fail "the image is $size bytes: not under $max_bytes"
health="$(podman image inspect --format '{{json .Config.Healthcheck}}' "$image" 2>/dev/null || true)"
[[ $health == *healthcheck* ]] || fail "the image has no HEALTHCHECK (got: $health)"
user="$(podman image inspect --format '{{.Config.User}}' "$image")"
[[ $user == 65532:65532 ]] || fail "the image runs as '$user', not 65532:65532"

# The image's own config validates with only the key set (`check` via CRISP_RELAY_CONFIG).
pod run --rm --network=host -e CRISP_HOOK_KEY=x "$image" check >"$tmp/check.out" 2>&1 || {
  cat "$tmp/check.out" >&2
  fail "crisp-relay check of the image's config failed"
}

# ---------------------------------------------------------------- sink
# A destination that answers every POST `200 ok` (Slack wants the body `ok`) and records
# one JSON line {path, body} per request.
cat >"$tmp/sink.py" <<'EOF'
import http.server, json, sys
out, portfile = sys.argv[1], sys.argv[2]
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(out, "a") as f:
            f.write(json.dumps({"path": self.path, "body": body.decode("utf-8", "replace")}) + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Sink)
open(portfile, "w").write(str(server.server_address[1]))
server.serve_forever()
EOF
: >"$tmp/received.jsonl"
python3 "$tmp/sink.py" "$tmp/received.jsonl" "$tmp/sink.port" >"$tmp/sink.log" 2>&1 &
sink_pid=$!
for _ in $(seq 100); do
  [[ -s "$tmp/sink.port" ]] && break
  sleep 0.1
done
[[ -s "$tmp/sink.port" ]] || fail "the sink did not start"
sink_port="$(cat "$tmp/sink.port")"

# Two free ports for the relay (it shares the host's network).
read -r ingest_port admin_port < <(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')

# ---------------------------------------------------------------- run
key="smoke-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
step "podman run (ingest 127.0.0.1:$ingest_port, admin 127.0.0.1:$admin_port, sink :$sink_port)"
pod run -d --name "$container" --network=host \
  -v "$volume:/data" \
  -e CRISP_HOOK_KEY="$key" \
  -e CRISP_LISTEN="127.0.0.1:$ingest_port" \
  -e CRISP_ADMIN_LISTEN="127.0.0.1:$admin_port" \
  -e DISCORD_WEBHOOK_URL="http://127.0.0.1:$sink_port/api/webhooks/123456/smoke-token" \
  -e SLACK_WEBHOOK_URL="http://127.0.0.1:$sink_port/services/T000/B000/smoke" \
  -e RUST_LOG=info \
  "$image" >/dev/null

ready=""
for _ in $(seq 150); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/readyz" 2>/dev/null; then
    ready=1
    break
  fi
  [[ "$(podman inspect --format '{{.State.Running}}' "$container")" == true ]] ||
    fail "the container exited during start-up"
  sleep 0.2
done
[[ -n $ready ]] || fail "the relay was not ready within 30 s"
podman exec "$container" /crisp-relay healthcheck >/dev/null ||
  fail "crisp-relay healthcheck inside the container failed"
pod healthcheck run "$container" >/dev/null 2>"$tmp/health.err" || {
  cat "$tmp/health.err" >&2
  fail "podman healthcheck run (the image's HEALTHCHECK) failed"
}

# ---------------------------------------------------------------- one event
step "POST a Crisp event"
answer="$(curl -sS -w ' %{http_code}' -H 'Content-Type: application/json' \
  --data-binary @tests/fixtures/crisp-events/message_send_text_basic.json \
  "http://127.0.0.1:$ingest_port/crisp/hooks?key=$key")"
[[ $answer == *' 200' ]] || fail "ingest answered: $answer"
[[ $answer == *'"deliveries":2'* ]] || fail "expected 2 deliveries (discord, slack; the console is off): $answer"
bad="$(curl -sS -o /dev/null -w '%{http_code}' --data-binary '{}' \
  "http://127.0.0.1:$ingest_port/crisp/hooks?key=wrong")"
[[ $bad == 401 ]] || fail "a wrong key got $bad, not 401"

delivered=""
for _ in $(seq 150); do
  if grep -q '/api/v10/webhooks/123456/smoke-token' "$tmp/received.jsonl" &&
    grep -q '/services/T000/B000/smoke' "$tmp/received.jsonl"; then
    delivered=1
    break
  fi
  sleep 0.2
done
[[ -n $delivered ]] || fail "the deliveries did not arrive within 30 s: $(cat "$tmp/received.jsonl")"
grep -q 'Is the Pro plan billed monthly or yearly' "$tmp/received.jsonl" ||
  fail "the deliveries do not carry the visitor's message"
received="$(wc -l <"$tmp/received.jsonl")"
! grep -q 'Is the Pro plan billed monthly or yearly' <<<"$(podman logs "$container" 2>&1)" ||
  fail "the visitor's message reached the container's log (personal data)"

# ---------------------------------------------------------------- SIGTERM
step "podman stop (SIGTERM)"
stop_start=$SECONDS
pod stop -t 15 "$container" >/dev/null
stop_secs=$((SECONDS - stop_start))
code="$(podman inspect --format '{{.State.ExitCode}}' "$container")"
[[ $code == 0 ]] || fail "the relay exited $code after SIGTERM, not 0"
grep -q 'signal received; shutting down' <<<"$(podman logs "$container" 2>&1)" ||
  fail "the relay did not log a graceful shutdown"
((stop_secs < 15)) || fail "the relay took ${stop_secs}s to stop (killed after the timeout?)"

echo "container smoke: ok — image $size_mb MB ($size bytes, FROM scratch, static musl)," \
  "$received deliveries received, SIGTERM exit 0 in ${stop_secs}s, total $((SECONDS - started))s"
