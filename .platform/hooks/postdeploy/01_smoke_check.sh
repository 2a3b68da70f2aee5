#!/usr/bin/env bash
# Fails the deploy unless the app answers /health on 127.0.0.1:$PORT, and
# through the platform's nginx on port 80 (which proxies to that port).
set -euo pipefail
port="${PORT:-5000}"
for url in "http://127.0.0.1:${port}/health" "http://127.0.0.1/health"; do
  for attempt in $(seq 1 30); do
    if curl -fsS --max-time 2 "$url" >/dev/null; then
      echo "smoke check: $url answers"
      break
    fi
    if [ "$attempt" -eq 30 ]; then
      echo "smoke check: $url did not answer within 30 s" >&2
      exit 1
    fi
    sleep 1
  done
done
