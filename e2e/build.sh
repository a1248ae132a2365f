#!/usr/bin/env bash
# Build the real kube-apiserver, kubectl and etcd the end-to-end tests run against, from the Go
# modules pinned in e2e/tools/go.mod and go.sum (no prebuilt downloads), and each further tool from
# its own module in e2e/tools/<tool>/. The binaries are cached in .e2e-bin/ (git-ignored) and
# rebuilt only when the pins change.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.e2e-bin"
tools="$root/e2e/tools"

# Helm, from e2e/tools/helm: a module of its own, so that its k8s.io pins never move kube-apiserver's;
# cached by a stamp of its own pins. The -X flags are Helm's release flags: its version, and the
# Kubernetes version that `helm template` and `helm lint` assume (from the client-go it is built with).
build_helm() {
  local dir="$tools/helm" want version minor
  want=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -d' ' -f1)
  if [ -f "$bin/.stamp-helm" ] && [ "$(cat "$bin/.stamp-helm")" = "$want" ] && [ -x "$bin/helm" ]; then
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "e2e: the chart tests need Go 1.26 or newer to build helm; install it and run make test again" >&2
    exit 1
  fi
  echo "e2e: building helm into $bin" >&2
  mkdir -p "$bin"
  version=$(cd "$dir" && go list -m -f '{{.Version}}' helm.sh/helm/v3)
  minor=$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
  (cd "$dir" && go build -buildvcs=false -trimpath -o "$bin/helm" -ldflags="-s -w \
    -X helm.sh/helm/v3/internal/version.version=$version \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
    helm.sh/helm/v3/cmd/helm)
  echo "$want" > "$bin/.stamp-helm"
}
build_helm

want=$(cat "$tools/go.mod" "$tools/go.sum" "$tools/etcd/main.go" | sha256sum | cut -d' ' -f1)
if [ -f "$bin/.stamp" ] && [ "$(cat "$bin/.stamp")" = "$want" ] \
  && [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ] && [ -x "$bin/etcd" ]; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "e2e: the end-to-end tests need Go 1.26 or newer to build kube-apiserver, etcd and kubectl" >&2
  echo "e2e: install it (https://go.dev/doc/install, or: apt-get install golang-go) and run make test again" >&2
  exit 1
fi
mkdir -p "$bin"
echo "e2e: building kube-apiserver, kubectl and etcd into $bin (the first build takes several minutes)" >&2
start=$(date +%s)
cd "$tools"
go build -buildvcs=false -trimpath -ldflags="-s -w" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./etcd
echo "$want" > "$bin/.stamp"
echo "e2e: built in $(( $(date +%s) - start ))s" >&2
