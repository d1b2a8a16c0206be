"""REST bodies of the firmware API, validated with one message naming the field and the fix,
and their translation to the pure rollout maths (``firmware_update.rollout``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from firmware_update.rollout import AbortCriterion, RateConfig

ROLLOUT_ID = r"^[a-zA-Z0-9_-]{1,64}$"
GROUP = r"^[A-Za-z0-9:_.-]{1,64}$"
GATEWAY = r"^[A-Za-z0-9:_-]{1,128}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetIn(_Body):
    """Exactly one: a gateway group's members, or a percentage of all registered gateways."""

    group: Annotated[str, Field(pattern=GROUP)] | None = None
    percentage: Annotated[float, Field(gt=0, le=100)] | None = None

    @model_validator(mode="after")
    def _one(self) -> TargetIn:
        if (self.group is None) == (self.percentage is None):
            raise ValueError("give exactly one of group or percentage")
        return self


class RateIn(_Body):
    base_per_minute: Annotated[int, Field(ge=1, le=1000)] = 10
    increment_factor: Annotated[float, Field(ge=1.0, le=5.0)] = 1.0
    increase_after_notified: Annotated[int, Field(ge=1)] | None = None
    increase_after_succeeded: Annotated[int, Field(ge=1)] | None = None
    maximum_per_minute: Annotated[int, Field(ge=1, le=1000)] = 1000

    @model_validator(mode="after")
    def _consistent(self) -> RateIn:
        if self.increase_after_notified and self.increase_after_succeeded:
            raise ValueError("give increase_after_notified or increase_after_succeeded, "
                             "not both")
        if self.base_per_minute > self.maximum_per_minute:
            raise ValueError("base_per_minute exceeds maximum_per_minute")
        return self

    def config(self) -> RateConfig:
        return RateConfig(self.base_per_minute, self.increment_factor,
                          self.increase_after_notified, self.increase_after_succeeded,
                          self.maximum_per_minute)


class AbortIn(_Body):
    failure_type: Literal["FAILED", "REJECTED", "TIMED_OUT", "ALL"] = "ALL"
    threshold_percentage: Annotated[float, Field(gt=0, le=100)]
    min_executed: Annotated[int, Field(ge=1)] = 1

    def criterion(self) -> AbortCriterion:
        return AbortCriterion(self.failure_type, self.threshold_percentage, self.min_executed)


class RolloutIn(_Body):
    bundle_id: Annotated[str, Field(min_length=1, max_length=140)]
    target: TargetIn
    rate: RateIn = Field(default_factory=RateIn)
    abort: list[AbortIn] = Field(default_factory=list, max_length=8)
    rollout_id: Annotated[str, Field(pattern=ROLLOUT_ID)] | None = None
    in_progress_timeout_minutes: Annotated[int, Field(ge=1, le=10080)] | None = 120


class GroupIn(_Body):
    gateways: list[Annotated[str, Field(pattern=GATEWAY)]] = Field(max_length=100_000)


class BlockIn(_Body):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
