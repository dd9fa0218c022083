#!/usr/bin/env bash
# Optional end-to-end scenario: istiod-lite as a third-party waypoint control plane inside a real Istio ambient
# mesh (`make e2e-ambient`). Needs docker, kind, kubectl, istioctl (of ISTIO_VERSION, on PATH) and internet.
# Not part of `make test`; it cannot run where those are missing (it exits 2 and says which tool is missing).
#
#  1. create a kind cluster (KEEP_CLUSTER=1 keeps it afterwards; an existing cluster of that name is reused)
#  2. install the Gateway API CRDs; generate a plug-in CA with istiod-lite's own CA code and store it as the
#     Secret istio-system/cacerts, so Istio's certificates and istiod-lite's chain to the same root
#  3. `istioctl install --set profile=ambient` (istiod, ztunnel, istio-cni)
#  4. build and load the istiod-lite image, apply deploy/beside-istio (e2e/ambient/overlay): only the
#     `istiod-lite-waypoint` GatewayClass is managed; Istio's `istio-waypoint` class stays istiod's
#  5. apply an ambient namespace (istio.io/dataplane-mode=ambient, istio.io/use-waypoint=lite-waypoint), two
#     backend versions, two clients (sa/client, sa/other), the waypoint Gateway, a DestinationRule, a
#     VirtualService and an identity-based AuthorizationPolicy; wait for the waypoint to be Programmed with an
#     address (that is what makes istiod send the namespace's service traffic to it)
#  6. from the client pods, plain HTTP to the Service: ztunnel captures it and sends it as HBONE to our
#     waypoint, which routes by the VirtualService (header -> v2), enforces the policy with the caller's
#     SPIFFE identity (sa/client 200, sa/other 403 RBAC) and sends it on as HBONE to the destination ztunnel;
#     the waypoint's connect_terminate listener counts the CONNECT streams
set -euo pipefail

CLUSTER=${CLUSTER:-istiod-lite-ambient}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.1}
ISTIO_VERSION=${ISTIO_VERSION:-1.28.0}
ENVOY_IMAGE=${ENVOY_IMAGE:-envoyproxy/envoy:v1.40.0}
IMAGE=istiod-lite:e2e
NS=ambient-e2e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE="$ROOT/e2e/ambient"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

E2E_NAME=e2e-ambient
# shellcheck source=e2e/lib.sh
source "$ROOT/e2e/lib.sh"
dump() {
  kubectl -n istio-system logs deploy/istiod-lite --tail=80 2>/dev/null || true
  kubectl -n istio-system logs deploy/istiod --tail=40 2>/dev/null || true
  kubectl -n "$NS" logs deploy/lite-waypoint --tail=40 2>/dev/null || true
  kubectl -n "$NS" get pods,svc,deploy,gateway -o wide 2>/dev/null || true
  kubectl -n "$NS" get gateway lite-waypoint -o yaml 2>/dev/null || true
}
need docker; need kind; need kubectl; need istioctl
[[ -x "$PYTHON" ]] || { echo "e2e-ambient: $PYTHON not found (run make install)" >&2; exit 2; }
client_version=$(istioctl version --remote=false 2>/dev/null | head -1 | tr -d '[:space:]' | sed 's/.*://')
[[ "$client_version" == "$ISTIO_VERSION" ]] \
  || { echo "e2e-ambient: istioctl is $client_version, ISTIO_VERSION is $ISTIO_VERSION" >&2; exit 2; }

WORK=$(mktemp -d)
cleanup() {
  [[ -n "${PF_PID:-}" ]] && kill "$PF_PID" 2>/dev/null || true
  rm -rf "$WORK"
  if [[ "${KEEP_CLUSTER:-0}" != "1" && "${CREATED:-0}" == "1" ]]; then kind delete cluster --name "$CLUSTER"; fi
}
trap cleanup EXIT

# curl from a client deployment to the reviews Service (ztunnel captures it); prints "<http code> <body>"
req() {
  local from=$1; shift
  kubectl -n "$NS" exec "deploy/$from" -- curl -s -o /dev/stdout -w ' %{http_code}' --max-time 10 "$@" \
    2>/dev/null | awk '{code=$NF; $NF=""; print code, $0}'
}
URL="http://reviews.$NS.svc.cluster.local:9080"

log "cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
  CREATED=1
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "Gateway API $GATEWAY_API_VERSION CRDs"
kubectl apply --server-side -f \
  "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml"
kubectl wait --for=condition=Established --timeout=60s crd/gateways.gateway.networking.k8s.io

log "plug-in CA shared by Istio and istiod-lite"
if ! kubectl -n istio-system get secret cacerts >/dev/null 2>&1; then
  "$PYTHON" -c 'import sys; from istiod_lite.identity.ca import CertificateAuthority as CA
CA.load_or_create("cluster.local", sys.argv[1])' "$WORK/ca"
  kubectl create namespace istio-system --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n istio-system create secret generic cacerts --from-file="$WORK/ca/ca-cert.pem" \
    --from-file="$WORK/ca/ca-key.pem" --from-file="$WORK/ca/root-cert.pem" --from-file="$WORK/ca/cert-chain.pem"
fi

log "Istio $ISTIO_VERSION, ambient profile"
istioctl install -y --set profile=ambient
kubectl -n istio-system rollout status deploy/istiod --timeout=180s || fail "istiod not ready"
kubectl -n istio-system rollout status ds/ztunnel --timeout=180s || fail "ztunnel not ready"

log "istiod-lite beside Istio"
docker build -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" "$ROOT"
docker pull -q "$ENVOY_IMAGE"
kind load docker-image --name "$CLUSTER" "$IMAGE" "$ENVOY_IMAGE"
kubectl apply -k "$HERE/overlay"
kubectl -n istio-system rollout status deploy/istiod-lite --timeout=180s || fail "istiod-lite not ready"
until_ok 60 kubectl get gatewayclass istiod-lite-waypoint || fail "GatewayClass istiod-lite-waypoint not created"
[[ "$(kubectl get gatewayclass istiod-lite-waypoint -o jsonpath='{.spec.controllerName}')" \
   == istiod-lite.io/waypoint-controller ]] || fail "istiod-lite-waypoint has another controller"
if kubectl get gatewayclass istio-waypoint -o jsonpath='{.metadata.managedFields[*].manager}' 2>/dev/null \
   | grep -qw istiod-lite; then
  fail "istiod-lite touched Istio's GatewayClass istio-waypoint"
fi

log "ambient app, third-party waypoint, config"
kubectl apply -f "$HERE/app.yaml"
kubectl apply -f "$HERE/waypoint.yaml"
kubectl apply -f "$HERE/config.yaml"
kubectl -n "$NS" rollout status deploy/reviews-v1 deploy/reviews-v2 deploy/client deploy/other --timeout=180s
until_ok 120 kubectl -n "$NS" get deploy lite-waypoint || fail "istiod-lite did not create the waypoint Deployment"
kubectl -n "$NS" rollout status deploy/lite-waypoint --timeout=180s || fail "waypoint not ready"
[[ "$(kubectl -n "$NS" get pods -l gateway.networking.k8s.io/gateway-name=lite-waypoint -o name | wc -l)" -ge 1 ]] \
  || fail "waypoint pods not labelled gateway.networking.k8s.io/gateway-name"
until_ok 90 bash -c "kubectl -n $NS get gateway lite-waypoint \
  -o jsonpath='{.status.conditions[?(@.type==\"Programmed\")].status}' | grep -qx True" \
  || fail "Gateway not Programmed"
address=$(kubectl -n "$NS" get gateway lite-waypoint -o jsonpath='{.status.addresses[0].value}')
[[ "$address" == "lite-waypoint.$NS.svc.cluster.local" ]] || fail "unexpected status.addresses: '$address'"
until_ok 60 bash -c "kubectl -n $NS get virtualservice reviews \
  -o jsonpath='{.status.conditions[?(@.type==\"istiod-lite.io/WaypointAccepted\")].status}' | grep -qx True" \
  || fail "VirtualService status not istiod-lite.io/WaypointAccepted=True (istiod owns WaypointAccepted)"
# istiod's view of the binding (written when istiod's ambient status is enabled; informational)
bound=$(kubectl -n "$NS" get svc reviews \
  -o jsonpath='{.status.conditions[?(@.type=="istio.io/WaypointBound")].status}' 2>/dev/null || true)
echo "istiod: Service reviews istio.io/WaypointBound=${bound:-<not reported>}"

log "waypoint admin"
kubectl -n "$NS" port-forward deploy/lite-waypoint 15000:15000 >/dev/null 2>&1 &
PF_PID=$!
until_ok 30 curl -sf http://127.0.0.1:15000/ready || fail "no port-forward to the waypoint admin"
tunnels() {
  curl -s "http://127.0.0.1:15000/stats?filter=^http.connect_terminate.downstream_rq_total$" \
    | awk -F': ' '{s+=$2} END {print s+0}'
}
before=$(tunnels)

log "routing through the waypoint (ztunnel HBONE in, HBONE out)"
until_ok 90 bash -c "kubectl -n $NS exec deploy/client -- curl -sf --max-time 5 $URL/hostname | grep -q reviews-v1" \
  || fail "the default route does not reach v1 through the waypoint"
for _ in 1 2 3; do
  req client -H "x-canary: true" "$URL/hostname" | grep -q reviews-v2 || fail "the header route does not reach v2"
  req client "$URL/hostname" | grep -q reviews-v1 || fail "the default route does not reach v1"
done
after=$(tunnels)
(( after > before )) || fail "no HBONE CONNECT reached the waypoint (connect_terminate requests $before -> $after)"

log "authorization with the caller's SPIFFE identity"
[[ "$(req client "$URL/status/200" | cut -d' ' -f1)" == 200 ]] || fail "sa/client denied"
denied=$(req other "$URL/status/200")
[[ "$(cut -d' ' -f1 <<<"$denied")" == 403 ]] || fail "sa/other not denied by the waypoint: $denied"
grep -q "RBAC" <<<"$denied" || fail "the 403 did not come from the waypoint's RBAC filter: $denied"

log "PASS"
