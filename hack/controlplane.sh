#!/usr/bin/env bash
# Prints a directory holding etcd and kube-apiserver for envtest, building them from Go
# modules into a per-user cache the first time. Prebuilt downloads (setup-envtest) are not
# reachable on our machines, so we compile the pinned releases instead.
#
# KUBEBUILDER_ASSETS, when set and complete, wins. Progress goes to stderr; stdout is the path.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
STAGING_VERSION="v0.${K8S_VERSION#1.}"

complete() { [ -x "$1/etcd" ] && [ -x "$1/kube-apiserver" ]; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && complete "$KUBEBUILDER_ASSETS"; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

cache_root="${XDG_DATA_HOME:-$HOME/.local/share}/dynamic-notifier/envtest"
dir="$cache_root/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-$(go env GOOS)-$(go env GOARCH)"
if complete "$dir"; then
  echo "$dir"
  exit 0
fi

mkdir -p "$cache_root"
# One builder at a time: parallel `make test` runs wait instead of building twice.
exec 9>"$cache_root/.lock"
flock 9
if complete "$dir"; then
  echo "$dir"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$dir.partial"

log() { echo "controlplane: $*" >&2; }

if [ ! -x "$dir.partial/etcd" ]; then
  log "building etcd v${ETCD_VERSION} from Go modules (about 2 minutes, once)"
  mkdir -p "$work/etcd"
  cat >"$work/etcd/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$work/etcd"
    go mod init local/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" >&2
    go mod tidy >&2
    CGO_ENABLED=0 go build -trimpath -o "$dir.partial/etcd" . >&2
  )
fi

if [ ! -x "$dir.partial/kube-apiserver" ]; then
  log "building kube-apiserver v${K8S_VERSION} from Go modules (about 6 minutes, once)"
  mkdir -p "$work/apiserver"
  gomod="$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  {
    echo "module local/apiserver"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
    echo
    echo "require k8s.io/kubernetes v${K8S_VERSION}"
    echo
    # kubernetes' go.mod points its staging modules at ./staging; use the published ones.
    sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#replace \1 => \1 '"${STAGING_VERSION}"'#p' "$gomod"
  } >"$work/apiserver/go.mod"
  ldflags="-s -w"
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  for kv in "gitVersion=v${K8S_VERSION}" "gitMajor=1" "gitMinor=${minor}" "gitTreeState=clean"; do
    ldflags="$ldflags -X k8s.io/component-base/version.$kv"
  done
  (
    cd "$work/apiserver"
    GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/kube-apiserver@v${K8S_VERSION}" >&2
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" \
      -o "$dir.partial/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
  )
fi

rm -rf "$dir"
mv "$dir.partial" "$dir"
log "control plane ready in $dir"
echo "$dir"
