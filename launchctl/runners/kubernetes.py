"""kubernetes: run a run as a batch/v1 Job through the official ``kubernetes`` client.

The queue config is a Job manifest in W&B's shape (``launchctl.runners.k8s_manifest``
makes the run's Job from it and holds the hardening rules); the Job and its Pod read as
the run's state by ``launchctl.runners.k8s_status``. This module speaks to the API server:

- start: the run's Secret (its secret env values, read from launchctl's secret store) and,
  with registry credentials, an image pull Secret, then the Job (a generated name), then
  the Secrets are made the Job's dependents, so the cluster removes them with it;
- follow: the Job and its Pod read every ``LAUNCHCTL_K8S_POLL_S`` seconds (default 1; five
  times less often while the Pod's log streams, and at once when that stream ends), the
  Pod's log streamed (``follow``) into the run's log, masked, every byte once;
- stop: the Job deleted with foreground propagation (its Pod goes first);
- release (the end is recorded): the Job and the Secrets deleted;
- adopt (a restarted agent): the Job named in the run's folder, else found by its label.

The client reads ``KUBECONFIG`` (else ``~/.kube/config``, else the in-cluster service
account). ``kubernetes`` is imported only inside functions: ``queue create`` reads this
module's registration.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from launchctl.errors import RunnerError
from launchctl.masking import Masker
from launchctl.runners import k8s_manifest, k8s_status, logfile
from launchctl.runners.base import Exit, Launch
from launchctl.runners.registry import register

JOB_NOTE = "k8s_job"  # in the run's folder: its Job (namespace, name, uid) and log start
ENGINE_BACK_S = 300.0  # how long an API server that does not answer is waited for
# While the pod's log streams, its Job is read this many times less often: the stream's end
# (the container ended, was preempted or deleted) and a stop wake the reader at once.
FOLLOWED_FACTOR = 5


def poll_s() -> float:
    try:
        return max(0.05, float(os.environ.get("LAUNCHCTL_K8S_POLL_S", "1")))
    except ValueError:
        return 1.0


def _short(exc: BaseException) -> str:
    """One line for an API error: its status and reason, or the exception's text."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    if status:
        message = None
        with contextlib.suppress(Exception):
            message = json.loads(body).get("message") if body else None
        reason = getattr(exc, "reason", "") or ""
        return f"{status} {reason}: {message}" if message else f"{status} {reason}".strip()
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("For further information")]
    return "; ".join(lines)[:300] if lines else type(exc).__name__


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return int(status) if isinstance(status, int) else None


class Cluster:
    """The API clients (batch and core), and the namespace the kubeconfig's context names."""

    def __init__(self, api: Any = None, namespace: str = "default") -> None:
        from kubernetes import client

        self.api: Any = api if api is not None else client.ApiClient()
        self.batch: Any = client.BatchV1Api(self.api)  # typed Any: read by attribute
        self.core: Any = client.CoreV1Api(self.api)
        self.namespace = namespace

    @classmethod
    def connect(cls) -> Cluster:
        """From ``KUBECONFIG`` / ``~/.kube/config``, or the pod's service account."""
        from kubernetes import config

        namespace = "default"
        try:
            if os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().exists():
                api = config.new_client_from_config()
                _, active = config.list_kube_config_contexts()
                namespace = str(((active or {}).get("context") or {}).get("namespace") or namespace)
            else:
                config.load_incluster_config()
                api = None
                with contextlib.suppress(OSError):
                    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
                    namespace = Path(path).read_text().strip() or namespace
        except Exception as exc:
            raise RunnerError(
                "no Kubernetes cluster configured: set KUBECONFIG (or write ~/.kube/config),"
                f" or run the agent in a pod ({_short(exc)})",
                stage="agent",
            ) from None
        return cls(api, namespace)


def _secret_env(launch: Launch) -> frozenset[str]:
    """The names of the run's env that hold secret values (the queue's ``env`` references)."""
    from launchctl.secrets import is_secret_ref

    env = launch.resource_args.get("env")
    if not isinstance(env, dict):
        return frozenset()
    return frozenset(str(k) for k, v in env.items() if is_secret_ref(v) and str(k) in launch.env)


def _registry_host(image: str) -> str | None:
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def pull_registry(launch: Launch) -> str | None:
    """The registry the run's image comes from, when it is the one the queue's registry
    credentials are for (they go to no other registry); else None."""
    if not (launch.registry_auth and launch.image and launch.registry):
        return None
    host = _registry_host(launch.image)
    wanted = launch.registry.split("://", 1)[-1].split("/", 1)[0]
    return host if host is not None and host == wanted else None


def _pull_config(host: str, auth: dict[str, str]) -> str:
    """A ``.dockerconfigjson`` for ``host`` with the queue's registry credentials."""
    user, password = auth.get("username", ""), auth.get("password", "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"username": user, "password": password, "auth": token}}})


@register(options=None, check_config=k8s_manifest.check_config)  # the Job's own schema
class KubernetesRunner:
    resource = "kubernetes"

    def __init__(self, cluster: Cluster | None = None) -> None:
        self._cluster = cluster

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            self._cluster = Cluster.connect()
        return self._cluster

    def manifest(self, launch: Launch) -> tuple[str, dict[str, Any]]:
        """The run's namespace and Job manifest; a RunnerError (stage agent) for one that
        breaks a rule."""
        own = ((launch.run.get("spec") or {}).get("resource_args") or {}).get(self.resource)
        if isinstance(own, dict) and "allow" in own:
            raise RunnerError(
                "a run's own resource args may not hold allow: only its queue's config grants"
                " hardening exceptions",
                stage="agent",
            )
        inputs = k8s_manifest.JobInputs(
            run_id=str(launch.run["id"]),
            queue=str(launch.run.get("queue_name") or "direct"),
            agent_id=launch.agent_id,
            image=launch.image,
            entrypoint=list(launch.entrypoint),
            args=list(launch.args),
            env=dict(launch.env),
            secret_env=_secret_env(launch),
            cpus=launch.limits.cpus,
            memory=launch.limits.memory,
            pull_secret=pull_registry(launch) is not None,
            default_namespace=self.cluster.namespace,
        )
        try:
            return k8s_manifest.build_job(launch.resource_args, inputs)
        except k8s_manifest.ManifestError as exc:
            raise RunnerError(str(exc), stage="agent") from None

    def start(self, launch: Launch) -> JobHandle:
        namespace, job = self.manifest(launch)
        run_id = str(launch.run["id"])
        masker = Masker(launch.secrets)
        secrets: list[str] = []
        env_secret = {k: launch.env[k] for k in _secret_env(launch)}
        try:
            if env_secret:
                name = k8s_manifest.secret_name(run_id)
                self._put_secret(namespace, name, run_id, {"stringData": env_secret})
                secrets.append(name)
            host = pull_registry(launch)
            if host is not None and launch.registry_auth:
                name = k8s_manifest.pull_secret_name(run_id)
                data = {".dockerconfigjson": _pull_config(host, launch.registry_auth)}
                self._put_secret(
                    namespace,
                    name,
                    run_id,
                    {"stringData": data, "type": "kubernetes.io/dockerconfigjson"},
                )
                secrets.append(name)
            created = self.cluster.batch.create_namespaced_job(namespace, job)
        except Exception as exc:
            for name in secrets:
                with contextlib.suppress(Exception):
                    self.cluster.core.delete_namespaced_secret(name, namespace)
            raise RunnerError(
                f"the Kubernetes API did not create the run's Job: {masker.mask_text(_short(exc))}"
            ) from None
        name, uid = created.metadata.name, created.metadata.uid
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}
        for secret in secrets:  # removed by the cluster with the Job, whatever happens here
            with contextlib.suppress(Exception):
                self.cluster.core.patch_namespaced_secret(
                    secret, namespace, {"metadata": {"ownerReferences": [owner]}}
                )
        _write_note(launch.log_path, namespace, name, uid, secrets)
        return JobHandle(
            self.cluster, namespace, name, uid, run_id, launch.log_path, launch.on_exit,
            launch.secrets, secrets=secrets,
        )  # fmt: skip

    def _put_secret(self, namespace: str, name: str, run_id: str, body: dict[str, Any]) -> None:
        """Create the run's Secret (replacing one an earlier attempt left)."""
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {k8s_manifest.LABEL_RUN: run_id}},
            "type": "Opaque",
            **body,
        }
        try:
            self.cluster.core.create_namespaced_secret(namespace, secret)
        except Exception as exc:
            if _status(exc) != 409:
                raise
            self.cluster.core.replace_namespaced_secret(name, namespace, secret)

    def adopt(
        self,
        run: dict[str, Any],
        log_path: Path,
        on_exit: Callable[[], None],
        secrets: Sequence[str] = (),
    ) -> JobHandle | None:
        """Find a lost agent's Job (named in the run's folder, else by its run-id label) and
        follow it: to its end if it still runs, or to how it ended."""
        note = _read_note(log_path)
        run_id = str(run["id"])
        job = None
        if note is not None:
            try:
                job = self.cluster.batch.read_namespaced_job(note["name"], note["namespace"])
            except Exception as exc:
                if _status(exc) != 404:
                    raise
        if job is None or (note is not None and job.metadata.uid != note.get("uid")):
            selector = f"{k8s_manifest.LABEL_RUN}={run_id}"
            found = self.cluster.batch.list_job_for_all_namespaces(label_selector=selector).items
            live = [j for j in found if j.metadata.deletion_timestamp is None]
            job = max(live, key=lambda j: str(j.metadata.creation_timestamp), default=None)
        if job is None:
            return None
        copied = 0
        if note is not None and note.get("uid") == job.metadata.uid:
            copied = _copied_so_far(log_path, note.get("log_start"))
        kept = list(note.get("secrets") or []) if note else []
        return JobHandle(
            self.cluster, job.metadata.namespace, job.metadata.name, job.metadata.uid, run_id,
            log_path, on_exit, secrets, secrets=kept, copied=copied,
        )  # fmt: skip


def _write_note(log_path: Path, namespace: str, name: str, uid: str, secrets: list[str]) -> None:
    """Note the run's Job and where its output begins in the run's log, for adoption."""
    note = log_path.parent / JOB_NOTE
    start = log_path.stat().st_size if log_path.exists() else 0
    data = {"namespace": namespace, "name": name, "uid": uid, "log_start": start,
            "secrets": secrets}  # fmt: skip
    with contextlib.suppress(OSError):
        tmp = note.with_name(note.name + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(note)


def _read_note(log_path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((log_path.parent / JOB_NOTE).read_text()[:4096])
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ("name", "namespace", "uid")
    ):
        return None
    return data


def _copied_so_far(log_path: Path, start: Any) -> int:
    try:
        size = log_path.stat().st_size
    except OSError:
        return 0
    if not isinstance(start, int) or start > size:
        return 0
    return size - start


class JobHandle:
    """A started (or adopted) Job: one thread reads its Job and Pod, another copies the Pod's
    log into the run's log; both ride out an API server that stops answering for a while."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        name: str,
        uid: str,
        run_id: str,
        log_path: Path,
        on_exit: Callable[[], None],
        masks: Sequence[str] = (),
        *,
        secrets: Sequence[str] = (),
        copied: int = 0,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.run_id = run_id
        self.pid: int | None = None
        self.pid_started: str | None = None
        self.container_id = f"job {namespace}/{name}"  # the agent's note when it runs
        self._log_path = log_path
        self._masks = list(masks)
        self._masker = Masker(self._masks)
        self._secrets = list(secrets)
        self._copied = copied
        self._pod: Any = None  # the latest pod seen (an evicted one is deleted)
        self._pod_ended = threading.Event()
        self._stopping = False
        self._state: str | None = None
        self._exit: Exit | None = None
        self._log_error: str | None = None
        self._logs: threading.Thread | None = None
        self._done = threading.Event()
        self._wake = on_exit  # the agent's waker
        self._nudge = threading.Event()  # read the Job now: the log stream ended, a stop
        self._streaming = False  # the Pod's log is being followed
        self._watcher = threading.Thread(target=self._watch, args=(on_exit,), daemon=True)
        self._watcher.start()

    # -- what the agent asks -------------------------------------------------------------
    def poll(self) -> Exit | None:
        return self._exit if self._done.is_set() else None

    def engine_state(self) -> str | None:
        """The engine's word for the run: queued, starting, then the pod (and node) it
        runs in; None once it ended."""
        return None if self._done.is_set() else self._state

    def stop(self, grace_s: float) -> None:
        if self._done.is_set() or self._stopping:
            return
        self._stopping = True

        def stop() -> None:
            with contextlib.suppress(Exception):
                self.cluster.batch.delete_namespaced_job(
                    self.name,
                    self.namespace,
                    propagation_policy="Foreground",
                    grace_period_seconds=max(0, round(grace_s)),
                )
            self._nudge.set()

        threading.Thread(target=stop, daemon=True).start()

    def release(self) -> None:
        """The run's end is recorded: delete its Job (and Pod) and its Secrets."""
        with contextlib.suppress(Exception):
            self.cluster.batch.delete_namespaced_job(
                self.name, self.namespace, propagation_policy="Background"
            )
        for secret in self._secrets:
            with contextlib.suppress(Exception):
                self.cluster.core.delete_namespaced_secret(secret, self.namespace)

    # -- the watcher -----------------------------------------------------------------------
    def _watch(self, on_exit: Callable[[], None]) -> None:
        try:
            self._exit = self._follow()
        except Exception as exc:  # never leave the run unrecorded
            self._exit = Exit(code=None, message=f"lost the Job: {_short(exc)}")
        finally:
            self._pod_ended.set()
            if self._logs is not None:
                self._logs.join(timeout=30)
            if self._log_error is not None:
                self._exit = Exit(code=None, message=self._log_error)
            if self._exit is not None and self._exit.message:
                self._exit.message = self._masker.mask_text(self._exit.message)
            self._done.set()
            on_exit()

    def _follow(self) -> Exit:
        away_since: float | None = None
        while True:
            try:
                job = self.cluster.batch.read_namespaced_job(self.name, self.namespace)
                pods = self.cluster.core.list_namespaced_pod(
                    self.namespace, label_selector=f"{k8s_manifest.LABEL_RUN}={self.run_id}"
                ).items
                away_since = None
            except Exception as exc:
                if _status(exc) == 404:
                    if self._stopping:
                        return Exit(code=None, message="stopped: its Job was deleted")
                    return Exit(code=None, message="its Job was deleted from outside launchctl")
                if away_since is None:
                    away_since = time.monotonic()
                elif time.monotonic() - away_since > ENGINE_BACK_S:
                    return Exit(code=None, message=f"lost the Kubernetes API: {_short(exc)}")
                time.sleep(poll_s())
                continue
            mine = [p for p in pods if self._owned(p)]
            pod = k8s_status.newest(mine) or self._pod
            self._pod = pod
            if pod is not None and self._logs is None and _has_started(pod):
                self._logs = threading.Thread(target=self._copy_logs, daemon=True)
                self._logs.start()
            state = k8s_status.engine_state(job, pod) or k8s_status.running_on(pod)
            if state != self._state:
                self._state = state
                self._wake()  # the agent notes the engine's word on the run
            found = k8s_status.job_exit(job, pod)
            if found is not None and "ImagePullBackOff" in (found.message or ""):
                found.message = f"{found.message}{_pull_hint(pod)}"
            if found is not None:
                if self._logs is None and pod is not None and _has_started(pod):
                    self._logs = threading.Thread(target=self._copy_logs, daemon=True)
                    self._logs.start()
                return found
            if self._stopping and job.metadata.deletion_timestamp is not None and not mine:
                return Exit(code=None, message="stopped: its Job was deleted")
            self._nudge.wait(poll_s() * (FOLLOWED_FACTOR if self._streaming else 1))
            self._nudge.clear()

    def _owned(self, pod: Any) -> bool:
        refs = pod.metadata.owner_references or []
        return any(ref.uid == self.uid for ref in refs) or not refs

    # -- the log ---------------------------------------------------------------------------
    def _copy_logs(self) -> None:
        """Stream the Pod's log into the run's log; read again (skipping what is there) when
        the stream breaks, until the Pod has ended and one last read is done."""
        while True:
            ended = self._pod_ended.is_set()
            pod = self._pod
            self._streaming = not ended
            try:
                self._read_log(pod, follow=not ended)
            except OSError as exc:  # the run's log cannot be written: stop the run
                with open(self._log_path, "ab") as log:
                    self._log_error = logfile.give_back_space(
                        log.fileno(), self._log_path, exc, note=False
                    )
                self.stop(0)
                return
            except Exception:
                pass  # the stream broke (an API server restart): read again
            finally:
                self._streaming = False
                self._nudge.set()  # the container may have ended: read its Job now
            if ended:
                return
            self._pod_ended.wait(poll_s())

    def _read_log(self, pod: Any, *, follow: bool) -> None:
        masker = Masker(self._masks)  # the whole stream, from its first byte, masked alike
        skip = self._copied
        kwargs: dict[str, Any] = {"follow": follow, "_preload_content": False}
        containers = getattr(getattr(pod, "spec", None), "containers", None) or []
        if containers:  # the run's own container: a pod with a sidecar needs it named
            kwargs["container"] = containers[0].name
        response = self.cluster.core.read_namespaced_pod_log(
            pod.metadata.name, self.namespace, **kwargs
        )
        with open(self._log_path, "ab", buffering=0) as log:
            fd = log.fileno()

            def write(out: bytes) -> None:
                nonlocal skip
                if skip:
                    cut = min(skip, len(out))
                    out, skip = out[cut:], skip - cut
                if out:
                    logfile.write_all(fd, out)
                    self._copied += len(out)

            try:
                for chunk in response.stream(64 * 1024, decode_content=True):
                    write(masker.feed(chunk))
                write(masker.flush())
            finally:
                with contextlib.suppress(Exception):
                    response.release_conn()


def _pull_hint(pod: Any) -> str:
    """What to do about an image the cluster cannot pull that names no registry: an image the
    agent built is on the agent's machine only, unless the queue names a registry."""
    containers = getattr(getattr(pod, "spec", None), "containers", None) or []
    image = str(containers[0].image or "") if containers else ""
    if not image.startswith("launchctl/"):
        return ""
    return (
        f" ({image} was built by the agent and pushed nowhere: give the queue a registry its"
        " cluster can pull from, e.g. registry: REGISTRY_HOST:5000)"
    )


def _has_started(pod: Any) -> bool:
    """Whether the Pod's container has started (its log can be read)."""
    for status in getattr(pod.status, "container_statuses", None) or []:
        state = status.state
        if state is not None and (state.running is not None or state.terminated is not None):
            return True
    return False
