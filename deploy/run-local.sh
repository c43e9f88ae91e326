#!/usr/bin/env bash
# make run: two mockllm upstreams, a control plane on SQLite under .data/ bootstrapped from
# deploy/examples/quickstart.yaml, and one proxy fed by it on 127.0.0.1:3000. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin}      # where make build put the binaries
DATA=${DATA:-.data}  # control-plane database, proxy state and logs
mkdir -p "$DATA/proxy"
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping…"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

wait_http() { # url, what
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run: $2 did not become ready at $1" >&2
  exit 1
}

"$BIN/mockllm" --addr 127.0.0.1:8080 --name mock-a > "$DATA/mock-a.log" 2>&1 & pids+=($!)
"$BIN/mockllm" --addr 127.0.0.1:8081 --name mock-b > "$DATA/mock-b.log" 2>&1 & pids+=($!)
"$BIN/llmproxy-controlplane" --store "sqlite:$DATA/controlplane.db" \
  --bootstrap deploy/examples/quickstart.yaml > "$DATA/controlplane.log" 2>&1 & pids+=($!)
wait_http http://127.0.0.1:18001/health "control plane"
"$BIN/llmproxy" --control-plane 127.0.0.1:18000 --node-id local-proxy \
  --state-dir "$DATA/proxy" --admin-addr 127.0.0.1:9000 > "$DATA/proxy.log" 2>&1 & pids+=($!)
wait_http http://127.0.0.1:9000/ready "proxy"

cat <<MSG

LLMProxy is running (logs in $DATA/*.log):
  proxy          http://127.0.0.1:3000   (admin: http://127.0.0.1:9000/config)
  control plane  grpc 127.0.0.1:18000, REST http://127.0.0.1:18001/api/v1/
  console        http://127.0.0.1:18001/ui/   (log in with LLMPROXY_ADMIN_AUTH_TOKEN; when unset, with anything)
  upstreams      mockllm "mock-a" :8080, "mock-b" :8081

Try a chat completion (the X-Mock-Upstream header says which upstream answered):
  curl -si http://127.0.0.1:3000/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'

Streaming:
  curl -N http://127.0.0.1:3000/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello"}]}'

Send chat completions to the other group, then see the fleet follow:
  bin/llmproxyctl route set quickstart /v1/chat/completions alt
  bin/llmproxyctl status

Ctrl-C stops everything.
MSG
wait
