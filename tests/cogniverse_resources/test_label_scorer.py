"""The label scorer: each label's first-token log-probability at the scored position of a prompt."""

import llama_cpp
import numpy as np
import pytest

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.calibrated import answer_prefix
from cogniverse_assets.modules.registry import get_module
from cogniverse_resources import stack
from cogniverse_resources.label_scorer import LocalLabelScorer
from cogniverse_resources.lm import LlamaCppJSONAdapter

MODALITY = get_module("modality")


@pytest.mark.lm
def test_scores_come_from_the_scored_position_when_the_context_keeps_every_positions_output():
    # With embeddings on (what reading a hidden state needs) llama.cpp keeps an output for every
    # position of a batch; the first row of its logits is then the prompt's first token's.
    adapter = LlamaCppJSONAdapter()
    prompts = [adapter.format(MODALITY.signature, [], MODALITY.inputs(row)) for row in load_queries("eval")[:4]]
    default, every_position = LocalLabelScorer(stack.local_model_path()), LocalLabelScorer(stack.local_model_path())
    tokens = default.first_tokens(MODALITY.labels)
    llama_cpp.llama_set_embeddings(every_position._model()._ctx.ctx, True)

    expected = np.array([default.scores(messages, answer_prefix(MODALITY), tokens) for messages in prompts])
    got = np.array([every_position.scores(messages, answer_prefix(MODALITY), tokens) for messages in prompts])

    assert np.allclose(np.exp(expected).sum(axis=1), 1.0)
    assert len({tuple(np.round(row, 3)) for row in expected}) == len(prompts)  # the queries are told apart
    np.testing.assert_allclose(got, expected, atol=1e-3)
