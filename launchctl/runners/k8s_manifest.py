"""kubernetes: the Job manifest a run becomes, and the hardening rules it must pass.

Pure functions, no IO and no ``kubernetes`` import: ``queue create`` calls ``check_config``.

A queue's ``resource_args.kubernetes`` is a batch/v1 Job manifest in W&B's shape
(``metadata``, ``spec``, and W&B's older top-level ``namespace``), as W&B's queue editor
holds it, plus a few keys of launchctl's own beside them:

- ``allow``: the hardening exceptions the queue's admin grants, each by name (``ALLOWABLE``);
  only the queue's config may hold it;
- ``env``: launchctl's env object (``NAME: value`` or ``NAME: {"secret": "SECRET"}``), as for
  the other runners; a secret becomes a ``secretKeyRef`` into the run's own Kubernetes
  Secret, never a value in the manifest;
- ``cpus``, ``memory``, ``max_run_time``: launchctl's asks, held to the queue's ceilings and
  written into the first container's ``resources.limits``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

LABEL_RUN = "launchctl.run_id"
LABEL_QUEUE = "launchctl.queue"
ANNOTATION_AGENT = "launchctl.agent"
GPU_RESOURCE = "nvidia.com/gpu"
SECRET_PREFIX = "launchctl-run-"  # the run's Secret: launchctl-run-<run id>, and -pull

# The hardening exceptions an admin may grant in ``allow``, and what each lets through.
ALLOWABLE = {
    "privileged": "a container with securityContext.privileged",
    "hostPID": "the host's process namespace (hostPID)",
    "hostNetwork": "the host's network namespace (hostNetwork)",
    "hostIPC": "the host's IPC namespace (hostIPC)",
    "hostPath": "hostPath volumes (a path on the node)",
    "serviceAccountName": "a service account of the queue's choosing (serviceAccountName)",
}
# Job manifest keys, and launchctl's own beside them.
JOB_KEYS = frozenset({"apiVersion", "kind", "metadata", "spec"})
OWN_KEYS = frozenset({"allow", "env", "cpus", "memory", "max_run_time", "namespace"})
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class ManifestError(Exception):
    """A manifest that launchctl will not submit; the message is one line."""


def label_value_problem(value: str, what: str) -> str | None:
    """Why ``value`` cannot be a Kubernetes label value (63 characters at most, letters,
    digits, '-', '_' or '.', starting and ending with a letter or digit), or None."""
    if len(value) <= 63 and _LABEL_VALUE.match(value):
        return None
    return (
        f"{what} {value[:70]!r} cannot be a Kubernetes label value (at most 63 letters, digits,"
        " '-', '_' or '.', starting and ending with a letter or digit)"
    )


def dns_name(text: str, limit: int = 52) -> str:
    """``text`` as the start of a DNS-1123 name: lowercase, '-' for anything else, trimmed."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:limit].rstrip("-") or "launchctl"


def truthy(value: Any) -> bool:
    """W&B's reading of a flag in a manifest: true, a non-zero number, or "true"/"yes"/"1"
    (a template field renders to a string)."""
    if value is True:
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return False


def allowed_of(body: dict[str, Any]) -> frozenset[str]:
    """The exceptions in ``allow``; a ManifestError for anything else there."""
    allow = body.get("allow")
    if allow is None:
        return frozenset()
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise ManifestError(
            f"allow must be a list of: {', '.join(ALLOWABLE)} (the hardening exceptions this"
            " queue's admin grants)"
        )
    for item in allow:
        if item not in ALLOWABLE:
            raise ManifestError(
                f"allow: unknown exception {item!r} (it may name: {', '.join(ALLOWABLE)})"
            )
    return frozenset(allow)


def hardening_problem(manifest: Any, allowed: frozenset[str] = frozenset()) -> str | None:
    """Why a manifest asks for host or cluster access its queue's admin did not allow, or None.

    Scans every level (pod specs of containers, initContainers, ephemeralContainers, any
    nesting): privileged containers, the host's PID, network and IPC namespaces, hostPath
    volumes and service account overrides, each refused unless ``allowed`` names it.
    """
    found: list[str] = []

    def refuse(key: str, where: str) -> None:
        if key not in allowed and not found:
            found.append(
                f"{where}: {ALLOWABLE[key]} is refused on a kubernetes queue unless its admin"
                f" allows it (allow: [{key}] in the queue's resource_args.kubernetes)"
            )

    def scan(node: Any, where: str) -> None:
        if isinstance(node, dict):
            context = node.get("securityContext")
            if isinstance(context, dict) and truthy(context.get("privileged")):
                refuse("privileged", f"{where}.securityContext.privileged")
            for key in ("hostPID", "hostNetwork", "hostIPC"):
                if truthy(node.get(key)):
                    refuse(key, f"{where}.{key}")
            if "hostPath" in node:
                refuse("hostPath", f"{where}.hostPath")
            for key in ("serviceAccountName", "serviceAccount"):
                value = node.get(key)
                if value is not None and str(value).strip() and str(value) != "default":
                    refuse("serviceAccountName", f"{where}.{key}")
            for key, value in node.items():
                scan(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                scan(item, f"{where}[{i}]")

    scan(manifest, "")
    return found[0] if found else None


def body_problem(body: Any, *, written: bool) -> str | None:
    """Why a ``resource_args.kubernetes`` body cannot be run, or None. ``written``: the
    queue's config as its admin wrote it (template fields may still be in it)."""
    if not isinstance(body, dict):
        return "resource_args.kubernetes must be a Job manifest (an object)"
    if "gpus" in body:
        return (
            "resource_args.kubernetes: write GPUs as nvidia.com/gpu in a container's"
            " resources.limits (GPUs on Kubernetes are the cluster's to schedule)"
        )
    unknown = sorted(k for k in body if k not in JOB_KEYS and k not in OWN_KEYS)
    if unknown:
        return (
            f"resource_args.kubernetes: unknown key {unknown[0]!r} (a Job manifest holds"
            f" {', '.join(sorted(JOB_KEYS))}; launchctl's own keys: {', '.join(sorted(OWN_KEYS))})"
        )
    kind = body.get("kind", "Job")
    api = body.get("apiVersion", "batch/v1")
    if kind != "Job" or api != "batch/v1":
        return (
            f"resource_args.kubernetes: launchctl runs batch/v1 Jobs, not {api} {kind}"
            " (custom resources such as Kubeflow's PyTorchJob are not supported)"
        )
    try:
        allowed = allowed_of(body)
    except ManifestError as exc:
        return f"resource_args.kubernetes: {exc}"
    for key in ("metadata", "spec"):
        if key in body and not isinstance(body[key], dict):
            return f"resource_args.kubernetes.{key} must be an object"
    spec = body.get("spec") or {}
    backoff = spec.get("backoffLimit")
    if backoff is not None and str(backoff) != "0":
        return (
            "resource_args.kubernetes.spec.backoffLimit must be 0 (or left out): launchctl"
            " retries a run itself (the queue's retry policy, the requeue after preemption)"
        )
    template = spec.get("template") or {}
    pod = template.get("spec") if isinstance(template, dict) else None
    if pod is not None and not isinstance(pod, dict):
        return "resource_args.kubernetes.spec.template.spec must be an object"
    policy = (pod or {}).get("restartPolicy")
    if policy is not None and policy != "Never":
        return (
            "resource_args.kubernetes: restartPolicy must be Never (or left out): a container"
            " restarted in place hides how the run ended"
        )
    containers = (pod or {}).get("containers")
    if containers is not None and (
        not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers)
    ):
        return "resource_args.kubernetes: spec.template.spec.containers must be a list of objects"
    why = hardening_problem({k: v for k, v in body.items() if k != "allow"}, allowed)
    if why is not None:
        return f"resource_args.kubernetes.{why}"
    if not written:
        namespace = namespace_of(body, "default")
        if not _DNS_LABEL.match(namespace) or len(namespace) > 63:
            return f"resource_args.kubernetes: namespace {namespace[:70]!r} is not a valid name"
    return None


def check_config(config: dict[str, Any]) -> str | None:
    """The runner's own rules for a kubernetes queue's config, at queue create and edit."""
    if config.get("artifact_cache"):
        return (
            "artifact_cache is for local runners: on kubernetes, mount a volume in the Job"
            " manifest (a persistentVolumeClaim)"
        )
    body = (config.get("resource_args") or {}).get("kubernetes")
    if body is None:
        return None
    return body_problem(body, written=True)


def namespace_of(body: dict[str, Any], default: str) -> str:
    """W&B's order: metadata.namespace, the older top-level namespace, then the default."""
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    return str((meta or {}).get("namespace") or body.get("namespace") or default)


# -- quantities ---------------------------------------------------------------------------
_SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([-+]?[0-9]+))?([a-zA-Z]*)\s*$")


def quantity(value: Any, what: str) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``1Gi``, ``1e3``) as a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _QUANTITY.match(str(value))
    if not match or match.group(3) not in _SUFFIX:
        raise ManifestError(f"{what}: {str(value)[:40]!r} is not a Kubernetes quantity")
    number = float(match.group(1)) * (10 ** int(match.group(2)) if match.group(2) else 1)
    return number * _SUFFIX[match.group(3)]


# -- the Job ------------------------------------------------------------------------------
@dataclass
class JobInputs:
    """What the runner knows of the run when it makes its Job (from its ``Launch``)."""

    run_id: str
    queue: str
    agent_id: str | None
    image: str | None
    entrypoint: list[str]
    args: list[str]
    env: dict[str, str] = field(repr=False)
    secret_env: frozenset[str]  # the names in env whose values are secrets
    cpus: float | None = None
    memory: int | None = None  # bytes
    pull_secret: bool = False  # the run's registry credentials become an image pull Secret
    default_namespace: str = "default"


def secret_name(run_id: str) -> str:
    return dns_name(f"{SECRET_PREFIX}{run_id}", 63)


def pull_secret_name(run_id: str) -> str:
    return dns_name(f"{SECRET_PREFIX}{run_id}-pull", 63)


def build_job(body: dict[str, Any], inputs: JobInputs) -> tuple[str, dict[str, Any]]:
    """The run's namespace and its Job manifest (a plain dict, as ``kubectl`` would send it).

    ``body`` is the rendered ``resource_args.kubernetes`` (the queue's, then the run's own).
    Raises ManifestError (one line) for a manifest that breaks a rule.
    """
    why = body_problem(body, written=False)
    if why is not None:
        raise ManifestError(why)
    for value, what in ((inputs.run_id, "run id"), (inputs.queue, "queue name")):
        problem = label_value_problem(value, what)
        if problem is not None:
            raise ManifestError(problem)
    if not inputs.image:
        raise ManifestError("a kubernetes run needs an image (an image job, -d, or a build)")
    allowed = allowed_of(body)
    namespace = namespace_of(body, inputs.default_namespace)
    job: dict[str, Any] = copy.deepcopy({k: v for k, v in body.items() if k in JOB_KEYS})
    job["apiVersion"], job["kind"] = "batch/v1", "Job"
    meta = job.setdefault("metadata", {})
    labels = {**(meta.get("labels") or {}), LABEL_RUN: inputs.run_id, LABEL_QUEUE: inputs.queue}
    for key, value in labels.items():
        problem = label_value_problem(str(value), f"label {key}")
        if problem is not None:
            raise ManifestError(problem)
    meta["labels"] = labels
    if inputs.agent_id:
        meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_AGENT: inputs.agent_id}
    # A generated name: a requeued run (same id) never meets its earlier Job's name.
    prefix = str(meta.pop("name", None) or meta.get("generateName") or f"launchctl-{inputs.run_id}")
    meta["generateName"] = dns_name(prefix, 52) + "-"
    meta["namespace"] = namespace
    spec = job.setdefault("spec", {})
    spec["backoffLimit"] = 0
    template = spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), LABEL_RUN: inputs.run_id,
                       LABEL_QUEUE: inputs.queue}  # fmt: skip
    pod = template.setdefault("spec", {})
    pod["restartPolicy"] = "Never"
    containers = pod.get("containers") or [{}]
    pod["containers"] = containers
    for i, container in enumerate(containers):
        container.setdefault("name", f"launch{i}")
    main = containers[0]
    main["image"] = inputs.image
    if inputs.entrypoint:
        main["command"] = list(inputs.entrypoint)
    if inputs.args:
        main["args"] = list(inputs.args)
    for container in containers:
        container["env"] = _env(container.get("env"), inputs)
    _limits(containers, inputs)
    for key in CONTAINER_LISTS:
        for container in pod.get(key) or []:
            _quantities_as_text(container)
    if inputs.pull_secret:
        pulls = [s for s in pod.get("imagePullSecrets") or [] if isinstance(s, dict)]
        pod["imagePullSecrets"] = [*pulls, {"name": pull_secret_name(inputs.run_id)}]
    why = hardening_problem(job, allowed)
    if why is not None:
        raise ManifestError(f"resource_args.kubernetes.{why}")
    return namespace, job


def _env(written: Any, inputs: JobInputs) -> list[dict[str, Any]]:
    """A container's env: the manifest's own entries (``valueFrom`` passes through), less
    those launchctl sets, then launchctl's: plain values, and each secret as a
    ``secretKeyRef`` into the run's Secret (its value never in the manifest)."""
    if written is not None and not isinstance(written, list):
        raise ManifestError("a container's env must be a list of {name, value} objects")
    ours = set(inputs.env)
    out = [e for e in written or [] if isinstance(e, dict) and e.get("name") not in ours]
    for name in sorted(inputs.env):
        if name in inputs.secret_env:
            if not _SECRET_KEY.match(name):
                raise ManifestError(f"env {name!r} cannot be a key of a Kubernetes Secret")
            ref = {"name": secret_name(inputs.run_id), "key": name}
            out.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
        else:
            out.append({"name": name, "value": inputs.env[name]})
    return out


def _quantities_as_text(container: Any) -> None:
    """Resource quantities as strings (``2`` -> ``"2"``): the API takes either, the client's
    models only strings."""
    resources = container.get("resources") if isinstance(container, dict) else None
    for key in ("limits", "requests"):
        values = (resources or {}).get(key)
        if isinstance(values, dict):
            for name, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    values[name] = f"{value:g}" if isinstance(value, float) else str(value)


def _limits(containers: list[dict[str, Any]], inputs: JobInputs) -> None:
    """The run's cpus and memory (its asks, capped by the queue's ceilings) as the pod's
    limits: the first container gets them where it sets none, and all containers together
    may not pass them."""
    for key, limit in (("cpu", inputs.cpus), ("memory", inputs.memory)):
        if limit is None:
            continue
        first = containers[0].setdefault("resources", {}).setdefault("limits", {})
        if key not in first:
            first[key] = f"{limit:g}" if key == "cpu" else str(int(limit))
        total = 0.0
        for container in containers:
            limits = (container.get("resources") or {}).get("limits") or {}
            if key not in limits:
                raise ManifestError(
                    f"container {container.get('name')!r} sets no {key} limit, and the run may"
                    f" use at most {limit:g} ({'cpus' if key == 'cpu' else 'memory bytes'})"
                )
            total += quantity(limits[key], f"container {container.get('name')!r} {key} limit")
        if total > float(limit) * (1 + 1e-9):
            shown = "cpus" if key == "cpu" else "bytes of memory"
            raise ManifestError(
                f"the Job's containers ask for {total:g} {shown} in all, above the {limit:g}"
                " the run may use (its ask or its queue's ceiling)"
            )


def dns_subdomain_ok(name: str) -> bool:
    return len(name) <= 253 and bool(_DNS_SUBDOMAIN.match(name))
