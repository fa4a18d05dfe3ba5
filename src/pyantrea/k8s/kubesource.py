"""kube-apiserver as an `ObjectSource` (the informer interface), through the official `kubernetes` client.

list: the kind's list call (all namespaces), items as Kubernetes JSON with their apiVersion and kind;
watch: a streaming watch from the list's resourceVersion with bookmarks, events yielded as they
arrive; an expired resourceVersion (410 Gone) raises `GoneError`, so the informer lists again.
Configuration: a kubeconfig file, else the in-cluster ServiceAccount, else ~/.kube/config.

Kinds: the core ones pyantrea reads, and NodeInterfaces as the cluster-scoped custom resource
`nodeinterfaces.pyantrea.io` (see build/yamls).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from pyantrea.errors import PyantreaError
from pyantrea.k8s.informer import GoneError

GROUP = "pyantrea.io"
VERSION = "v1alpha1"
NODEINTERFACES = "nodeinterfaces"

API_VERSIONS = {"Node": "v1", "Pod": "v1", "Namespace": "v1", "Service": "v1", "Endpoints": "v1",
                "NetworkPolicy": "networking.k8s.io/v1", "NodeInterfaces": f"{GROUP}/{VERSION}"}


def api_client(kubeconfig: str | None = None) -> Any:
    """An ApiClient from a kubeconfig file, the in-cluster configuration, or ~/.kube/config."""
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


class KubeSource:
    def __init__(self, kubeconfig: str | None = None, api: Any = None):
        from kubernetes import client

        self.api = api or api_client(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def _call(self, kind: str, node: str | None) -> tuple[Callable[..., Any], dict[str, Any]]:
        kw: dict[str, Any] = {}
        if kind == "Pod" and node:
            kw["field_selector"] = f"spec.nodeName={node}"
        elif kind in ("Node", "NodeInterfaces") and node:
            kw["field_selector"] = f"metadata.name={node}"
        if kind == "NodeInterfaces":
            def custom(**k: Any) -> Any:
                return self.custom.list_cluster_custom_object(GROUP, VERSION, NODEINTERFACES, **k)
            return custom, kw
        calls: dict[str, Callable[..., Any]] = {
            "Node": self.core.list_node, "Pod": self.core.list_pod_for_all_namespaces,
            "Namespace": self.core.list_namespace, "Service": self.core.list_service_for_all_namespaces,
            "Endpoints": self.core.list_endpoints_for_all_namespaces,
            "NetworkPolicy": self.net.list_network_policy_for_all_namespaces}
        fn = calls.get(kind)
        if fn is None:
            raise PyantreaError(f"KubeSource: kind {kind!r} is not watched")
        return fn, kw

    def list_objects(self, kind: str, node: str | None) -> tuple[list[dict[str, Any]], int, str]:
        from kubernetes.client.exceptions import ApiException

        fn, kw = self._call(kind, node)
        try:
            resp = fn(_preload_content=False, **kw)
            body = json.loads(resp.data)
        except ApiException as e:
            raise PyantreaError(f"list {kind}: {e.status} {e.reason}") from None
        items = body.get("items") or []
        for d in items:  # list items carry neither apiVersion nor kind
            d.setdefault("apiVersion", API_VERSIONS[kind])
            d.setdefault("kind", kind)
        return items, int(body["metadata"]["resourceVersion"]), ""

    def watch(self, kind: str, rv: int, timeout: float, node: str | None,
              epoch: str) -> Iterator[tuple[dict[str, Any] | None, int]]:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        fn, kw = self._call(kind, node)
        w = watch.Watch()
        try:
            for ev in w.stream(fn, resource_version=str(rv), timeout_seconds=max(1, int(timeout)),
                               allow_watch_bookmarks=True, deserialize=False, **kw):
                typ = ev.get("type")
                obj = ev.get("object") or {}
                if typ == "ERROR":
                    if obj.get("code") == 410:
                        raise GoneError(f"watch {kind}: {obj.get('message', '410 Gone')}")
                    raise PyantreaError(f"watch {kind}: {obj.get('message', obj)}")
                new_rv = int((obj.get("metadata") or {}).get("resourceVersion") or rv)
                yield (None if typ == "BOOKMARK" else ev), new_rv
                rv = new_rv
        except ApiException as e:
            if e.status == 410:
                raise GoneError(f"watch {kind}: 410 Gone") from None
            raise PyantreaError(f"watch {kind}: {e.status} {e.reason}") from None
        finally:
            w.stop()
