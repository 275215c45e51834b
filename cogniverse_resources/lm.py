"""Language models for the routers, the optimizers and the synthetic-data generator.

Two roles, each one LiteLLM model string, swapped by environment variables without code changes:

- student (``ROUTER_OPTIMIZER_STUDENT_MODEL`` / ``_KEY`` / ``_API_BASE``): runs the routing modules.
- teacher (``ROUTER_OPTIMIZER_TEACHER_MODEL`` / ``_KEY`` / ``_API_BASE``): bootstraps demos, proposes
  instructions (MIPROv2), reflects (GEPA), writes synthetic queries. Defaults to the student.

Unset, both are the embedded local model served by the stack (``cogniverse stack up``). Which variable
sets which field is ``cogniverse_resources.settings.RESOURCE_ENV``; ``LanguageModelResource.from_env()``
reads them, ``LanguageModelResource()`` is the local model whatever the environment says. The local
model is small, so its answers are constrained by llama.cpp to the JSON schema derived from each
DSPy signature (``LlamaCppJSONAdapter``): with Literal output types an answer always parses and
always names a canonical label. Hosted models use DSPy's ``JSONAdapter`` (native structured output).
"""

from __future__ import annotations

import os
from typing import Literal, Mapping, get_args, get_origin

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must not fetch a price map

import dagster as dg
import dspy
from dspy.adapters.json_adapter import _get_structured_outputs_response_format
from pydantic import Field

from cogniverse_resources import settings
from cogniverse_resources.stack import LOCAL_MODEL_ALIAS, local_lm_api_base, local_model_path

LOCAL_MODEL = f"openai/{LOCAL_MODEL_ALIAS}"
PromptLayout = Literal["reminder_last", "reminder_first", "no_reminder"]
PROMPT_LAYOUTS: tuple[str, ...] = get_args(PromptLayout)
LOCAL_API_KEY = "local"


class LlamaCppJSONAdapter(dspy.JSONAdapter):
    """JSONAdapter whose response format carries the signature's JSON schema in llama.cpp's form.

    llama.cpp's OpenAI server turns ``{"type": "json_object", "schema": ...}`` into a grammar, so
    generation cannot leave the schema (Literal fields become enums).

    ``layout`` places DSPy's reminder of the output fields ("Respond with a JSON object in the
    following order of fields: ...") in the last user message of a signature whose outputs are all
    closed (Literal or bool), which the grammar enforces anyway: after the inputs (``reminder_last``,
    DSPy's layout), before them (``reminder_first``) or nowhere (``no_reminder``). After the query it
    is the one constant part of the prompt that the server's prompt cache cannot reuse, 40–60 tokens
    evaluated again on every call (``bench/prompt_layout.py``, docs/benchmarks.md "Prompt layout").
    Signatures with a free-text output always get DSPy's layout. The default stays DSPy's; each
    routing module's layout is the registry's ``prompt_layout``, chosen by a rule set before measuring
    (``reminder_first`` for cross_modal only: 0.66–0.75× as long a call at no accuracy cost).
    """

    def __init__(self, layout: PromptLayout = "reminder_last", **kwargs):
        super().__init__(**kwargs)
        self.layout = checked_layout(layout)

    def _prepare_response_format(self, lm, lm_kwargs, signature):  # noqa: ANN001 - DSPy's hook
        schema = _get_structured_outputs_response_format(signature).model_json_schema()
        lm_kwargs["response_format"] = {"type": "json_object", "schema": schema}

    def format_user_message_content(
        self, signature: type[dspy.Signature], inputs: dict, prefix: str = "", suffix: str = "", main_request=False
    ) -> str:
        if not main_request or self.layout == "reminder_last" or not has_closed_outputs(signature):
            return super().format_user_message_content(signature, inputs, prefix, suffix, main_request)
        if self.layout == "reminder_first":
            prefix = "\n\n".join(part for part in (prefix, self.user_message_output_requirements(signature)) if part)
        return super().format_user_message_content(signature, inputs, prefix, suffix, main_request=False)


def lm_identity(lm: dspy.LM, adapter: dspy.Adapter) -> dict[str, object]:
    """What decides an LM's answer to a prompt besides the prompt: for remembering answers and
    outcomes across runs. For the local model, which weights the server loads (its port is
    incidental); for a hosted model, where it is served."""
    return {
        "lm": lm.model,
        "served_by": local_model_path().name if lm.model == LOCAL_MODEL else lm.kwargs.get("api_base"),
        "temperature": lm.kwargs.get("temperature"),
        "max_tokens": lm.kwargs.get("max_tokens"),
        "adapter": type(adapter).__name__,
        "layout": getattr(adapter, "layout", None),
    }


def checked_layout(layout: str) -> PromptLayout:
    """``layout`` if it is one of ``PROMPT_LAYOUTS``; otherwise a ``ValueError`` that lists them."""
    if layout not in PROMPT_LAYOUTS:
        raise ValueError(f"prompt layout {layout!r}: expected one of {', '.join(PROMPT_LAYOUTS)}")
    return layout


def has_closed_outputs(signature: type[dspy.Signature]) -> bool:
    """Every output field is a Literal or a bool: the grammar leaves the model only listed values."""
    return all(
        field.annotation is bool or get_origin(field.annotation) is Literal
        for field in signature.output_fields.values()
    )


class LanguageModelResource(dg.ConfigurableResource):
    """Student and teacher LMs by LiteLLM model string; local llama.cpp server when unset."""

    student_model: str = LOCAL_MODEL
    # Unset with the local model: the stack's server (``COGNIVERSE_LM_PORT``), looked up when an LM is built.
    student_api_base: str | None = None
    student_api_key: str | None = None
    teacher_model: str | None = Field(default=None, description="unset: the student")
    teacher_api_base: str | None = None
    teacher_api_key: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    num_retries: int = 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "LanguageModelResource":
        """The LMs the environment names (``settings.RESOURCE_ENV``); ``overrides`` win."""
        return settings.from_env(cls, environ, **overrides)

    def _build(self, model: str, api_base: str | None, api_key: str | None, **overrides) -> dspy.LM:
        local = model == LOCAL_MODEL
        kwargs: dict[str, object] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "num_retries": self.num_retries,
            # Each process keeps its own in-memory cache only: the on-disk cache is shared state
            # that parallel Dagster steps of different tenants must not race on.
            "cache": False,
        }
        if local:
            kwargs["api_base"] = api_base or local_lm_api_base()
            kwargs["api_key"] = api_key or LOCAL_API_KEY
        else:
            if api_base:
                kwargs["api_base"] = api_base
            if api_key:
                kwargs["api_key"] = api_key
        kwargs.update(overrides)
        # engine="litellm": DSPy's built-in OpenAI client sends max_completion_tokens, which
        # llama.cpp's server ignores (runaway generation).
        return dspy.LM(model, engine="litellm", **kwargs)

    def student(self, **overrides) -> dspy.LM:
        return self._build(self.student_model, self.student_api_base, self.student_api_key, **overrides)

    def teacher(self, **overrides) -> dspy.LM:
        if not self.teacher_model:
            return self.student(**overrides)
        return self._build(self.teacher_model, self.teacher_api_base, self.teacher_api_key, **overrides)

    def is_local(self) -> bool:
        return self.student_model == LOCAL_MODEL

    def adapter(self, layout: PromptLayout = "reminder_last") -> dspy.Adapter:
        """The local model's adapter with ``layout``; a hosted LM gets DSPy's JSONAdapter (the layout
        is a local prompt-cache measure and was measured on the local model only)."""
        return LlamaCppJSONAdapter(layout) if self.is_local() else dspy.JSONAdapter()
