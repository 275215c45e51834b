"""Typed records that pass between a lane's stages and are stored as JSON: a trained module
version and an evaluation. Readers validate them (``model_validate``), so a missing or misspelt
field fails where the record is read, with the field's name, not three stages later."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cogniverse_resources.lm import PromptLayout


class _Record(BaseModel):
    # Stored records may carry fields that later versions dropped; readers ignore them.
    model_config = ConfigDict(frozen=True, extra="ignore")


class PlanSummary(_Record):
    """The parts of the optimization plan a module version was compiled under."""

    source: str | None = None
    reasons: list[str] = Field(default_factory=list)
    features: dict[str, float | None] = Field(default_factory=dict)
    training_fingerprint: str | None = None


class ModuleVersion(_Record):
    """One compiled module version (``<tenant>/<module>/modules/<version>.json``)."""

    version: str
    tenant_id: str
    module: str
    optimizer: str
    state: dict
    parameters: dict = Field(default_factory=dict)
    train_size: int = 0
    selection_size: int = 0
    lm_calls: int = 0
    lm_tokens: int = 0
    wall_time_s: float = 0.0
    created_at: str = ""
    plan: PlanSummary = Field(default_factory=PlanSummary)
    demos: int = 0
    instructions: dict[str, str] = Field(default_factory=dict)
    # The distilled classifier served in front of the LM module (fast_path.FastPath state), and why
    # it is on or off.
    fast_path: dict | None = None
    fast_path_reason: str = ""
    # The local adapter's prompt layout the version was compiled and gated with, and is served with.
    # Versions stored before the field existed used DSPy's.
    prompt_layout: PromptLayout = "reminder_last"


class EvaluationRecord(_Record):
    """A candidate scored against the deployed module on one validation split (``evaluation.json``)."""

    tenant_id: str
    module: str
    candidate_version: str
    deployed_version: str
    candidate: dict
    deployed: dict
    promote: bool
    reasons: list[str]
    figures: dict
    validation_size: int
    evaluated_at: str
