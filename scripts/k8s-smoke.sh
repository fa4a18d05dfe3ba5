#!/usr/bin/env bash
# Smoke test of the Kubernetes control plane that scripts/build-kubernetes.sh
# builds: in a temporary directory, start etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler on 127.0.0.1 only, check that each
# is healthy and that kubectl talks to the API server, then stop every process
# this script started (by pid) and remove the directory.
#
# Network: everything listens on and connects to 127.0.0.1. When it can (root,
# `unshare`), the script runs itself in a new network namespace that has only
# a loopback interface, so no packet can leave 127.0.0.0/8 at all
# (PYANTREA_K8S_SMOKE_NETNS=0 turns that off).
#
#   PYANTREA_K8S_BIN   where the programs are (default: the build cache for
#                      the version pinned in build/kubernetes/go.mod)
#   PYANTREA_K8S_ETCD  the etcd program (default: $PYANTREA_K8S_BIN/etcd)
#   PYANTREA_K8S_SMOKE_LOGS  a directory to copy the programs' logs to
#   PYANTREA_K8S_SMOKE_RUN_SECONDS  how long the controller manager and the
#                      scheduler run before they are checked (default 10)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf 'k8s-smoke: %s\n' "$*"; }
die() { printf 'k8s-smoke: FAILED: %s\n' "$*" >&2; exit 1; }

# --- a network namespace with loopback only ----------------------------------
if [[ ${PYANTREA_K8S_SMOKE_NETNS:-1} != 0 && -z ${_PYANTREA_K8S_SMOKE_IN_NETNS:-} ]] &&
	command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 &&
	unshare --net true 2>/dev/null; then
	exec env _PYANTREA_K8S_SMOKE_IN_NETNS=1 unshare --net -- \
		bash -c 'ip link set lo up && exec bash "$0" "$@"' "${BASH_SOURCE[0]}" "$@"
fi
if [[ -n ${_PYANTREA_K8S_SMOKE_IN_NETNS:-} ]]; then
	say "network: private namespace, interfaces: $(ip -br addr | awk '{printf "%s %s %s; ", $1, $3, $4}')"
else
	say "network: host namespace (no unshare); everything is still bound to 127.0.0.1"
fi

# --- programs -----------------------------------------------------------------
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$root/build/kubernetes/go.mod")
bin=${PYANTREA_K8S_BIN:-${PYANTREA_K8S_CACHE:-$HOME/.cache/pyantrea/kubernetes}/${version#v}/bin}
etcd=${PYANTREA_K8S_ETCD:-$bin/etcd}
for p in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl; do
	[[ -x $bin/$p ]] || die "$bin/$p is missing: run 'make kubernetes' (scripts/build-kubernetes.sh) first"
done
[[ -x $etcd ]] || die "no etcd at $etcd: run 'make kubernetes' or set PYANTREA_K8S_ETCD"
for p in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
	say "$p --version: $("$bin/$p" --version)"
done
say "kubectl version --client: $("$bin/kubectl" version --client | head -n1)"
say "etcd --version: $("$etcd" --version | head -n1)"
for t in openssl curl python3; do
	command -v $t >/dev/null 2>&1 || die "$t is needed"
done

# --- a temporary directory, and cleanup of everything started -----------------
dir=$(mktemp -d "${TMPDIR:-/tmp}/pyantrea-k8s-smoke.XXXXXX")
pids=()   # in start order; stopped in reverse
names=()
cleanup() {
	local rc=$? i pid n
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		pid=${pids[i]}
		kill -0 "$pid" 2>/dev/null || continue
		kill -TERM "$pid" 2>/dev/null || true
		for ((n = 0; n < 100; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			say "${names[i]} (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
		say "stopped ${names[i]} (pid $pid)"
	done
	if [[ -n ${PYANTREA_K8S_SMOKE_LOGS:-} ]]; then
		mkdir -p "$PYANTREA_K8S_SMOKE_LOGS" && cp "$dir"/*.log "$PYANTREA_K8S_SMOKE_LOGS"/ 2>/dev/null &&
			say "logs kept in $PYANTREA_K8S_SMOKE_LOGS"
	fi
	if ((rc != 0)); then
		for f in "$dir"/*.log; do
			[[ -f $f && $f != "$dir/openssl.log" ]] || continue
			printf '\n--- last lines of %s ---\n' "$(basename "$f")" >&2
			tail -n 25 "$f" >&2
		done
	fi
	rm -rf "$dir"
	say "removed $dir"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # name, then the command; its output goes to $dir/<name>.log
	local name=$1
	shift
	"$@" >"$dir/$name.log" 2>&1 &
	pids+=($!)
	names+=("$name")
	say "started $name (pid $!)"
}
alive() { # index into pids
	kill -0 "${pids[$1]}" 2>/dev/null || die "${names[$1]} exited early (see its log below)"
}
wait_for() { # what, seconds, index of the process, command...
	local what=$1 secs=$2 idx=$3 t0=$SECONDS
	shift 3
	until "$@" >/dev/null 2>&1; do
		alive "$idx"
		((SECONDS - t0 < secs)) || die "$what not reached in ${secs}s"
		sleep 0.5
	done
	say "$what after $((SECONDS - t0))s"
}

# Ports: ask the kernel for unused ones on 127.0.0.1.
read -r p_etcd p_peer p_api p_kcm p_sched < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
EOF
)
say "directory $dir; ports: etcd $p_etcd/$p_peer, apiserver $p_api, controller-manager $p_kcm, scheduler $p_sched"

# --- certificates ---------------------------------------------------------------
pki=$dir/pki
mkdir -p "$pki"
(
	cd "$pki"
	exec 2>"$dir/openssl.log"
	openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=pyantrea-smoke-ca" \
		-keyout ca.key -out ca.crt
	cert() { # name, subject, extensions
		openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr"
		printf '%s\n' "$3" >"$1.ext"
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
			-extfile "$1.ext" -out "$1.crt"
	}
	cert apiserver "/CN=kube-apiserver" \
		"subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
	cert admin "/O=system:masters/CN=pyantrea-smoke-admin" "extendedKeyUsage=clientAuth"
	cert controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
	cert scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
	# The front proxy's CA, which the API server publishes for the delegated
	# authentication of the controller manager and the scheduler.
	openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=pyantrea-smoke-front-proxy-ca" \
		-keyout front-proxy-ca.key -out front-proxy-ca.crt
	openssl genrsa -out sa.key 2048
	openssl rsa -in sa.key -pubout -out sa.pub
) >/dev/null || die "openssl failed: $(tail -n 5 "$dir/openssl.log")"
kubeconfig() { # name -> $dir/<name>.kubeconfig
	cat >"$dir/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smoke
  cluster:
    server: https://127.0.0.1:$p_api
    certificate-authority: $pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $pki/$1.crt
    client-key: $pki/$1.key
contexts:
- name: smoke
  context: {cluster: smoke, user: $1}
current-context: smoke
EOF
}
for u in admin controller-manager scheduler; do kubeconfig $u; done
say "certificates and kubeconfigs written (CA, front-proxy CA, apiserver serving cert, service-account key; clients: admin in system:masters, controller-manager, scheduler)"

# --- etcd -------------------------------------------------------------------
start etcd "$etcd" --name smoke --data-dir "$dir/etcd" \
	--listen-client-urls "http://127.0.0.1:$p_etcd" --advertise-client-urls "http://127.0.0.1:$p_etcd" \
	--listen-peer-urls "http://127.0.0.1:$p_peer" --initial-advertise-peer-urls "http://127.0.0.1:$p_peer" \
	--initial-cluster "smoke=http://127.0.0.1:$p_peer" --initial-cluster-state new
wait_for "etcd /health" 30 0 curl -fsS "http://127.0.0.1:$p_etcd/health"
say "etcd /version: $(curl -fsS "http://127.0.0.1:$p_etcd/version")"

# --- kube-apiserver -----------------------------------------------------------
start kube-apiserver "$bin/kube-apiserver" \
	--etcd-servers "http://127.0.0.1:$p_etcd" \
	--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$p_api" \
	--cert-dir "$dir/apiserver" \
	--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
	--client-ca-file "$pki/ca.crt" \
	--requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
	--requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
	--requestheader-extra-headers-prefix X-Remote-Extra- \
	--service-account-issuer https://kubernetes.default.svc.cluster.local \
	--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
	--service-cluster-ip-range 10.96.0.0/12 \
	--authorization-mode Node,RBAC \
	--endpoint-reconciler-type none
export KUBECONFIG=$dir/admin.kubeconfig
kubectl() { "$bin/kubectl" --cache-dir "$dir/kube-cache" "$@"; }
wait_for "kube-apiserver /readyz" 120 1 \
	curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "https://127.0.0.1:$p_api/readyz"

say '$ kubectl version'
kubectl version
say '$ kubectl get ns'
kubectl get ns
say '$ kubectl api-resources | head'
kubectl api-resources | head || true # head closes the pipe early
say '$ kubectl auth whoami'
kubectl auth whoami

# --- kube-controller-manager and kube-scheduler -----------------------------------
start kube-controller-manager "$bin/kube-controller-manager" \
	--kubeconfig "$dir/controller-manager.kubeconfig" \
	--authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
	--authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
	--bind-address 127.0.0.1 --secure-port "$p_kcm" --cert-dir "$dir/controller-manager" \
	--root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" \
	--cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
	--service-cluster-ip-range 10.96.0.0/12 --use-service-account-credentials
start kube-scheduler "$bin/kube-scheduler" \
	--kubeconfig "$dir/scheduler.kubeconfig" \
	--authentication-kubeconfig "$dir/scheduler.kubeconfig" \
	--authorization-kubeconfig "$dir/scheduler.kubeconfig" \
	--bind-address 127.0.0.1 --secure-port "$p_sched" --cert-dir "$dir/scheduler"
health() { curl -fsSk "https://127.0.0.1:$1/healthz"; }
wait_for "kube-controller-manager /healthz" 60 2 health "$p_kcm"
wait_for "kube-scheduler /healthz" 60 3 health "$p_sched"
run=${PYANTREA_K8S_SMOKE_RUN_SECONDS:-10}
say "letting them run for ${run}s"
sleep "$run"
alive 2
alive 3
say "kube-controller-manager /healthz: $(health "$p_kcm")"
say "kube-scheduler /healthz: $(health "$p_sched")"
say '$ kubectl -n kube-system get leases'
kubectl -n kube-system get leases
wait_for "the default ServiceAccount (made by the controller manager)" 60 2 \
	kubectl -n default get serviceaccount default
say '$ kubectl -n default get serviceaccounts'
kubectl -n default get serviceaccounts
say "controllers with their own ServiceAccount in kube-system: $(kubectl -n kube-system get serviceaccounts --no-headers | wc -l)"
say '$ kubectl get --raw /readyz?verbose | tail -n 3'
kubectl get --raw '/readyz?verbose' | tail -n 3
say "passed: etcd, kube-apiserver, kube-controller-manager and kube-scheduler ran healthy on 127.0.0.1"
