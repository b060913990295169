"""A STAND-IN for a Kubernetes API server, on loopback, for launchctl's kubernetes runner.

This is not Kubernetes. No API server can run on these machines (no kind, k3s or envtest),
so this small HTTP server speaks the few endpoints the runner uses, in the shapes the API
returns them, well enough for the official ``kubernetes`` client to read its answers into
its own model classes:

- batch/v1 Jobs: create (``generateName``), read, list (in a namespace or all, by label
  selector), delete (propagation policy, grace period);
- v1 Pods: list by label selector, read log (``follow`` streams it, chunked);
- v1 Secrets: create, replace, patch (merge), read, delete.

Its "controller" makes one Pod per Job, and its "kubelet" runs the Pod's first container's
``command`` + ``args`` as a local process (the image is NOT pulled or used: the command
runs on this machine), with the container's env (``secretKeyRef`` read from the stored
Secrets), and records the exit as the API does (container state terminated, Pod phase,
Job condition ``Complete`` or ``Failed``). Given a Docker engine (``docker``), the
"kubelet" instead pulls the container's image (from its registry, as a node would) and runs
it there with that env. Test hooks: ``preempt`` (a DisruptionTarget
condition, then the process killed), ``hold`` (pods stay Pending, Unschedulable),
``fail_image`` (an image name that cannot be pulled: ImagePullBackOff), ``down`` (every
request answered 503, as while an API server restarts).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import signal
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"].get("labels") or {})


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


class Pod:
    """One pod and the local process that stands in for its container."""

    def __init__(self, server: StandIn, job: dict[str, Any]) -> None:
        self.server = server
        self.job = job
        meta = job["metadata"]
        template = job["spec"]["template"]
        self.spec = template["spec"]
        self.container = self.spec["containers"][0]
        name = f"{meta['name']}-{secrets.token_hex(3)[:5]}"
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels.update(
            {
                "job-name": meta["name"],
                "batch.kubernetes.io/job-name": meta["name"],
                "controller-uid": meta["uid"],
            }
        )
        self.obj: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "uid": str(uuid.uuid4()),
                "labels": labels,
                "creationTimestamp": _now(),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": self.spec,
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
            },
        }
        self.log = bytearray()
        self.proc: subprocess.Popen[bytes] | None = None
        self._container: Any = None
        self.preempted: str | None = None

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    def _container_status(self, state: dict[str, Any]) -> None:
        self.obj["status"]["containerStatuses"] = [
            {
                "name": self.container.get("name", "launch0"),
                "image": self.container.get("image", ""),
                "imageID": "",
                "ready": "running" in state,
                "restartCount": 0,
                "state": state,
            }
        ]

    def run(self) -> None:
        server = self.server
        image = str(self.container.get("image", ""))
        if server.fail_image and server.fail_image in image:
            with server.lock:
                self._container_status(
                    {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": f"Back-off pulling image {image}",
                        }
                    }
                )
            return
        if server.docker is not None:
            repo, _, tag = image.rpartition(":")
            server.docker.images.pull(repo, tag=tag)  # from the registry, as a node would
            server.pulled.append(image)
        while server.held.is_set():
            with server.lock:
                self.obj["status"]["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                    }
                ]
            time.sleep(0.05)
        with server.lock:
            self.obj["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
            env = {} if server.docker is not None else dict(os.environ)
            for item in self.container.get("env") or []:
                if "value" in item:
                    env[item["name"]] = str(item["value"])
                ref = ((item.get("valueFrom") or {}).get("secretKeyRef")) or {}
                if ref:
                    secret = server.secrets.get((self.obj["metadata"]["namespace"], ref["name"]))
                    data = (secret or {}).get("stringData") or {}
                    if ref["key"] not in data:
                        self._container_status(
                            {
                                "waiting": {
                                    "reason": "CreateContainerConfigError",
                                    "message": f"secret {ref['name']!r} not found",
                                }
                            }
                        )
                        return
                    env[item["name"]] = data[ref["key"]]
            if server.docker is not None:
                self._container = server.docker.containers.create(
                    image,
                    entrypoint=self.container.get("command"),
                    command=self.container.get("args"),
                    environment=env,
                    labels={"launchctl.standin": "true"},
                )
        if server.docker is not None:
            return self._run_in_docker()
        with server.lock:
            command = [*(self.container.get("command") or []), *(self.container.get("args") or [])]
            self.proc = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=server.workdir,
                start_new_session=True,
            )
            self.obj["status"]["phase"] = "Running"
            self._container_status({"running": {"startedAt": _now()}})
            server.changed.notify_all()
        assert self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
            with server.lock:
                self.log += chunk
                server.changed.notify_all()
        self._ended(self.proc.wait())

    def _run_in_docker(self) -> None:
        container = self._container
        container.start()
        with self.server.lock:
            self.obj["status"]["phase"] = "Running"
            self._container_status({"running": {"startedAt": _now()}})
        for chunk in container.logs(stream=True, follow=True):
            with self.server.lock:
                self.log += chunk
                self.server.changed.notify_all()
        code = int(container.wait()["StatusCode"])
        container.remove(force=True)
        self._ended(code)

    def _ended(self, code: int) -> None:
        server = self.server
        with server.lock:
            code = code if code >= 0 else 128 - code
            reason = "Completed" if code == 0 else "Error"
            self._container_status(
                {"terminated": {"exitCode": code, "reason": reason, "finishedAt": _now()}}
            )
            self.obj["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            status = self.job["status"]
            status.pop("active", None)
            if code == 0:
                status["succeeded"] = 1
                status["conditions"] = [{"type": "Complete", "status": "True"}]
            else:
                status["failed"] = 1
                status["conditions"] = [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                    }
                ]
            server.changed.notify_all()

    def kill(self, sig: int) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.kill(signal=int(sig))
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)


class StandIn:
    """The stand-in API server: ``url`` for a kubeconfig, ``kubeconfig(path)`` writes one."""

    def __init__(self, workdir: Path, docker: Any = None) -> None:
        self.workdir = workdir
        self.docker = docker  # a docker-py client: containers run there, images pulled
        self.pulled: list[str] = []
        self.log_reads: list[dict[str, str]] = []  # the query of each pod log read
        self.created_secrets: list[dict[str, Any]] = []  # every Secret as it was sent
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.deletes: list[dict[str, Any]] = []  # the options of each Job delete
        self.created: list[dict[str, Any]] = []  # every Job manifest as it was sent
        self.held = threading.Event()
        self.down = threading.Event()  # set: every request gets 503 (an API server restarting)
        self.fail_image: str | None = None
        handler = type("Handler", (_Handler,), {"standin": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        with self.lock:
            for pod in self.pods.values():
                pod.kill(signal.SIGKILL)

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": "stand-in"}}],
            "contexts": [
                {
                    "name": "standin",
                    "context": {"cluster": "standin", "user": "standin", "namespace": namespace},
                }
            ],
        }
        path.write_text(json.dumps(config))
        return path

    # -- test hooks ------------------------------------------------------------------------
    def pods_of(self, run_id: str) -> list[Pod]:
        with self.lock:
            return [
                p
                for p in self.pods.values()
                if p.obj["metadata"]["labels"].get("launchctl.run_id") == run_id
            ]

    def preempt(self, run_id: str, reason: str = "PreemptionByScheduler") -> None:
        """What the scheduler does to a pod it preempts: a DisruptionTarget condition, then
        the container killed, the pod failed and its Job failed."""
        for pod in self.pods_of(run_id):
            with self.lock:
                pod.obj["status"]["conditions"].append(
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": reason,
                        "message": "Preempted in order to admit critical pod",
                    }
                )
            pod.kill(signal.SIGTERM)

    # -- the API ---------------------------------------------------------------------------
    def create_job(self, namespace: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.created.append(json.loads(json.dumps(body)))
            meta = body.setdefault("metadata", {})
            if not meta.get("name"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            if (namespace, meta["name"]) in self.jobs:
                return 409, _status(409, "AlreadyExists", f'jobs.batch "{meta["name"]}" exists')
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
            body["status"] = {"active": 1, "startTime": _now()}
            self.jobs[(namespace, meta["name"])] = body
            pod = Pod(self, body)
            self.pods[(namespace, pod.name)] = pod
        threading.Thread(target=pod.run, daemon=True).start()
        return 201, body

    def delete_job(self, namespace: str, name: str, options: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            job = self.jobs.get((namespace, name))
            if job is None:
                return 404, _status(404, "NotFound", f'jobs.batch "{name}" not found')
            self.deletes.append(options)
            job["metadata"]["deletionTimestamp"] = _now()
            pods = [p for p in self.pods.values() if p.job is job]
        grace = float(options.get("gracePeriodSeconds") or 0)

        def reap() -> None:
            for pod in pods:
                pod.kill(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(
                p.proc is not None and p.proc.poll() is None for p in pods
            ):
                time.sleep(0.05)
            for pod in pods:
                pod.kill(signal.SIGKILL)
            with self.lock:
                for pod in pods:
                    self.pods.pop((namespace, pod.name), None)
                self.jobs.pop((namespace, name), None)
                for key, secret in list(self.secrets.items()):  # the garbage collector
                    owners = secret["metadata"].get("ownerReferences") or []
                    if any(o.get("uid") == job["metadata"]["uid"] for o in owners):
                        self.secrets.pop(key)

        threading.Thread(target=reap, daemon=True).start()
        return 200, job


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def _route(self, method: str) -> None:
        s = self.standin
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        s.requests.append((method, url.path))
        if s.down.is_set():
            return self._send(503, _status(503, "ServiceUnavailable", "the stand-in is down"))
        selector = query.get("labelSelector")
        # /apis/batch/v1/jobs
        if parts == ["apis", "batch", "v1", "jobs"] and method == "GET":
            with s.lock:
                items = [j for j in s.jobs.values() if _matches(_labels(j), selector)]
                return self._send(
                    200,
                    {"kind": "JobList", "apiVersion": "batch/v1", "items": items, "metadata": {}},
                )
        batch_ns = parts[:4] == ["apis", "batch", "v1", "namespaces"]
        if batch_ns and len(parts) >= 6 and parts[5] == "jobs":
            ns = parts[4]
            if len(parts) == 6 and method == "POST":
                return self._send(*s.create_job(ns, self._body()))
            if len(parts) == 6 and method == "GET":
                with s.lock:
                    items = [
                        j
                        for (n, _), j in s.jobs.items()
                        if n == ns and _matches(_labels(j), selector)
                    ]
                    return self._send(
                        200,
                        {
                            "kind": "JobList",
                            "apiVersion": "batch/v1",
                            "items": items,
                            "metadata": {},
                        },
                    )
            name = parts[6]
            if method == "GET":
                with s.lock:
                    job = s.jobs.get((ns, name))
                    if job is None:
                        missing = _status(404, "NotFound", f'jobs.batch "{name}" not found')
                        return self._send(404, missing)
                    return self._send(200, job)
            if method == "DELETE":
                options = {**self._body(), **{k: v for k, v in query.items()}}
                return self._send(*s.delete_job(ns, name, options))
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5:
            ns, kind = parts[3], parts[4]
            if kind == "pods" and len(parts) == 5 and method == "GET":
                with s.lock:
                    items = [
                        p.obj
                        for (n, _), p in s.pods.items()
                        if n == ns and _matches(p.obj["metadata"]["labels"], selector)
                    ]
                    return self._send(
                        200, {"kind": "PodList", "apiVersion": "v1", "items": items, "metadata": {}}
                    )
            if kind == "pods" and len(parts) == 7 and parts[6] == "log" and method == "GET":
                s.log_reads.append(query)
                pod = s.pods.get((ns, parts[5]))
                names = [c.get("name") for c in pod.spec["containers"]] if pod else []
                if len(names) > 1 and "container" not in query:  # as the API answers
                    why = f"a container name must be specified for pod {parts[5]}: {names}"
                    return self._send(400, _status(400, "BadRequest", why))
                return self._log(ns, parts[5], query.get("follow") == "true")
            if kind == "secrets":
                return self._secret(method, ns, parts[5] if len(parts) > 5 else None)
        why = f"the stand-in does not serve {method} {url.path}"
        self._send(404, _status(404, "NotFound", why))

    def _secret(self, method: str, ns: str, name: str | None) -> None:
        s = self.standin
        with s.lock:
            if name is None and method == "POST":
                body = self._body()
                key = (ns, body["metadata"]["name"])
                if key in s.secrets:
                    return self._send(409, _status(409, "AlreadyExists", "secret exists"))
                body["metadata"].update(namespace=ns, uid=str(uuid.uuid4()))
                s.secrets[key] = body
                s.created_secrets.append(json.loads(json.dumps(body)))
                return self._send(201, body)
            assert name is not None
            if method in ("PATCH", "GET", "DELETE") and (ns, name) not in s.secrets:
                return self._send(404, _status(404, "NotFound", f'secrets "{name}" not found'))
            if method == "PUT":
                body = self._body()
                body["metadata"].update(namespace=ns, uid=str(uuid.uuid4()))
                s.secrets[(ns, name)] = body
                return self._send(200, body)
            if method == "PATCH":
                patch = self._body()
                secret = s.secrets[(ns, name)]
                secret["metadata"].update(patch.get("metadata") or {})
                return self._send(200, secret)
            if method == "GET":
                return self._send(200, s.secrets[(ns, name)])
            if method == "DELETE":
                return self._send(200, s.secrets.pop((ns, name)))
        self._send(405, _status(405, "MethodNotAllowed", method))

    def _log(self, ns: str, name: str, follow: bool) -> None:
        s = self.standin
        with s.lock:
            pod = s.pods.get((ns, name))
        if pod is None:
            return self._send(404, _status(404, "NotFound", f'pods "{name}" not found'))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        while True:
            with s.lock:
                data = bytes(pod.log[sent:])
                statuses = str(pod.obj["status"].get("containerStatuses"))
                ended = pod.obj["status"]["phase"] in ("Succeeded", "Failed") or (
                    pod.proc is None and "waiting" in statuses
                )
                if not data and follow and not ended and (ns, name) in s.pods:
                    s.changed.wait(0.2)
                    continue
            if data:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                sent += len(data)
                continue
            break
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def do_DELETE(self) -> None:
        self._route("DELETE")
