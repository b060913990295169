"""`launchctl k8s ...`: what a Kubernetes cluster needs before an agent can serve a
kubernetes queue. ``k8s rbac`` prints the ServiceAccount, Role, ClusterRole and bindings the
agent runs under, in the shape W&B's Launch FAQ gives for its agent ("What permissions does
the agent require in Kubernetes?"), ready for ``kubectl apply -f -``."""

from __future__ import annotations

import re
from typing import Any

import typer

from launchctl.errors import UsageError

app = typer.Typer(
    help="Set up a Kubernetes cluster for launchctl's kubernetes runner.\n\n\b\nExample:\n"
    "  launchctl k8s rbac --namespace wandb | kubectl apply -f -",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
VERBS = ["create", "get", "watch", "list", "update", "delete", "patch"]


def _name(value: str, what: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise UsageError(
            f"invalid {what} {value[:70]!r}: use at most 63 lowercase letters, digits or '-',"
            " starting and ending with a letter or digit"
        )
    return value


def rbac_documents(namespace: str, account: str) -> list[dict[str, Any]]:
    """The agent's ServiceAccount, its Role in ``namespace`` (pods, configmaps, secrets and
    pods/log there) and the ClusterRole for the namespaces its queues run Jobs in (pods,
    pods/log, secrets, jobs and jobs/status), each with its binding, as W&B's FAQ gives
    them for ``wandb-launch-agent`` and ``wandb-cluster-role``."""
    subject = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    role = f"{account}"
    cluster_role = f"{account}-cluster-role"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": role, "namespace": namespace},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "configmaps", "secrets"], "verbs": VERBS},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_role},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/log", "secrets"], "verbs": VERBS},
                {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": VERBS},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": namespace},
            "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{cluster_role}-{namespace}"},
            "subjects": subject,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role,
            },
        },
    ]


@app.command("rbac")
def rbac(
    namespace: str = typer.Option(
        ..., "--namespace", "-n", help="The namespace the agent runs in (W&B's: wandb)."
    ),
    service_account: str = typer.Option(
        "launchctl-agent", "--service-account", help="The agent's ServiceAccount name."
    ),
) -> None:
    """Print the RBAC objects the agent needs, for `kubectl apply -f -`.

    A ServiceAccount, a Role in NAMESPACE (pods, configmaps, secrets, pods/log), a
    ClusterRole for the namespaces its queues run Jobs in (pods, pods/log, secrets, jobs,
    jobs/status), and their bindings, as W&B's Launch FAQ gives them for its agent. Run the
    agent under the ServiceAccount (or with a kubeconfig for it).

    \b
    Example:
      launchctl k8s rbac --namespace wandb | kubectl apply -f -
    """
    import yaml

    docs = rbac_documents(_name(namespace, "namespace"), _name(service_account, "service account"))
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
