"""VirtualService ``retries`` -> Envoy RetryPolicy (Istio ``route/retry/retry.go``).

- absent -> Istio's default policy (options.default_*): num_retries 2, retry_on
  "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", host_selection_retry_max_attempts
  5, retry_host_predicate previous_hosts;
- ``attempts <= 0`` -> no retry policy (None);
- a route using consistent hashing (DestinationRule) gets no previous_hosts predicate (Istio ``ConvertPolicy``);
- ``retryOn``: comma list of Envoy's x-envoy-retry-on names (5xx, gateway-error, reset, reset-before-request,
  connect-failure, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, envoy-ratelimited,
  http3-post-connect-failure) and x-envoy-retry-grpc-on names (cancelled, deadline-exceeded, internal,
  resource-exhausted, unavailable) -- Envoy's retry_on accepts both in one list; other names are rejected by
  model/validate.py (RETRY_ON_POLICIES); integers that are HTTP status codes go to retriable_status_codes and
  ``retriable-status-codes`` is appended to retry_on when missing;
- ``perTryTimeout`` -> per_try_timeout; ``retryRemoteLocalities`` -> previous_priorities;
  ``retryIgnorePreviousHosts: false`` drops the previous_hosts predicate; ``backoff`` -> retry_back_off.base_interval.
"""

from __future__ import annotations

from typing import Any, Mapping

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from google.protobuf import any_pb2

from istiod_lite.translate import names
from istiod_lite.translate.durations import to_duration
from istiod_lite.translate.options import TranslateOptions

RETRIABLE_STATUS_CODES = "retriable-status-codes"


def _any(msg) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def _previous_hosts() -> rc.RetryPolicy.RetryHostPredicate:
    return rc.RetryPolicy.RetryHostPredicate(name=names.PREVIOUS_HOSTS_PREDICATE,
                                             typed_config=_any(previous_hosts_pb2.PreviousHostsPredicate()))


def default_policy(options: TranslateOptions, consistent_hash: bool = False) -> rc.RetryPolicy:
    policy = rc.RetryPolicy(
        retry_on=options.default_retry_on,
        num_retries={"value": options.default_retry_attempts},
        host_selection_retry_max_attempts=options.default_host_selection_retry_max_attempts,
    )
    if not consistent_hash:  # Istio: retrying on another host would break hash stickiness
        policy.retry_host_predicate.append(_previous_hosts())
    return policy


def parse_retry_on(text: str) -> tuple[str, list[int]]:
    policies: list[str] = []
    codes: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit() and 100 <= int(part) <= 599:
            codes.append(int(part))
        elif part not in policies:
            policies.append(part)
    if codes and RETRIABLE_STATUS_CODES not in policies:
        policies.append(RETRIABLE_STATUS_CODES)
    return ",".join(policies), codes


_MEMO: dict[tuple, bytes | None] = {}
_MEMO_MAX = 4096


def retry_policy(retries: Mapping[str, Any] | None, options: TranslateOptions,
                 consistent_hash: bool = False) -> rc.RetryPolicy | None:
    """A fresh RetryPolicy message (or None). Built once per distinct input (memoised as serialized bytes: the
    default policy is the same on every route) and parsed per call."""
    key = (repr(retries), options, consistent_hash)
    body = _MEMO.get(key, False)
    if body is False:
        built = _build(retries, options, consistent_hash)
        body = None if built is None else built.SerializeToString()
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[key] = body
    if body is None:
        return None
    policy = rc.RetryPolicy()
    policy.MergeFromString(body)
    return policy


def _build(retries: Mapping[str, Any] | None, options: TranslateOptions,
           consistent_hash: bool = False) -> rc.RetryPolicy | None:
    if retries is None:
        return default_policy(options, consistent_hash)
    attempts = int(retries.get("attempts", 0) or 0)
    if attempts <= 0:
        return None
    policy = default_policy(options, consistent_hash)
    policy.num_retries.value = attempts
    if retries.get("retryOn"):
        retry_on, codes = parse_retry_on(str(retries["retryOn"]))
        policy.retry_on = retry_on
        policy.retriable_status_codes.extend(codes)
    if retries.get("perTryTimeout"):
        d = to_duration(retries["perTryTimeout"])
        if d is not None:
            policy.per_try_timeout.CopyFrom(d)
    if retries.get("retryIgnorePreviousHosts") is False:
        del policy.retry_host_predicate[:]
    if retries.get("retryRemoteLocalities"):
        cfg = previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2)
        policy.retry_priority.CopyFrom(rc.RetryPolicy.RetryPriority(name=names.PREVIOUS_PRIORITIES,
                                                                    typed_config=_any(cfg)))
    if retries.get("backoff"):
        d = to_duration(retries["backoff"])
        if d is not None:
            policy.retry_back_off.base_interval.CopyFrom(d)
    return policy

