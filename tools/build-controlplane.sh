#!/usr/bin/env bash
# Builds the real Kubernetes control plane used by tests/realkube from published Go modules:
# kube-apiserver, kube-controller-manager and kubectl (module tests/controlplane/kube) and etcd
# (module tests/controlplane/etcd). The binaries land in .cache/controlplane/<k8s>-<etcd>/bin/, keyed by the
# versions pinned in the two go.mod files, so a warm run builds nothing.
#
# Usage: tools/build-controlplane.sh [--print-dir]
#   --print-dir  print the bin directory for the pinned versions and exit (builds nothing)
# Without a Go toolchain it exits 0 with a message (the real-kube tests then skip), except under CI=true,
# where it fails: CI always builds the control plane.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mods="$root/tests/controlplane"

pinned() { # module-path go.mod -> version required (k8s.io/kubernetes) or the tool's module version
  awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$2"
}
k8s_version="$(pinned k8s.io/kubernetes "$mods/kube/go.mod")"
etcd_version="$(pinned go.etcd.io/etcd/server/v3 "$mods/etcd/go.mod")"
if [ -z "$k8s_version" ] || [ -z "$etcd_version" ]; then
  echo "build-controlplane: cannot read the pinned versions from $mods/{kube,etcd}/go.mod" >&2
  exit 1
fi
out="$root/.cache/controlplane/${k8s_version}-${etcd_version}"
bin="$out/bin"
if [ "${1:-}" = "--print-dir" ]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "build-controlplane: no Go toolchain on PATH, and CI must build the control plane" >&2
    exit 1
  fi
  echo "build-controlplane: no Go toolchain on PATH: skipping; the real-control-plane tests (-m realkube) will skip"
  exit 0
fi

# The stamp records what the binaries were built from; any change to either go.sum rebuilds.
stamp_want="$(cat "$mods/kube/go.mod" "$mods/kube/go.sum" "$mods/etcd/go.mod" "$mods/etcd/go.sum" \
  | sha256sum | cut -c1-16) $(go env GOVERSION)"
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp_want" ] \
  && [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ] && [ -x "$bin/kubectl" ] \
  && [ -x "$bin/etcd" ]; then
  echo "build-controlplane: up to date: $bin (kubernetes $k8s_version, etcd $etcd_version)"
  exit 0
fi

mkdir -p "$bin"
rm -f "$out/stamp"
# 2 cores shared with everything else: build politely, without touching the network beyond the module proxy.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly -trimpath"
jobs="${CONTROLPLANE_BUILD_JOBS:-2}"
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
# The version the servers report (helm checks the chart's kubeVersion against it); a module build does not
# stamp it by itself.
ver="k8s.io/component-base/version"
cgv="k8s.io/client-go/pkg/version"
ldflags="-s -w"
for pkg in "$ver" "$cgv"; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
start="$(date +%s)"
echo "build-controlplane: building kubernetes $k8s_version and etcd $etcd_version into $bin (cold: tens of minutes)"
(
  cd "$mods/etcd"
  nice go build -p "$jobs" -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
)
(
  cd "$mods/kube"
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    nice go build -p "$jobs" -ldflags "$ldflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
)
echo "$stamp_want" > "$out/stamp"
echo "build-controlplane: built in $(( $(date +%s) - start )) s: $(du -sh "$bin" | cut -f1) in $bin"
