#!/usr/bin/env bash
# Build Kubernetes' own control-plane programs from the k8s.io/kubernetes Go
# module pinned in build/kubernetes/go.mod (and etcd from the module pinned in
# build/kubernetes/etcd/go.mod), reproducibly, into a cache outside the checkout:
#
#   ${PYANTREA_K8S_CACHE:-$HOME/.cache/pyantrea/kubernetes}/<version>/bin/
#
# Idempotent: does nothing when every program is already there. The Go module
# and build caches are private to that cache directory (go/mod, go/build), so
# this neither reads nor changes any other project's Go caches; `rm -rf
# <cache>/go` frees them and keeps the programs. Needs only `go` (>= the go
# line of the modules) and the Go module proxy. See docs/kubernetes.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mod="$root/build/kubernetes"
etcd_mod="$mod/etcd"
cache="${PYANTREA_K8S_CACHE:-$HOME/.cache/pyantrea/kubernetes}"

log() { printf 'build-kubernetes: [%5s] %s\n' "$(elapsed)" "$*"; }
die() { printf 'build-kubernetes: error: %s\n' "$*" >&2; exit 1; }
elapsed() { printf '%dm%02ds' $((SECONDS / 60)) $((SECONDS % 60)); }

# name:package:module-dir, in build order (kube-apiserver first: it is the
# largest and shares most packages with the others, so later ones go faster).
programs=(
	"kube-apiserver:k8s.io/kubernetes/cmd/kube-apiserver:$mod"
	"kube-controller-manager:k8s.io/kubernetes/cmd/kube-controller-manager:$mod"
	"kube-scheduler:k8s.io/kubernetes/cmd/kube-scheduler:$mod"
	"kube-proxy:k8s.io/kubernetes/cmd/kube-proxy:$mod"
	"kubectl:k8s.io/kubernetes/cmd/kubectl:$mod"
)
if [[ -f $etcd_mod/go.mod ]]; then
	programs+=("etcd:go.etcd.io/etcd/server/v3:$etcd_mod")
fi
# Arguments, if any, name the programs to build (default: all of them).
if (($#)); then
	wanted=()
	for a in "$@"; do
		found=""
		for p in "${programs[@]}"; do [[ ${p%%:*} == "$a" ]] && found=$p; done
		[[ -n $found ]] || die "unknown program '$a' (known: $(printf '%s ' "${programs[@]%%:*}"))"
		wanted+=("$found")
	done
	programs=("${wanted[@]}")
fi

# --- what to build --------------------------------------------------------
command -v go >/dev/null 2>&1 || die "go is not on PATH (Go >= 1.26 is needed)"
for m in "$mod" "$etcd_mod"; do
	[[ $m == "$etcd_mod" && ! -f $m/go.mod ]] && continue
	[[ -f $m/go.mod && -f $m/go.sum ]] || die "$m/go.mod or $m/go.sum is missing"
done
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$mod/go.mod")
[[ $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] ||
	die "could not read one pinned 'require k8s.io/kubernetes v1.X.Y' line from $mod/go.mod (got '${version}')"
minor=${BASH_REMATCH[1]}
v=${version#v}
out="$cache/$v/bin"

missing=()
for p in "${programs[@]}"; do
	name=${p%%:*}
	[[ -x $out/$name ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
	log "Kubernetes $version: all ${#programs[@]} programs already in $out; nothing to do"
	exit 0
fi

# --- a reproducible Go environment, private to the cache --------------------
export GOMODCACHE="$cache/go/mod"
export GOCACHE="$cache/go/build"
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly -modcacherw"
export CGO_ENABLED=0
export GOTOOLCHAIN=local   # never fetch another Go behind our back
export GOWORK=off
unset GOOS GOARCH GOEXPERIMENT

gover=$(go env GOVERSION)
need=$(awk '$1 == "go" { print $2; exit }' "$mod/go.mod")
# "go1.26.8" vs "1.26.0": compare as version numbers.
if [[ $(printf '%s\n%s\n' "$need" "${gover#go}" | sort -V | head -n1) != "$need" ]]; then
	die "$mod/go.mod needs Go >= $need, but go on PATH is $gover"
fi

mkdir -p "$out" "$GOMODCACHE" "$GOCACHE"
exec 9>"$cache/.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
	log "another build-kubernetes holds $cache/.lock; waiting for it"
	flock 9
fi
tmp=$(mktemp -d "$cache/$v/.tmp.XXXXXX")
step=""
finish() {
	local rc=$?
	rm -rf "$tmp"
	if ((rc != 0)); then
		printf 'build-kubernetes: FAILED%s after %s (exit %d); nothing partial was left in %s\n' \
			"${step:+ while $step}" "$(elapsed)" "$rc" "$out" >&2
	fi
}
trap finish EXIT

log "Kubernetes $version with $gover; ${#missing[@]} of ${#programs[@]} programs to build into $out"
log "Go caches: GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE"

# --- fetch the modules (only those the programs import) ---------------------
# Build tags as Kubernetes' hack/lib/golang.sh sets them for release builds;
# etcd's own build uses none.
k8s_tags="selinux,notest,grpcnotrace"
tags_of() { if [[ $1 == "$etcd_mod" ]]; then echo ""; else echo "$k8s_tags"; fi; }
for m in "$mod" "$etcd_mod"; do
	[[ -f $m/go.mod ]] || continue
	pkgs=()
	for p in "${missing[@]}"; do
		rest=${p#*:}
		[[ ${rest#*:} == "$m" ]] && pkgs+=("${rest%%:*}")
	done
	((${#pkgs[@]})) || continue
	step="fetching the modules of ${m#"$root"/}"
	log "$step"
	if ! n=$(cd "$m" && go list -deps -tags "$(tags_of "$m")" -f '{{with .Module}}{{.Path}}{{end}}' "${pkgs[@]}" 2>"$tmp/fetch.log" | sort -u | wc -l); then
		tail -n 30 "$tmp/fetch.log" >&2
		die "could not load the modules of ${m#"$root"/}: is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))? Does go.sum match go.mod (cd ${m#"$root"/} && go mod tidy)?"
	fi
	log "  $n modules ready ($(grep -c '^go: downloading' "$tmp/fetch.log" || true) downloaded now)"
done

# --- build ------------------------------------------------------------------
commit_date=$(cd "$mod" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)
[[ -n $commit_date ]] || commit_date="1970-01-01T00:00:00Z"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	# The variables Kubernetes' own hack/lib/version.sh sets. buildDate is the
	# release's time, not now, so that two builds give the same bytes.
	k8s_ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	k8s_ldflags+=" -X $pkg.gitTreeState=archive -X $pkg.gitCommit= -X $pkg.buildDate=$commit_date"
done

i=0
for p in "${missing[@]}"; do
	i=$((i + 1))
	name=${p%%:*}
	rest=${p#*:}
	pkg=${rest%%:*}
	m=${rest#*:}
	if [[ $name == etcd ]]; then ldflags="-s -w"; else ldflags=$k8s_ldflags; fi
	step="building $name ($pkg)"
	log "[$i/${#missing[@]}] $step"
	t0=$SECONDS
	(cd "$m" && nice -n 19 go build -tags "$(tags_of "$m")" -ldflags "$ldflags" -o "$tmp/$name" "$pkg") ||
		die "go build of $pkg failed (see the compiler output above)"
	mv -f "$tmp/$name" "$out/$name"
	log "  $name: $(du -h "$out/$name" | cut -f1) in $((SECONDS - t0))s"
done
step=""

step="checking the versions"
if [[ -x $out/kube-apiserver ]]; then
	got=$("$out/kube-apiserver" --version)
	[[ $got == "Kubernetes $version" ]] || die "kube-apiserver --version says '$got', expected 'Kubernetes $version'"
	log "kube-apiserver --version: $got"
fi
log "done: ${#programs[@]} programs in $out (elapsed $(elapsed))"
