"""The catalog's ``alerts`` block as typed settings, with sink secrets read once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from breakglass.catalog.loader import LoadedCatalog
from breakglass.catalog.schema import AlertRulesConfig, DeliveryConfig
from breakglass.domain.errors import CatalogError

log = structlog.get_logger("breakglass.notify")


@dataclass(frozen=True, slots=True)
class Sink:
    """One destination: a generic webhook (HMAC-signed body) or a Slack incoming webhook."""

    name: str
    type: str
    url: str
    secret: bytes | None
    kinds: frozenset[str]

    def wants(self, kind: str) -> bool:
        return kind in self.kinds


@dataclass(frozen=True, slots=True)
class NotifySettings:
    organization: str
    sinks: tuple[Sink, ...]
    notify_approvers: bool
    rules: AlertRulesConfig
    delivery: DeliveryConfig

    def sink(self, name: str) -> Sink | None:
        return next((s for s in self.sinks if s.name == name), None)


def notify_settings(loaded: LoadedCatalog, env: Mapping[str, str]) -> NotifySettings:
    """Build the settings; a sink whose secret variable is missing stops the broker."""
    alerts = loaded.catalog.alerts
    errors: list[str] = []
    sinks: list[Sink] = []
    for i, cfg in enumerate(alerts.sinks):
        name = cfg.name or f"{cfg.type}-{i}"
        secret: bytes | None = None
        if cfg.secret_env:
            value = env.get(cfg.secret_env, "")
            if value:
                secret = value.encode()
            else:
                errors.append(f"alerts.sinks[{i}].secret_env: environment variable "
                              f"{cfg.secret_env} is not set")
        elif cfg.type == "webhook":
            log.warning("webhook sink has no secret_env: its bodies are sent unsigned", sink=name)
        if any(s.name == name for s in sinks):
            errors.append(f"alerts.sinks[{i}].name: '{name}' is used twice")
        sinks.append(Sink(name=name, type=cfg.type, url=cfg.url, secret=secret,
                          kinds=frozenset(cfg.kinds)))
    if errors:
        raise CatalogError(loaded.source, errors)
    return NotifySettings(organization=loaded.catalog.organization, sinks=tuple(sinks),
                          notify_approvers=alerts.notify_approvers, rules=alerts.rules,
                          delivery=alerts.delivery)
