import llama_cpp
import pytest

from cogniverse_resources import stack
from cogniverse_resources.lm_server import PromptStateCache

LABELS = "video, image, audio, document, text"


def prompt(examples: list[tuple[str, str]], query: str) -> str:
    shots = "".join(f"Query: {q}\nModality: {label}\n\n" for q, label in examples)
    return f"Pick the modality ({LABELS}) a search query wants.\n\n{shots}Query: {query}\nModality:"


@pytest.mark.lm
def test_a_prompt_restored_from_the_cache_answers_as_before_and_keeps_one_row_of_logits():
    llm = llama_cpp.Llama(
        str(stack.ensure_local_model()), n_ctx=2048, n_threads=2, logits_all=False, seed=0, verbose=False
    )
    cache = PromptStateCache(capacity_bytes=64 << 20)
    llm.set_cache(cache)
    restores = []
    load_state = llm.load_state
    llm.load_state = lambda state: (restores.append(state.n_tokens), load_state(state))[1]
    lane_a = [("cat videos compilation", "video"), ("podcast about history", "audio")] * 6
    lane_b = [("tax form 1040 instructions pdf", "document"), ("photos of the eiffel tower", "image")] * 6

    def ask(text: str) -> str:
        return llm.create_completion(text, max_tokens=4, temperature=0.0)["choices"][0]["text"]

    first = ask(prompt(lane_a, "lecture recording on linear algebra"))
    ask(prompt(lane_b, "scanned contract"))  # the other lane's turn replaces the live KV state
    again = ask(prompt(lane_a, "lecture recording on linear algebra"))

    assert restores, "lane A's second call should resume from its cached state"
    assert again == first
    assert cache.cache_state and all(state.scores.shape[0] == 1 for state in cache.cache_state.values())
