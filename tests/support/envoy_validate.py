"""Turn a translated ResourceSet into a static Envoy bootstrap that `envoy --mode validate` can check:
listeners get the RouteConfiguration named by their RDS inline (a Scoped RDS listener: an inline scope per
RouteConfiguration of the listener, `http.<port>/...`), EDS clusters become STATIC with their
ClusterLoadAssignment as load_assignment."""

from __future__ import annotations

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from istiod_lite.xds import types
from istiod_lite.xds.types import ResourceSet

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _inline_routes(listener: listener_pb2.Listener, routes: dict[str, route_pb2.RouteConfiguration]
                   ) -> listener_pb2.Listener:
    out = listener_pb2.Listener()
    out.CopyFrom(listener)
    for chain in out.filter_chains:
        for f in chain.filters:
            if f.typed_config.type_url != HCM_TYPE:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            f.typed_config.Unpack(hcm)
            if hcm.HasField("rds"):
                name = hcm.rds.route_config_name
                if name not in routes:
                    raise AssertionError(f"listener {listener.name} refers to missing RouteConfiguration {name}")
                hcm.route_config.CopyFrom(routes[name])  # oneof: clears rds
            elif hcm.HasField("scoped_routes") and hcm.scoped_routes.HasField("scoped_rds"):
                sr = hcm.scoped_routes
                mine = [n for n in sorted(routes) if n.startswith(sr.name + "/")]
                sr.ClearField("scoped_rds")
                for n in mine:
                    scope = sr.scoped_route_configurations_list.scoped_route_configurations.add(name=n)
                    scope.route_configuration.CopyFrom(routes[n])
                    scope.key.fragments.add(string_key=sr.name)
                    scope.key.fragments.add(string_key=n)
            f.typed_config.Pack(hcm)
    return out


def _static_cluster(cluster: cluster_pb2.Cluster, assignments: dict) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster()
    out.CopyFrom(cluster)
    if out.type == cluster_pb2.Cluster.EDS:
        if out.name not in assignments:
            raise AssertionError(f"EDS cluster {out.name} has no ClusterLoadAssignment")
        out.ClearField("eds_cluster_config")
        out.type = cluster_pb2.Cluster.STATIC
        out.load_assignment.CopyFrom(assignments[out.name])
    return out


def static_bootstrap(resources: ResourceSet) -> bootstrap_pb2.Bootstrap:
    routes = dict(resources.messages(types.ROUTE))
    assignments = dict(resources.messages(types.ENDPOINT))
    b = bootstrap_pb2.Bootstrap()
    b.node.id = "validate"
    b.node.cluster = "validate"
    for name in resources.names(types.LISTENER):
        b.static_resources.listeners.append(_inline_routes(resources.messages(types.LISTENER)[name], routes))
    for name in resources.names(types.CLUSTER):
        b.static_resources.clusters.append(_static_cluster(resources.messages(types.CLUSTER)[name], assignments))
    _hbone_support(b)
    return b


def _hbone_support(b: bootstrap_pb2.Bootstrap) -> None:
    """What the HBONE layout needs from the bootstrap (istiod-lite's bootstrap has the same extension): the
    internal_listener extension; SDS-over-ADS references become static secrets (validate mode crashes with an
    ADS config), made from a throw-away CA so the TLS contexts are really loaded."""
    from envoy.extensions.bootstrap.internal_listener.v3 import internal_listener_pb2

    ext = b.bootstrap_extensions.add(name="envoy.bootstrap.internal_listener")
    ext.typed_config.Pack(internal_listener_pb2.InternalListener())
    used = False
    for lst in b.static_resources.listeners:
        for chain in lst.filter_chains:
            used |= _static_sds(chain.transport_socket)
    for c in b.static_resources.clusters:
        used |= _static_sds(c.transport_socket)
    if used:
        b.static_resources.secrets.extend(_throwaway_secrets())


def _static_sds(sock) -> bool:
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    for cls in (tls_pb2.DownstreamTlsContext, tls_pb2.UpstreamTlsContext):
        if sock.typed_config.type_url.endswith(cls.DESCRIPTOR.full_name):
            ctx = cls()
            sock.typed_config.Unpack(ctx)
            common = ctx.common_tls_context
            if not common.tls_certificate_sds_secret_configs and not common.HasField("combined_validation_context"):
                continue  # no SDS reference (e.g. a DestinationRule SIMPLE/MUTUAL context with files)
            for cfg in common.tls_certificate_sds_secret_configs:
                cfg.ClearField("sds_config")
            if common.HasField("combined_validation_context"):
                common.combined_validation_context.validation_context_sds_secret_config.ClearField("sds_config")
            sock.typed_config.Pack(ctx)
            return True
    return False


def _throwaway_secrets():
    from istiod_lite.identity import CertificateAuthority, spiffe_id
    from istiod_lite.translate.hbone_tls import secrets
    import datetime as dt

    ca = CertificateAuthority.self_signed("cluster.local")
    cert = ca.issue(spiffe_id("cluster.local", "validate", "validate"), dt.timedelta(hours=1))
    return list(secrets(cert.chain_pem, cert.key_pem, ca.root_pem).values())


def bootstrap_json(resources: ResourceSet) -> str:
    return json_format.MessageToJson(static_bootstrap(resources), preserving_proto_field_name=True)
