#!/usr/bin/env bash
# Quickstart: from a fresh Debian machine with Go to a running Berth with the
# example agent deployed and invoked. Run as root (sandboxes need it):
#   sudo bash scripts/quickstart.sh
# Berth keeps running in the background afterwards; its log is in $DATA/berth.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

ADDR=${BERTH_LISTEN:-127.0.0.1:4780}
DATA=${BERTH_DATA_DIR:-/var/lib/berth}
URL=http://$ADDR

need=()
for cmd in runc python3 curl; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "==> building berth"
go build -o bin/berth ./cmd/berth

if ! curl -fsS "$URL/berth/v1/health" >/dev/null 2>&1; then
  echo "==> starting berth server on $URL (data in $DATA)"
  mkdir -p "$DATA"
  nohup bin/berth server --listen "$ADDR" --data-dir "$DATA" >>"$DATA/berth.log" 2>&1 &
  for _ in $(seq 100); do curl -fsS "$URL/berth/v1/health" >/dev/null 2>&1 && break; sleep 0.1; done
fi

echo "==> uploading the example agent's code"
bundle=$(mktemp --suffix=.zip)
(cd examples/echo-agent && python3 -m zipfile -c "$bundle" main.py)
curl -fsS -X PUT --data-binary "@$bundle" "$URL/berth/v1/code/examples/echo-agent.zip"; echo
rm -f "$bundle"

echo "==> creating the agent runtime (AgentCore CreateAgentRuntime)"
id=$(curl -sS -X PUT "$URL/runtimes/" -H 'Content-Type: application/json' -d '{
  "agentRuntimeName": "echo_agent",
  "roleArn": "arn:aws:iam::000000000000:role/berth",
  "agentRuntimeArtifact": {"codeConfiguration": {
     "code": {"s3": {"bucket": "examples", "prefix": "echo-agent.zip"}},
     "runtime": "PYTHON_3_11", "entryPoint": ["main.py"]}}
}' | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("agentRuntimeId") or "")')
if [ -z "$id" ]; then
  # Already created by an earlier run: find it.
  id=$(curl -fsS -X POST "$URL/runtimes/" | python3 -c 'import json,sys; print(next(r["agentRuntimeId"] for r in json.load(sys.stdin)["agentRuntimes"] if r["agentRuntimeName"]=="echo_agent"))')
fi
for _ in $(seq 100); do
  status=$(curl -fsS "$URL/runtimes/$id/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [ "$status" = READY ] && break
  sleep 0.1
done
echo "runtime $id is $status"

arn="arn:aws:bedrock-agentcore:us-east-1:000000000000:runtime/$id"
enc=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$arn")
session=quickstart-session-$(date +%s)-0000000000000000
echo "==> invoking it (AgentCore InvokeAgentRuntime), streaming"
curl -sS -N -X POST "$URL/runtimes/$enc/invocations" \
  -H 'Content-Type: application/json' -H 'Accept: text/event-stream' \
  -H "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: $session" \
  -d '{"prompt": "Hello from Berth", "stream": true}'
echo "==> live sessions"
curl -fsS "$URL/berth/v1/sessions"; echo
cat <<TXT

Berth is running on $URL. Point the AWS SDKs at it with
  AWS_ENDPOINT_URL_BEDROCK_AGENTCORE=$URL AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL=$URL
Stop it with: pkill -f 'bin/berth server'
TXT
