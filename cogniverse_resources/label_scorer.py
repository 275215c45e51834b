"""Label log-probabilities from the local model, evaluated in-process with llama.cpp.

A routing module's prompt (the adapter's chat messages, through the model's own chat template)
followed by the start of its schema-constrained answer, up to where the answer names its label, is
evaluated once; the log-probabilities of each label's first token at that position, renormalized
over the labels, are the label scores. The stack's server cannot give them cheaply: llama-cpp-python
returns log-probabilities only when it keeps every position's logits (``--logits_all True``), which
made each call 4.8× slower (``bench/label_calibration.py --serving-cost``). Serving needs no scores:
a per-label shift of the scores is applied by the server as ``logit_bias`` on the labels' first
tokens, which under the JSON grammar only matters where the label is chosen.

The model is loaded on first use and kept for the scorer's life; the KV state of the prompt prefix
shared with the previous query is reused, so a query costs the tokens after its first difference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CONTEXT_TOKENS = 2048


def log_normalized(scores: np.ndarray) -> np.ndarray:
    """Log-softmax along the last axis."""
    return scores - np.logaddexp.reduce(scores, axis=-1, keepdims=True)


class LocalLabelScorer:
    """Label scores of prompts for the local GGUF (``stack.ensure_local_model()``'s file)."""

    def __init__(self, model_path: Path, threads: int | None = None):
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"local model {model_path} is missing: run `cogniverse stack up` once")
        self.model_path = Path(model_path)
        self.threads = threads or int(os.environ.get("COGNIVERSE_LM_THREADS", os.cpu_count() or 2))
        self._llm = None
        self._chat = None
        self.calls = 0

    def _model(self):  # noqa: ANN202 - llama_cpp types stay private to this module
        if self._llm is None:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=CONTEXT_TOKENS,
                n_threads=self.threads,
                logits_all=False,
                verbose=False,
            )
            self._chat = Jinja2ChatFormatter(
                template=self._llm.metadata["tokenizer.chat_template"],
                eos_token=self._llm.detokenize([self._llm.token_eos()]).decode(),
                bos_token="",
            )
        return self._llm

    def first_tokens(self, labels: Sequence[str]) -> list[int]:
        """Each label's first token id; ``ValueError`` when two labels share one (a bias on it would
        move both)."""
        llm = self._model()
        tokens = [llm.tokenize(label.encode(), add_bos=False)[0] for label in labels]
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"labels {list(labels)} share a first token: their scores cannot be told apart")
        return tokens

    def prompt_after_shared_prefix(self, messages: list[dict], answer_prefix: str) -> tuple[list[int], int]:
        """The prompt's tokens and how many of them the model's state already holds (the prefix
        shared with the previous prompt, at least one token left to evaluate); the rest of that
        state is dropped."""
        llm = self._model()
        prompt = self._chat(messages=messages).prompt + answer_prefix
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        if len(tokens) >= CONTEXT_TOKENS:
            raise ValueError(f"prompt of {len(tokens)} tokens does not fit the scorer's {CONTEXT_TOKENS}")
        previous = llm._input_ids[: llm.n_tokens].tolist()
        kept = 0
        while kept < min(len(previous), len(tokens) - 1) and previous[kept] == tokens[kept]:
            kept += 1
        llm._ctx.kv_cache_seq_rm(-1, kept, -1)
        llm.n_tokens = kept
        return tokens, kept

    def last_scores(self, label_tokens: Sequence[int]) -> np.ndarray:
        """Log-probabilities of ``label_tokens`` at the last evaluated position, over the labels."""
        llm = self._model()
        # The last position's row, wherever the context keeps outputs for other positions too.
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
        return log_normalized(logits[list(label_tokens)].astype(float))

    def scores(self, messages: list[dict], answer_prefix: str, label_tokens: Sequence[int]) -> np.ndarray:
        """Log-probabilities of ``label_tokens`` after ``messages`` and ``answer_prefix``, over the labels."""
        tokens, kept = self.prompt_after_shared_prefix(messages, answer_prefix)
        self._model().eval(tokens[kept:])
        self.calls += 1
        return self.last_scores(label_tokens)
