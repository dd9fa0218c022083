"""Istio configuration objects (VirtualService, DestinationRule, AuthorizationPolicy).

Their `spec` keeps Istio's API shape (camelCase keys as in the CRDs): the Istio API reference is the
contract between the parser (which validates it) and the translator (which reads it). Treat it as
read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from istiod_lite.model.meta import ConfigKey, ObjectMeta

VIRTUAL_SERVICE = "VirtualService"
DESTINATION_RULE = "DestinationRule"
AUTHORIZATION_POLICY = "AuthorizationPolicy"


@dataclass(frozen=True, slots=True)
class IstioConfig:
    meta: ObjectMeta
    spec: Mapping[str, Any]

    @property
    def key(self) -> ConfigKey:
        return self.meta.key

    @property
    def namespace(self) -> str:
        return self.meta.key.namespace

    @property
    def name(self) -> str:
        return self.meta.key.name
