"""kube-apiserver as an `ObjectSource` (the informer interface), through the official `kubernetes` client.

list: the kind's list call (all namespaces, in pages of `PAGE`), items as Kubernetes JSON with their
apiVersion and kind, and the list's resourceVersion;
watch: a streaming watch from a resourceVersion with bookmarks, events yielded as they arrive (each
with the resourceVersion it carries); a bookmark yields (None, its resourceVersion). An expired
resourceVersion (410 Gone: an ERROR event with code 410, or the HTTP status) raises `GoneError`, so
the informer lists again. The stream is read line by line here, not through `kubernetes.watch.Watch`
(which, with deserialize=False, fails on ERROR events and retries a 410 by itself).
Configuration: a kubeconfig file, else the in-cluster ServiceAccount, else ~/.kube/config.

Kinds: the core ones pyantrea reads, and NodeInterfaces as the cluster-scoped custom resource
`nodeinterfaces.pyantrea.io` (`pyantrea.lab.kubernetes.CRD`). A kind the server does not serve
(the CRD is not installed) lists as empty; its watch waits and lists again, so the kind is picked
up once it exists.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pyantrea.errors import PyantreaError
from pyantrea.k8s.informer import GoneError

GROUP = "pyantrea.io"
VERSION = "v1alpha1"
NODEINTERFACES = "nodeinterfaces"
PAGE = 500

try:
    from urllib3.exceptions import HTTPError as _Urllib3Error
except ImportError:  # pragma: no cover - urllib3 comes with the kubernetes client
    _Urllib3Error = OSError  # type: ignore[misc,assignment]
_TRANSPORT_ERRORS = (OSError, _Urllib3Error)

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


def _api_error(what: str, e: Any) -> PyantreaError:
    """A PyantreaError for an ApiException: the status and the server's own message."""
    msg = str(getattr(e, "reason", "") or "")
    body = getattr(e, "body", None)
    if body:
        try:
            msg = json.loads(body).get("message") or msg
        except (ValueError, AttributeError):
            pass
    return PyantreaError(f"{what}: {getattr(e, 'status', '?')} {msg}".rstrip())


class KubeSource:
    """`ObjectSource` on kube-apiserver. ``watches`` counts the watch requests made, ``bookmarks``
    the bookmarks received (both per kind), for tests and stats."""

    def __init__(self, kubeconfig: str | None = None, api: Any = None, connect_timeout: float = 5.0):
        from kubernetes import client

        self.api = api or api_client(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.connect_timeout = connect_timeout
        self.watches: dict[str, int] = {}
        self.bookmarks: dict[str, int] = {}
        self._absent: set[str] = set()
        self._lock = threading.Lock()

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
        items: list[dict[str, Any]] = []
        cont: str | None = None
        rv = 0
        while True:
            try:
                resp = fn(_preload_content=False, limit=PAGE, _request_timeout=(self.connect_timeout, 60),
                          **({"_continue": cont} if cont else {}), **kw)
                body = json.loads(resp.data)
            except ApiException as e:
                if e.status == 404 and kind == "NodeInterfaces":  # the CRD is not installed: nothing pinned
                    with self._lock:
                        self._absent.add(kind)
                    return [], 0, ""
                if e.status == 410:  # the continue token expired: list again from the start
                    items, cont = [], None
                    continue
                raise _api_error(f"list {kind}", e) from None
            except ValueError as e:
                raise PyantreaError(f"list {kind}: not JSON: {e}") from None
            except _TRANSPORT_ERRORS as e:  # connection refused, reset, timed out
                raise PyantreaError(f"list {kind}: {type(e).__name__}: {e}") from None
            page = body.get("items") or []
            for d in page:  # list items carry neither apiVersion nor kind
                d.setdefault("apiVersion", API_VERSIONS[kind])
                d.setdefault("kind", kind)
            items += page
            meta = body.get("metadata") or {}
            if not rv:
                rv = int(meta.get("resourceVersion") or 0)
            cont = meta.get("continue") or None
            if not cont:
                break
        with self._lock:
            self._absent.discard(kind)
        return items, rv, ""

    def watch(self, kind: str, rv: int, timeout: float, node: str | None,
              epoch: str) -> Iterator[tuple[dict[str, Any] | None, int]]:
        from kubernetes.client.exceptions import ApiException

        fn, kw = self._call(kind, node)
        with self._lock:
            absent = kind in self._absent
            self.watches[kind] = self.watches.get(kind, 0) + 1
        if absent:  # not served (yet): wait a little, then have the informer list again
            time.sleep(min(timeout, 5.0))
            raise GoneError(f"watch {kind}: the resource is not served; listing again")
        secs = max(1, int(timeout))
        try:
            resp = fn(watch=True, resource_version=str(rv), timeout_seconds=secs, allow_watch_bookmarks=True,
                      _preload_content=False, _request_timeout=(self.connect_timeout, secs + 15), **kw)
        except ApiException as e:
            if e.status == 410:
                raise GoneError(f"watch {kind}: 410 Gone") from None
            raise _api_error(f"watch {kind}", e) from None
        except _TRANSPORT_ERRORS as e:
            raise PyantreaError(f"watch {kind}: {type(e).__name__}: {e}") from None
        try:
            for line in _lines(resp):
                try:
                    ev = json.loads(line)
                except ValueError:
                    raise PyantreaError(f"watch {kind}: not a JSON event: {line[:200]!r}") from None
                typ = ev.get("type")
                obj = ev.get("object") or {}
                if typ == "ERROR":
                    if obj.get("code") == 410:
                        raise GoneError(f"watch {kind}: {obj.get('message', '410 Gone')}")
                    raise PyantreaError(f"watch {kind}: {obj.get('code')} {obj.get('message', obj)}")
                new_rv = int((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if typ == "BOOKMARK":
                    with self._lock:
                        self.bookmarks[kind] = self.bookmarks.get(kind, 0) + 1
                    yield None, new_rv
                else:
                    obj.setdefault("apiVersion", API_VERSIONS[kind])
                    obj.setdefault("kind", kind)
                    yield ev, new_rv
                rv = new_rv
        except _TRANSPORT_ERRORS as e:  # the connection broke, or the server went away
            raise PyantreaError(f"watch {kind}: {type(e).__name__}: {e}") from None
        finally:
            resp.close()
            resp.release_conn()


def _lines(resp: Any) -> Iterator[str]:
    """The lines of a streamed (chunked) response as they arrive."""
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=True):
        buf += chunk
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            line, buf = buf[:i], buf[i + 1:]
            if line.strip():
                yield line.decode("utf-8", errors="replace")
    if buf.strip():
        yield buf.decode("utf-8", errors="replace")
