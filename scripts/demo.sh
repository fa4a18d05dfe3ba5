#!/usr/bin/env bash
# The seed's cluster, live: master, worker1 and worker2 as namespaces with their own OVS and agent,
# frontend/backend1/backend2 Pods, the backendsvc Service and the two NetworkPolicies. Then the
# seed's demo: `curl backendsvc` from frontend. The lab stays up afterwards; `pyantrea lab down`
# removes it.
set -euo pipefail
DIR=${1:-examples/seed}
if [ "$(id -u)" -ne 0 ]; then
  echo "the live lab needs root (network namespaces); for the offline demo run: make offline-demo" >&2
  exit 1
fi
pyantrea lab up "$DIR"
echo
echo "== frontend: curl backendsvc (twice, as in the seed article)"
for i in 1 2; do
  echo "/ # curl backendsvc"
  pyantrea lab exec default/frontend -- curl -s -m 5 backendsvc
done
echo
echo "== 20 more requests from frontend to backendsvc, by answering backend:"
for i in $(seq 20); do pyantrea lab exec default/frontend -- curl -s -m 5 backendsvc || echo "FAILED"; done \
  | sed -E 's/.* - (backend[0-9]+) - .*/\1/' | sort | uniq -c
echo
echo "The lab is up. Try:"
echo "  antctl get ovsflows --node worker1 -o ofctl"
echo "  antctl traceflow -S default/frontend -D default/backendsvc -f tcp,tcp_dst=80 -o text"
echo "  pyantrea lab exec worker1 -- ovs-ofctl dump-flows br-int"
echo "  pyantrea lab down"
