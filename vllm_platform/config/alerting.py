"""`observability.alertmanager`: where the alerts go, by severity, and the dead man's switch.

Every URL or key that lets someone post to a pager or a channel is a secret (config/secrets.py): it
reaches Alertmanager as a file of a Kubernetes Secret, never as a Helm value.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Optional

from pydantic import Field, StrictStr, field_validator, model_validator

from vllm_platform.config.base import DNS_1123_LABEL, PRINTABLE_WORD, Section, check_label, check_pattern, duplicates
from vllm_platform.config.secrets import set_command

SNS_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:(?P<region>[a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?", re.ASCII)
# The receivers the platform's alertmanager.yaml always holds (k8s/alerting.py): a second of the name would make
# Alertmanager refuse the whole config.
RESERVED_RECEIVERS = ("null",)
SLACK_CHANNEL = re.compile(r"#?[a-z0-9][a-z0-9._-]{0,79}", re.ASCII)


class ReceiverKind(StrEnum):
    """A receiver's kind: the one of its keys it sets."""

    PAGERDUTY = "pagerduty"
    SLACK = "slack"
    SNS = "sns"
    WEBHOOK = "webhook"


def _secret(value: str) -> str:
    return check_pattern(value, PRINTABLE_WORD, "one word of printable ASCII", shown=False)


class PagerDuty(Section):
    routing_key: StrictStr = Field(
        repr=False,
        description="a secret: the Events API v2 integration key of a PagerDuty service",
    )

    @field_validator("routing_key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _secret(value)


class Slack(Section):
    api_url: StrictStr = Field(repr=False, description="a secret: the incoming webhook URL")
    channel: Optional[StrictStr] = Field(None, description="the channel, such as `#llm-alerts`; by default the webhook's own")

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _secret(value)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_pattern(value, SLACK_CHANNEL, "a Slack channel name such as #llm-alerts")


class Sns(Section):
    topic_arn: StrictStr = Field(
        description=(
            "an SNS topic's ARN; a created cluster gives Alertmanager's ServiceAccount, through Pod Identity, a role "
            "that may publish to it and nothing else (a KMS-encrypted topic also needs the key to admit that role)"
        )
    )

    @field_validator("topic_arn")
    @classmethod
    def _arn(cls, value: str) -> str:
        return check_pattern(value, SNS_TOPIC_ARN, "an SNS topic ARN such as arn:aws:sns:us-west-2:123456789012:llm-alerts")

    @property
    def region(self) -> str:
        match = SNS_TOPIC_ARN.fullmatch(self.topic_arn)
        assert match is not None
        return match["region"]


class Webhook(Section):
    url: StrictStr = Field(repr=False, description="a secret: the URL Alertmanager posts its JSON to")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _secret(value)


class Receiver(Section):
    name: StrictStr = Field(description="DNS-1123 label, unique, not `null` (the platform's own); what `critical`, `warning` and `watchdog` name")
    pagerduty: Optional[PagerDuty] = Field(
        None,
        description=f"`{{routingKey}}`, set with `{set_command('observability.alertmanager.receivers[N].pagerduty.routingKey')}`",
    )
    slack: Optional[Slack] = Field(None, description="`{apiUrl, channel}`; `apiUrl` a secret like PagerDuty's key")
    sns: Optional[Sns] = Field(None, description="`{topicArn}`")
    webhook: Optional[Webhook] = Field(None, description="`{url}`, a secret like PagerDuty's key")

    @field_validator("name")
    @classmethod
    def _label(cls, value: str) -> str:
        if value in RESERVED_RECEIVERS:
            raise ValueError(
                f"{value!r} is the receiver the platform adds itself, where unrouted alerts go and nowhere further; "
                "name yours otherwise"
            )
        return check_label(value, DNS_1123_LABEL, "DNS-1123 label")

    @model_validator(mode="after")
    def _one_kind(self) -> "Receiver":
        kinds = [kind for kind in ReceiverKind if getattr(self, kind) is not None]
        if len(kinds) != 1:
            given = ", ".join(kinds) or "none"
            raise ValueError(f"a receiver is exactly one of {', '.join(ReceiverKind)}; {self.name} has {given}")
        return self

    @property
    def kind(self) -> ReceiverKind:
        return next(kind for kind in ReceiverKind if getattr(self, kind) is not None)


class Alerting(Section):
    receivers: list[Receiver] = Field(min_length=1, description="where alerts can go (see the `receivers[]` keys)")
    critical: list[StrictStr] = Field(
        [], description="receivers every critical alert goes to, in order: the pager first"
    )
    warning: list[StrictStr] = Field([], description="receivers every warning goes to, such as a chat channel")
    watchdog: Optional[StrictStr] = Field(
        None,
        description=(
            "the dead man's switch: a receiver that gets the always-firing `Watchdog` alert every 5 minutes, such as "
            "a heartbeat webhook that pages when it stops arriving; unset, `Watchdog` goes nowhere"
        ),
    )

    @model_validator(mode="after")
    def _known_receivers(self) -> "Alerting":
        names = [r.name for r in self.receivers]
        if twice := duplicates(names):
            raise ValueError(f"receiver {', '.join(twice)} is named more than once")
        for key, wanted in (("critical", self.critical), ("warning", self.warning), ("watchdog", [self.watchdog] if self.watchdog else [])):
            unknown = [name for name in wanted if name not in names]
            if unknown:
                raise ValueError(f"{key} names {', '.join(unknown)}, not a receiver (receivers: {', '.join(names)})")
            if twice := duplicates(list(wanted)):
                raise ValueError(f"{key} names {', '.join(twice)} more than once")
        if not self.critical:
            raise ValueError("critical is empty: name the receiver that pages, or critical alerts go nowhere")
        return self

    def receiver(self, name: str) -> Receiver:
        return next(r for r in self.receivers if r.name == name)
