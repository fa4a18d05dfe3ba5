#!/usr/bin/env bash
# The offline demo on the seed's cluster (no root): worker1's flows, then one packet traced through them.
set -euo pipefail
DIR=${1:-examples/seed}
echo "== antctl --cluster $DIR get ovsflows --node worker1 -o ofctl"
antctl --cluster "$DIR" get ovsflows --node worker1 -o ofctl
echo
echo "== antctl --cluster $DIR trace-packet --node worker1 -S default/frontend -D default/backend2 -f tcp,tp_dst=80"
antctl --cluster "$DIR" trace-packet --node worker1 -S default/frontend -D default/backend2 -f tcp,tp_dst=80
