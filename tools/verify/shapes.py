"""What verify reads of each Kubernetes API answer, as pydantic models: the fields the checks read, with
their JSON types, and nothing else required. `KubeApi` validates every answer against its model before
the checks see it, so an answer of another shape (a field missing, a null, a string where a number
belongs, a time that is no time) is a KubeError, a FAILED check, never a traceback in the middle of one.

Strict: the API server writes numbers as numbers and leaves empty fields out, never null; a model never
coerces, so what the checks read is what the server sent. Extra fields are allowed: answers carry many.
"""

from __future__ import annotations

from typing import Annotated, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError

from vllm_platform.k8s.rollout import parse_time

__all__ = ["DEPLOYMENT", "EVENT_LIST", "POD_LIST", "SERVICE", "ValidationError", "problem"]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


def _is_time(value: str) -> str:
    """An RFC 3339 stamp, which carries its offset: one without (a local time, a date alone) cannot be
    compared with the time now, so it is no time here."""
    if parse_time(value).tzinfo is None:
        raise ValueError("a time without a timezone offset")
    return value


Time = Annotated[StrictStr, AfterValidator(_is_time)]
Labels = dict[StrictStr, StrictStr]


class Metadata(_Shape):
    name: StrictStr
    deletionTimestamp: Optional[StrictStr] = None


class Condition(_Shape):
    type: StrictStr
    status: Optional[StrictStr] = None
    reason: Optional[StrictStr] = None
    message: Optional[StrictStr] = None


class Terminated(_Shape):
    finishedAt: Optional[Time] = None
    reason: Optional[StrictStr] = None
    exitCode: Optional[StrictInt] = None


class LastState(_Shape):
    terminated: Optional[Terminated] = None


class Waiting(_Shape):
    reason: Optional[StrictStr] = None


class State(_Shape):
    waiting: Optional[Waiting] = None


class ContainerStatus(_Shape):
    name: StrictStr
    restartCount: StrictInt = 0
    state: Optional[State] = None
    lastState: Optional[LastState] = None


class PodStatus(_Shape):
    phase: StrictStr = "unknown phase"
    conditions: Optional[list[Condition]] = None
    containerStatuses: Optional[list[ContainerStatus]] = None


class ContainerPort(_Shape):
    containerPort: StrictInt
    name: Optional[StrictStr] = None


class Container(_Shape):
    ports: Optional[list[ContainerPort]] = None


class PodSpec(_Shape):
    containers: list[Container]
    nodeSelector: Labels = Field(default_factory=dict)


class Pod(_Shape):
    metadata: Metadata
    spec: PodSpec
    status: PodStatus = Field(default_factory=PodStatus)


class PodList(_Shape):
    items: list[Pod]


class Selector(_Shape):
    matchLabels: Optional[Labels] = None


class PodTemplate(_Shape):
    spec: Optional[PodSpec] = None


class DeploymentSpec(_Shape):
    selector: Selector
    replicas: StrictInt = 1
    template: Optional[PodTemplate] = None


class DeploymentStatus(_Shape):
    availableReplicas: StrictInt = 0
    updatedReplicas: StrictInt = 0
    conditions: Optional[list[Condition]] = None


class Deployment(_Shape):
    metadata: Metadata
    spec: DeploymentSpec
    status: DeploymentStatus = Field(default_factory=DeploymentStatus)


class ServicePort(_Shape):
    port: StrictInt
    name: Optional[StrictStr] = None
    targetPort: Optional[Union[StrictInt, StrictStr]] = None


class ServiceSpec(_Shape):
    type: Optional[StrictStr] = None
    externalName: Optional[StrictStr] = None
    ports: Optional[list[ServicePort]] = None
    selector: Optional[Labels] = None


class Service(_Shape):
    metadata: Metadata
    spec: ServiceSpec


class InvolvedObject(_Shape):
    name: Optional[StrictStr] = None


class Event(_Shape):
    reason: Optional[StrictStr] = None
    message: Optional[StrictStr] = None
    count: Optional[StrictInt] = None
    involvedObject: Optional[InvolvedObject] = None
    lastTimestamp: Optional[StrictStr] = None
    eventTime: Optional[StrictStr] = None


class EventList(_Shape):
    items: list[Event]


DEPLOYMENT = TypeAdapter(Deployment)
SERVICE = TypeAdapter(Service)
POD_LIST = TypeAdapter(PodList)
EVENT_LIST = TypeAdapter(EventList)


def problem(error: ValidationError) -> str:
    """The first field that is not as the checks read it, by its path: `items.0.spec.containers: Field required`."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the answer"
    return f"{where}: {first['msg']}"
