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

``scores_and_state`` also returns the last layer's hidden state at the scored position (what
``calibrated_state``'s probe reads). The prompt is evaluated without embeddings and its last token
alone with them on, so no output is kept for other positions: a pass costs what a plain one does
(0.858 s against 0.835 s, docs/benchmarks.md "The LM's own hidden state"). The quantized model's
arithmetic depends on how tokens are split into batches (scores moved by up to 0.1 nats), so this
read splits every prompt the same way whatever came before: the module's fixed prefix (evaluated
once, alone, and reused), the rest, the last token. A query then gets the same scores and state
at compile, at evaluation and in serving, in any order of queries.
"""

from __future__ import annotations

import atexit
import os
import threading
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
        self._unit_prefix: list[int] = []  # tokens the state holds as evaluated alone, in one call
        # One llama.cpp context answers one prompt at a time; threads serving one module take turns.
        self.lock = threading.RLock()

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

    def close(self) -> None:
        """Free the model now (it is loaded again on next use)."""
        with self.lock:
            if self._llm is not None:
                self._llm.close()
                self._llm, self._chat, self._unit_prefix = None, None, []

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
        tokens = self.prompt_tokens(messages, answer_prefix)
        previous = llm._input_ids[: llm.n_tokens].tolist()
        kept = 0
        while kept < min(len(previous), len(tokens) - 1) and previous[kept] == tokens[kept]:
            kept += 1
        self._drop_after(kept)
        return tokens, kept

    def _drop_after(self, kept: int) -> None:
        llm = self._model()
        llm._ctx.kv_cache_seq_rm(-1, kept, -1)
        llm.n_tokens = kept
        if kept < len(self._unit_prefix):
            self._unit_prefix = []

    def prompt_tokens(self, messages: list[dict], answer_prefix: str) -> list[int]:
        llm = self._model()
        tokens = llm.tokenize(
            (self._chat(messages=messages).prompt + answer_prefix).encode(), add_bos=False, special=True
        )
        if len(tokens) >= CONTEXT_TOKENS:
            raise ValueError(f"prompt of {len(tokens)} tokens does not fit the scorer's {CONTEXT_TOKENS}")
        return tokens

    def fixed_prefix_length(self, prompts: Sequence[list[dict]]) -> int:
        """Tokens every one of ``prompts`` starts with, less one (the token where they part may merge
        with what follows it in another prompt)."""
        tokenized = [self.prompt_tokens(messages, "") for messages in prompts]
        length = 0
        while all(len(tokens) > length and tokens[length] == tokenized[0][length] for tokens in tokenized):
            length += 1
        return max(0, length - 1)

    def last_scores(self, label_tokens: Sequence[int]) -> np.ndarray:
        """Log-probabilities of ``label_tokens`` at the last evaluated position, over the labels."""
        llm = self._model()
        # The last position's row, wherever the context keeps outputs for other positions too.
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
        return log_normalized(logits[list(label_tokens)].astype(float))

    def last_state(self) -> np.ndarray:
        """The last layer's hidden state at the last evaluated position (a copy); the context must
        have had its embeddings on for that position."""
        llm = self._model()
        return np.ctypeslib.as_array(llm._ctx.get_embeddings_ith(-1), shape=(llm.n_embd(),)).astype(float)

    def scores(self, messages: list[dict], answer_prefix: str, label_tokens: Sequence[int]) -> np.ndarray:
        """Log-probabilities of ``label_tokens`` after ``messages`` and ``answer_prefix``, over the labels."""
        with self.lock:
            tokens, kept = self.prompt_after_shared_prefix(messages, answer_prefix)
            self._model().eval(tokens[kept:])
            self.calls += 1
            return self.last_scores(label_tokens)

    def scores_and_state(
        self, messages: list[dict], answer_prefix: str, label_tokens: Sequence[int], fixed_prefix: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The label scores and the last layer's hidden state at the scored position, the prompt
        split the same way every time: its first ``fixed_prefix`` tokens (``fixed_prefix_length``
        of the module's prompts) evaluated alone, the rest, then the last token alone."""
        import llama_cpp

        with self.lock:
            llm = self._model()
            tokens = self.prompt_tokens(messages, answer_prefix)
            head = tokens[: min(fixed_prefix, len(tokens) - 1)]
            held = llm._input_ids[: llm.n_tokens].tolist()
            if not (self._unit_prefix == head and held[: len(head)] == head):
                self._drop_after(0)
                if head:
                    llm.eval(head)
                self._unit_prefix = head
            self._drop_after(len(head))
            if len(head) < len(tokens) - 1:
                llm.eval(tokens[len(head) : -1])
            llama_cpp.llama_set_embeddings(llm._ctx.ctx, True)
            try:
                llm.eval(tokens[-1:])
                scores, state = self.last_scores(label_tokens), self.last_state()
            finally:
                llama_cpp.llama_set_embeddings(llm._ctx.ctx, False)
            self.calls += 1
            return scores, state


_shared_scorers: dict[Path, LocalLabelScorer] = {}
_shared_scorers_lock = threading.Lock()


def shared_scorer(model_path: Path) -> LocalLabelScorer:
    """One scorer per model file and process: modules that answer in process share its loaded model."""
    key = Path(model_path)
    with _shared_scorers_lock:
        if key not in _shared_scorers:
            _shared_scorers[key] = LocalLabelScorer(key)
        return _shared_scorers[key]


@atexit.register
def _close_shared_scorers() -> None:
    # Freed before the interpreter tears llama_cpp's module down: a model freed after that fails
    # noisily in Llama.__del__ at exit.
    with _shared_scorers_lock:
        for scorer in _shared_scorers.values():
            scorer.close()
        _shared_scorers.clear()
