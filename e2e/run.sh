#!/usr/bin/env bash
# End-to-end test of istiod-lite in a kind cluster (`make e2e-kind`). Needs docker, kind, kubectl and internet.
# Not part of `make test`.
#
#  1. create a kind cluster (KEEP_CLUSTER=1 keeps it afterwards; an existing cluster of that name is reused)
#  2. install the Gateway API (standard) and Istio CRDs from their official release manifests
#  3. build the istiod-lite image, load it and the Envoy image into kind, apply deploy/ (e2e/overlay)
#  4. apply the sample app (reviews v1 + v2, a client), a waypoint Gateway, a DestinationRule, a VirtualService
#     and an AuthorizationPolicy; wait for istiod-lite to create the waypoint Deployment and mark it Programmed
#  5. assert through the waypoint: routing by header, retries, a timeout, circuit breaking, an authorization deny
#  6. change the VirtualService; assert the new routing, and that no pod restarted (UIDs and restart counts)
set -euo pipefail

CLUSTER=${CLUSTER:-istiod-lite-e2e}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.1}
ISTIO_VERSION=${ISTIO_VERSION:-1.28.0}
ENVOY_IMAGE=${ENVOY_IMAGE:-envoyproxy/envoy:v1.40.0}
IMAGE=istiod-lite:e2e
NS=e2e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE="$ROOT/e2e"

E2E_NAME=e2e
# shellcheck source=e2e/lib.sh
source "$ROOT/e2e/lib.sh"
dump() {
  kubectl -n istio-system logs deploy/istiod-lite --tail=80 2>/dev/null || true
  kubectl -n "$NS" get pods,svc,deploy,gateway -o wide 2>/dev/null || true
}
need docker; need kind; need kubectl

cleanup() {
  [[ -n "${PF_PID:-}" ]] && kill "$PF_PID" 2>/dev/null || true
  if [[ "${KEEP_CLUSTER:-0}" != "1" && "${CREATED:-0}" == "1" ]]; then kind delete cluster --name "$CLUSTER"; fi
}
trap cleanup EXIT

# curl from the client pod through the waypoint's HTTP listener, with Host: reviews
# prints "<http code> <body>"
req() {
  kubectl -n "$NS" exec deploy/client -- curl -s -o /dev/stdout -w ' %{http_code}' --max-time 10 \
    -H "Host: reviews" "$@" 2>/dev/null | awk '{code=$NF; $NF=""; print code, $0}'
}
code_of() { req "$@" | cut -d' ' -f1; }

log "cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
  CREATED=1
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "CRDs: Gateway API $GATEWAY_API_VERSION, Istio $ISTIO_VERSION"
kubectl apply --server-side -f \
  "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml"
kubectl apply --server-side -f \
  "https://raw.githubusercontent.com/istio/istio/$ISTIO_VERSION/manifests/charts/base/files/crd-all.gen.yaml"
kubectl wait --for=condition=Established --timeout=60s crd/gateways.gateway.networking.k8s.io \
  crd/virtualservices.networking.istio.io crd/destinationrules.networking.istio.io \
  crd/authorizationpolicies.security.istio.io

log "image"
docker build -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" "$ROOT"
docker pull -q "$ENVOY_IMAGE"
kind load docker-image --name "$CLUSTER" "$IMAGE" "$ENVOY_IMAGE"

log "deploy istiod-lite"
kubectl apply -k "$HERE/overlay"
kubectl -n istio-system rollout status deploy/istiod-lite --timeout=180s || fail "istiod-lite not ready"
until_ok 60 kubectl -n istio-system get lease istiod-lite-leader -o jsonpath='{.spec.holderIdentity}' \
  || fail "no leader elected"
[[ -n "$(kubectl -n istio-system get lease istiod-lite-leader -o jsonpath='{.spec.holderIdentity}')" ]] \
  || fail "lease has no holder"
until_ok 60 kubectl get gatewayclass istio-waypoint || fail "GatewayClass istio-waypoint not created"

log "sample app, waypoint, config"
kubectl apply -f "$HERE/manifests/app.yaml"
kubectl apply -f "$HERE/manifests/waypoint.yaml"
kubectl apply -f "$HERE/manifests/config.yaml"
kubectl -n "$NS" rollout status deploy/reviews-v1 deploy/reviews-v2 deploy/client --timeout=180s
until_ok 120 kubectl -n "$NS" get deploy waypoint || fail "istiod-lite did not create the waypoint Deployment"
kubectl -n "$NS" rollout status deploy/waypoint --timeout=180s || fail "waypoint not ready"
[[ "$(kubectl -n "$NS" get deploy waypoint -o jsonpath='{.metadata.ownerReferences[0].kind}')" == Gateway ]] \
  || fail "waypoint Deployment not owned by its Gateway"
until_ok 60 bash -c "kubectl -n $NS get gateway waypoint \
  -o jsonpath='{.status.conditions[?(@.type==\"Programmed\")].status}' | grep -qx True" \
  || fail "Gateway not Programmed"
until_ok 60 bash -c "kubectl -n $NS get virtualservice reviews \
  -o jsonpath='{.status.conditions[?(@.type==\"WaypointAccepted\")].status}' | grep -qx True" \
  || fail "VirtualService status not WaypointAccepted=True"
URL="http://waypoint.$NS.svc:8080"

log "routing"
until_ok 60 bash -c "kubectl -n $NS exec deploy/client -- curl -sf -H 'Host: reviews' $URL/hostname | grep -q reviews-v1" \
  || fail "default route does not reach v1"
req -H "x-canary: true" "$URL/hostname" | grep -q reviews-v2 || fail "header route does not reach v2"

log "authorization deny"
[[ "$(code_of "$URL/admin")" == 403 ]] || fail "/admin not denied"
[[ "$(code_of "$URL/status/200")" == 200 ]] || fail "/status/200 denied"

log "timeout"
start=$SECONDS
[[ "$(code_of "$URL/delay/4")" == 504 ]] || fail "no 504 for /delay/4 with a 1s route timeout"
(( SECONDS - start < 4 )) || fail "the timeout did not cut the request short"

log "retries"
kubectl -n "$NS" port-forward deploy/waypoint 15000:15000 >/dev/null 2>&1 &
PF_PID=$!
until_ok 30 curl -sf http://127.0.0.1:15000/ready || fail "no port-forward to the waypoint admin"
retries() { curl -s "http://127.0.0.1:15000/stats?filter=upstream_rq_retry$" | awk -F': ' '{s+=$2} END {print s+0}'; }
before=$(retries)
[[ "$(code_of "$URL/status/503")" == 503 ]] || fail "/status/503 not 503"
after=$(retries)
(( after - before >= 3 )) || fail "expected 3 retries, stats went $before -> $after"

log "circuit breaking"
codes=$(kubectl -n "$NS" exec deploy/client -- sh -c \
  "for i in \$(seq 20); do curl -s -o /dev/null -w '%{http_code}\n' -H 'Host: reviews' $URL/delay/0.5 & done; wait")
echo "$codes" | sort | uniq -c
echo "$codes" | grep -qx 503 || fail "no request was rejected by the circuit breaker"
echo "$codes" | grep -qx 200 || fail "no request got through"

log "routing change without restarts"
pods() { kubectl get pods -A -l '!job-name' -o jsonpath='{range .items[*]}{.metadata.uid} {.status.containerStatuses[*].restartCount}{"\n"}{end}' | sort; }
before_pods=$(pods)
kubectl apply -f "$HERE/manifests/vs-v2.yaml"
until_ok 60 bash -c "kubectl -n $NS exec deploy/client -- curl -sf -H 'Host: reviews' $URL/hostname | grep -q reviews-v2" \
  || fail "the new routing never took effect"
for _ in 1 2 3 4 5; do req "$URL/hostname" | grep -q reviews-v2 || fail "traffic still reaches v1"; done
[[ "$(pods)" == "$before_pods" ]] || { diff <(echo "$before_pods") <(pods) || true; fail "a pod restarted or was replaced"; }

log "PASS"
