import dspy
import pytest

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_resources.lm import LOCAL_MODEL, PROMPT_LAYOUTS, LanguageModelResource, LlamaCppJSONAdapter


class _FakeLM:
    supported_params = {"response_format"}
    supports_response_schema = False


@pytest.mark.parametrize("spec", ROUTING_MODULES.values(), ids=lambda spec: spec.name)
def test_adapter_sends_the_signature_schema_in_llama_cpp_form(spec):
    kwargs: dict = {}
    LlamaCppJSONAdapter()._prepare_response_format(_FakeLM(), kwargs, spec.signature)
    response_format = kwargs["response_format"]
    assert response_format["type"] == "json_object"
    schema = response_format["schema"]
    assert schema["properties"][spec.label_field]["enum"] == list(spec.labels)
    assert spec.label_field in schema["required"]


def test_models_are_chosen_by_environment(monkeypatch):
    assert LanguageModelResource.from_env().student_model == LOCAL_MODEL
    assert LanguageModelResource.from_env().is_local()
    monkeypatch.setenv("ROUTER_OPTIMIZER_STUDENT_MODEL", "anthropic/claude-x")
    monkeypatch.setenv("ROUTER_OPTIMIZER_TEACHER_MODEL", "openai/gpt-x")
    monkeypatch.setenv("ROUTER_OPTIMIZER_TEACHER_KEY", "sk-test")
    resource = LanguageModelResource.from_env()
    assert not resource.is_local() and isinstance(resource.adapter(), dspy.JSONAdapter)
    assert resource.student().model == "anthropic/claude-x"
    teacher = resource.teacher()
    assert teacher.model == "openai/gpt-x" and teacher.kwargs["api_key"] == "sk-test"


@pytest.mark.lm
def test_local_lm_answers_always_parse_to_canonical_labels(local_lm):
    """Real llama.cpp server: every module, schema-enforced JSON, zero parse failures."""
    resource = LanguageModelResource.from_env()
    rows = load_queries("train")[:6]
    with dspy.context(lm=resource.student(), adapter=resource.adapter()):
        for spec in ROUTING_MODULES.values():
            program = spec.program()
            for row in rows:
                assert spec.label_of(program(**spec.inputs(row))) in spec.labels


def test_prompt_layouts_move_the_reminder_of_closed_outputs_only():
    from cogniverse_assets.synthetic import WriteRoutingQuery

    reminder = "Respond with a JSON object in the following order of fields"
    for spec in ROUTING_MODULES.values():  # Literal and bool outputs: the grammar enforces them
        inputs = {name: "the keynote" if name == "query" else ["keynote"] for name in spec.signature.input_fields}
        last = {
            layout: LlamaCppJSONAdapter(layout).format(spec.signature, [], inputs)[-1]["content"]
            for layout in PROMPT_LAYOUTS
        }
        fields = last["no_reminder"]
        assert fields.startswith("[[ ## query ## ]]") and reminder not in fields
        assert last["reminder_last"].startswith(fields + "\n\n" + reminder)
        assert last["reminder_first"].startswith(reminder) and last["reminder_first"].endswith("\n\n" + fields)
    open_output = {
        LlamaCppJSONAdapter(layout).format(WriteRoutingQuery, [], {})[-1]["content"] for layout in PROMPT_LAYOUTS
    }
    assert len(open_output) == 1 and reminder in open_output.pop()  # a free-text field: DSPy's layout
    with pytest.raises(ValueError, match="prompt layout 'sideways'"):
        LlamaCppJSONAdapter("sideways")
