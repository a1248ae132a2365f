#!/usr/bin/env bash
# Build the real kube-apiserver, kubectl and etcd the end-to-end tests run against, from the Go
# modules pinned in e2e/tools/go.mod and go.sum, and each further tool from its own module under
# e2e/tools/<name>/ (helm, promtool): no prebuilt downloads. The binaries are cached in .e2e-bin/
# (git-ignored) and rebuilt only when their pins change.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.e2e-bin"
tools="$root/e2e/tools"

# Helm's release flags: its version, and the Kubernetes version that `helm template` and `helm lint`
# assume (from the client-go it is built with). Run in e2e/tools/helm.
ldflags_helm() {
  local version minor
  version=$(go list -m -f '{{.Version}}' helm.sh/helm/v3)
  minor=$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
  echo "-X helm.sh/helm/v3/internal/version.version=$version" \
    "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
}

# A tool with a module of its own (e2e/tools/<name>/go.mod, whose `tool` directive names it; its own
# module so that its pins never move kube-apiserver's) builds into .e2e-bin/<name>, cached by a stamp
# of its pins in .e2e-bin/.stamp-<name>; a function ldflags_<name>, if there is one, adds link flags.
build_tool_module() {
  local dir=$1 name want extra=""
  name=$(basename "$dir")
  want=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -d' ' -f1)
  if [ -f "$bin/.stamp-$name" ] && [ "$(cat "$bin/.stamp-$name")" = "$want" ] && [ -x "$bin/$name" ]; then
    return 0
  fi
  need_go
  mkdir -p "$bin"
  echo "e2e: building $name into $bin (the first build takes several minutes)" >&2
  local start
  start=$(date +%s)
  if declare -F "ldflags_$name" >/dev/null; then
    extra=$(cd "$dir" && "ldflags_$name")
  fi
  (cd "$dir" && go build -buildvcs=false -trimpath -ldflags="-s -w $extra" -o "$bin/" tool)
  echo "$want" > "$bin/.stamp-$name"
  echo "e2e: built $name in $(( $(date +%s) - start ))s" >&2
}

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "e2e: the end-to-end tests need Go 1.26 or newer to build kube-apiserver, etcd, kubectl, helm and promtool" >&2
    echo "e2e: install it (https://go.dev/doc/install, or: apt-get install golang-go) and run make test again" >&2
    exit 1
  fi
}

for mod in "$tools"/*/go.mod; do
  build_tool_module "$(dirname "$mod")"
done

want=$(cat "$tools/go.mod" "$tools/go.sum" "$tools/etcd/main.go" | sha256sum | cut -d' ' -f1)
if [ -f "$bin/.stamp" ] && [ "$(cat "$bin/.stamp")" = "$want" ] \
  && [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ] && [ -x "$bin/etcd" ]; then
  exit 0
fi
need_go
mkdir -p "$bin"
echo "e2e: building kube-apiserver, kubectl and etcd into $bin (the first build takes several minutes)" >&2
start=$(date +%s)
cd "$tools"
go build -buildvcs=false -trimpath -ldflags="-s -w" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./etcd
echo "$want" > "$bin/.stamp"
echo "e2e: built in $(( $(date +%s) - start ))s" >&2
