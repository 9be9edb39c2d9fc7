#!/usr/bin/env bash
# Builds, once, what a real single-node Kubernetes needs from the Go module
# proxy: kube-apiserver, kube-controller-manager, kube-scheduler and kubelet
# and kubectl from k8s.io/kubernetes, an etcd (go.etcd.io/etcd's embedded
# server, internal/tools/cluster/etcd), a static pause for pod sandboxes
# (internal/tools/cluster/pause), helm, and CoreDNS for the cluster's DNS. k8s.io/kubernetes names its
# staging modules by relative replaces that only its own tree can resolve;
# here each is pinned to its published version instead. Cached under
# ~/.cache/shoal/kubernetes-VERSION; prints that directory.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S=${SHOAL_K8S_VERSION:-v1.37.2}
CACHE=${SHOAL_CACHE:-$HOME/.cache/shoal}
out="$CACHE/kubernetes-$K8S"
COREDNS=${SHOAL_COREDNS_VERSION:-v1.15.0}
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd helm pause coredns)
built() {
  for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || return 1; done
}
if built; then
  echo "$out"
  exit 0
fi
staging="0.${K8S#v1.}"
work="$CACHE/kubernetes-src-$K8S"
mkdir -p "$work" "$out"
(
  cd "$work"
  rm -f go.mod go.sum
  go mod init shoal-kubernetes-build >&2
  mod=$(go mod download -json "k8s.io/kubernetes@$K8S" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  for m in $(awk '/=> \.\/staging/ {print $1}' "$mod"); do
    go mod edit -replace "$m=$m@v$staging"
  done
  go get "k8s.io/kubernetes@$K8S" >&2
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    [[ -x "$out/$b" ]] && continue
    echo "build-kubernetes: $b $K8S" >&2
    go build -mod=mod -o "$out/$b" "k8s.io/kubernetes/cmd/$b" >&2
  done
)
echo "build-kubernetes: etcd, pause" >&2
(cd internal/tools/cluster && go build -o "$out/etcd" ./etcd && CGO_ENABLED=0 go build -o "$out/pause" ./pause) >&2
if [[ ! -x "$out/coredns" ]]; then
  echo "build-kubernetes: coredns $COREDNS" >&2
  (
    mkdir -p "$CACHE/coredns-src-$COREDNS" && cd "$CACHE/coredns-src-$COREDNS"
    rm -f go.mod go.sum
    go mod init shoal-coredns-build >&2
    go get "github.com/coredns/coredns@$COREDNS" >&2
    go build -mod=mod -o "$out/coredns" github.com/coredns/coredns >&2
  )
fi
helm=$(awk '$1 == "helm.sh/helm/v4" {print $2}' deploy/helm/check/go.mod)
echo "build-kubernetes: helm $helm (the version deploy/helm/check renders with)" >&2
(
  mkdir -p "$CACHE/helm-src-$helm" && cd "$CACHE/helm-src-$helm"
  rm -f go.mod go.sum
  go mod init shoal-helm-build >&2
  go get "helm.sh/helm/v4@$helm" >&2
  go build -mod=mod -o "$out/helm" helm.sh/helm/v4/cmd/helm >&2
)
echo "$out"
