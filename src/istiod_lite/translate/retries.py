"""VirtualService ``retries`` -> Envoy RetryPolicy (Istio ``route/retry/retry.go``).

- absent -> Istio's default policy (options.default_*): num_retries 2, retry_on
  "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", host_selection_retry_max_attempts
  5, retry_host_predicate previous_hosts;
- ``attempts <= 0`` -> no retry policy (None);
- ``retryOn``: comma list; integers that are HTTP status codes go to retriable_status_codes and
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


def default_policy(options: TranslateOptions) -> rc.RetryPolicy:
    return rc.RetryPolicy(
        retry_on=options.default_retry_on,
        num_retries={"value": options.default_retry_attempts},
        retry_host_predicate=[_previous_hosts()],
        host_selection_retry_max_attempts=options.default_host_selection_retry_max_attempts,
    )


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


def retry_policy(retries: Mapping[str, Any] | None, options: TranslateOptions) -> rc.RetryPolicy | None:
    if retries is None:
        return default_policy(options)
    attempts = int(retries.get("attempts", 0) or 0)
    if attempts <= 0:
        return None
    policy = default_policy(options)
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

