#!/usr/bin/env bash
# Quickstart: from a fresh Debian machine with Go to a running Berth and an
# agent created, deployed and invoked with the berth CLI. Run as root
# (sandboxes need it):
#   sudo bash scripts/quickstart.sh
# Berth keeps running in the background afterwards; its log is in $DATA/berth.log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH=$ROOT/bin:$PATH:/usr/local/go/bin

ADDR=${BERTH_LISTEN:-127.0.0.1:4780}
DATA=${BERTH_DATA_DIR:-/var/lib/berth}
WORK=${BERTH_QUICKSTART_DIR:-$HOME/berth-quickstart}
export BERTH_ENDPOINT=http://$ADDR

need=()
for cmd in runc python3 curl; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "==> building bin/berth"
go build -o bin/berth ./cmd/berth

if ! curl -fsS "$BERTH_ENDPOINT/berth/v1/health" >/dev/null 2>&1; then
  echo "==> berth server &   (on $BERTH_ENDPOINT, data in $DATA)"
  mkdir -p "$DATA"
  # The log holds the root key printed at first start: keep it private.
  touch "$DATA/berth.log" && chmod 600 "$DATA/berth.log"
  nohup berth server --listen "$ADDR" --data-dir "$DATA" >>"$DATA/berth.log" 2>&1 &
  echo $! >"$DATA/berth.pid"
  for _ in $(seq 100); do curl -fsS "$BERTH_ENDPOINT/berth/v1/health" >/dev/null 2>&1 && break; sleep 0.1; done
fi

# Every call is signed with the root key Berth printed when it first started.
if [ -z "${AWS_ACCESS_KEY_ID:-}" ]; then
  for _ in $(seq 50); do grep -q AWS_SECRET_ACCESS_KEY "$DATA/berth.log" 2>/dev/null && break; sleep 0.1; done
  export AWS_ACCESS_KEY_ID=$(sed -n 's/^ *AWS_ACCESS_KEY_ID=//p' "$DATA/berth.log" | head -1)
  export AWS_SECRET_ACCESS_KEY=$(sed -n 's/^ *AWS_SECRET_ACCESS_KEY=//p' "$DATA/berth.log" | head -1)
  if [ -z "$AWS_ACCESS_KEY_ID" ]; then
    echo "no root key in $DATA/berth.log: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to a key from 'berth keys create'" >&2
    exit 1
  fi
fi

mkdir -p "$WORK"
cd "$WORK"
if [ ! -d HelloAgent ]; then
  echo "==> berth create --name HelloAgent   (in $WORK)"
  berth create --name HelloAgent
fi
cd HelloAgent

echo "==> berth deploy"
berth deploy

echo "==> berth invoke \"Hello from Berth\""
err=$(mktemp)
berth invoke "Hello from Berth" 2>"$err" || { cat "$err" >&2; exit 1; }
cat "$err" >&2
session=$(sed -n 's/^session: \([^ ]*\).*/\1/p' "$err")
rm -f "$err"

echo "==> berth invoke --session-id $session \"And again\""
berth invoke --session-id "$session" "And again"

echo "==> berth status"
berth status

cat <<TXT

Berth is running on $BERTH_ENDPOINT; the project is in $WORK/HelloAgent.
  cd $WORK/HelloAgent && export PATH=$ROOT/bin:\$PATH BERTH_ENDPOINT=$BERTH_ENDPOINT
  export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=...   # the root key, in $DATA/berth.log
  berth dev            # run the agent locally, restarted on every change
  berth logs --follow  # what the agent prints, per session
  berth destroy        # remove the deployment
The AWS SDKs work against it too: AWS_ENDPOINT_URL_BEDROCK_AGENTCORE=$BERTH_ENDPOINT AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL=$BERTH_ENDPOINT
TXT
if [ -f "$DATA/berth.pid" ]; then
  echo "Stop the server with: kill $(cat "$DATA/berth.pid")"
fi
