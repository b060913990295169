"""What a run gets from its queue: rendered templates, checked values, merged resource args
and limits. Called at launch (to refuse bad input) and again by the agent at claim time,
where the rules are enforced: a hand-edited row cannot get past it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from launchctl import guardrails, variables
from launchctl.errors import UsageError
from launchctl.guardrails import Limits


@dataclass
class Resolved:
    config: dict[str, Any]  # the queue config with its fields filled in (no definitions)
    values: dict[str, Any]  # every template variable, typed: given values, then defaults
    resource_args: dict[str, Any]  # the queue's then the run's, for the run's resource
    limits: Limits = field(default_factory=Limits)


def resolve(queue: dict[str, Any] | None, spec: dict[str, Any], resource: str) -> Resolved:
    """Check the run's template values against its queue's current rules and render."""
    config: dict[str, Any] = (queue or {}).get("config") or {}
    given = spec.get("template_variables") or {}
    if not isinstance(given, dict):
        raise UsageError("template_variables must be an object of name: value")
    if queue is None:
        if given:
            raise UsageError(
                "--set-var (-v) needs --queue (-q): template variables belong to a queue"
            )
        definitions: dict[str, dict[str, Any]] = {}
    else:
        definitions = variables.check_definitions(config)
    name = queue["name"] if queue else "(direct)"
    values = variables.resolve_values(name, definitions, given)
    body = variables.render({k: v for k, v in config.items() if k != "template_variables"}, values)
    merged: dict[str, Any] = {}
    merged.update(((body.get("resource_args") or {}).get(resource)) or {})
    merged.update(((spec.get("resource_args") or {}).get(resource)) or {})
    limits = guardrails.apply_ceilings(name, body.get("ceilings") or {}, guardrails.asks(merged))
    return Resolved(config=body, values=values, resource_args=merged, limits=limits)
