#!/usr/bin/env bash
# Configuration changes restart the app too: run the same smoke check.
set -euo pipefail
exec "$(dirname "$0")/../../hooks/postdeploy/01_smoke_check.sh"
