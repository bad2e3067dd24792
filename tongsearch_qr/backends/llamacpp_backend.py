"""Local generation with llama.cpp (``llama-cpp-python``): GGUF weights, many sequences decoded in one batch.

One llama.cpp context holds ``parallel`` sequences, each in its own KV-cache stream. Every step decodes the next
token of all running sequences together and starts waiting prompts in the slots that finished (continuous
batching, as ``llama-server --parallel`` does), so the CPU works on large matrix products instead of one token
at a time.

Prompts are the same token ids as the transformers backend's (the model's chat template through its Hugging Face
tokenizer) and completions are decoded by that tokenizer. Sampling follows the paper's settings in transformers'
order: repetition penalty over the prompt and the completion, then temperature, top-k, top-p and a draw; with
``seed`` set, each (query, sample index) draws from its own seeded stream and a run repeats exactly. llama.cpp's
arithmetic is not batch-invariant (its kernels change with the number of rows), so a query batched with other
queries may draw a different completion than alone; the reasoning cache keeps whichever came first.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..generation import GenerationParams
from ..gguf_export import gguf_model
from ..prompts import PromptTemplate
from .base import ResultCallback, row_seed, sample_indices
from .prompting import fit_prompt

log = logging.getLogger(__name__)
_LOG_CALLBACK: Any = None
MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ
DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp draws a random seed instead


def _forward_log(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's warnings and errors go to Python logging; its progress reports (every load step) do not."""
    if level in (3, 4):  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
        log.log(logging.WARNING if level == 3 else logging.ERROR, "llama.cpp: %s", text.decode(errors="replace").rstrip())


@dataclass
class _Sequence:
    row: int
    slot: int
    tokens: list[int] = field(default_factory=list)
    position: int = 0
    output: int = -1  # this step's index of its logits in the batch


class LlamaCppBackend:
    """Generation with llama.cpp's batched decoding on a GGUF model.

    ``model``: the embedded default or a local fine-tune / LoRA adapter of it (the weights the transformers backend
    loads, written once as a bfloat16 GGUF and cached), or any ``.gguf`` file as it is. ``parallel``: how many
    sequences decode together; ``threads``: CPU threads (default: all cores).
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, parallel: int = 64, threads: int | None = None):
        if not 1 <= parallel <= MAX_SEQUENCES:
            raise ValueError(f"parallel must be between 1 and {MAX_SEQUENCES} (llama.cpp's limit), got {parallel}")
        try:
            import llama_cpp
        except ImportError as exc:
            raise ImportError("the llamacpp backend needs llama-cpp-python: pip install 'tongsearch-qr[llamacpp]'") from exc
        global _LOG_CALLBACK
        _LOG_CALLBACK = _LOG_CALLBACK or llama_cpp.llama_log_callback(_forward_log)  # kept alive: called later
        llama_cpp.llama_log_set(_LOG_CALLBACK, None)
        self._lib = llama_cpp
        found = gguf_model(model)
        self.gguf_path, self.tokenizer = found.path, found.tokenizer
        self.cache_id = f"llamacpp:{found.identity}"
        self.parallel, self.threads = parallel, threads or os.cpu_count() or 1
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(self.gguf_path).encode(), params)
        if not self._model:
            raise ValueError(f"llama.cpp could not load {self.gguf_path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.context_length = llama_cpp.llama_model_n_ctx_train(self._model)
        self._ctx, self._ctx_shape = None, (0, 0)

    def close(self) -> None:
        """Free the llama.cpp context and model (also done when the backend is garbage-collected)."""
        if getattr(self, "_ctx", None):
            self._lib.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._lib.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        if getattr(self, "_lib", None) is not None and self._lib.llama_free is not None:  # not at interpreter exit
            self.close()

    def _context(self, slots: int, per_sequence: int) -> Any:
        """A context for ``slots`` sequences of up to ``per_sequence`` tokens each (reused when big enough)."""
        have_slots, have_length = self._ctx_shape
        if self._ctx and have_slots >= slots and have_length >= per_sequence:
            self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)
            return self._ctx
        if self._ctx:
            self._lib.llama_free(self._ctx)
        per_sequence = -(-per_sequence // 256) * 256
        params = self._lib.llama_context_default_params()
        params.n_ctx = slots * per_sequence
        params.n_batch = params.n_ubatch = max(512, per_sequence, slots)
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = self.threads
        params.kv_unified = False  # one KV stream per sequence: attention reads only its own tokens
        self._ctx = self._lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {slots} x {per_sequence} tokens")
        self._ctx_shape = (slots, per_sequence)
        return self._ctx

    def _sampler(self, params: GenerationParams, prompt: list[int], seed: int | None) -> Any:
        """A sampler chain for one sequence, its repetition penalty already fed with ``prompt``."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if params.repetition_penalty != 1.0:  # over the whole prompt and completion, like transformers
            window = len(prompt) + params.max_new_tokens
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_penalties(
                self.n_vocab, window, params.repetition_penalty, 0.0, 0.0))
        if params.do_sample:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
            if params.top_k:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(params.top_k))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(
                random.getrandbits(32) if seed is None else seed))
        else:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        for token in prompt:
            lib.llama_sampler_accept(chain, token)
        return chain

    def generate(
        self,
        questions: Sequence[str],
        template: PromptTemplate,
        params: GenerationParams,
        on_result: ResultCallback | None = None,
        samples: Sequence[int] | None = None,
    ) -> list[str]:
        """Completions for ``questions`` in input order, ``parallel`` sequences decoding at a time."""
        samples = sample_indices(questions, samples)
        if not questions:
            return []
        prompts = [fit_prompt(self.tokenizer, template, q, self.context_length, params.max_new_tokens) for q in questions]
        slots = min(self.parallel, len(prompts))
        per_sequence = max(len(p) for p in prompts) + params.max_new_tokens
        ctx = self._context(slots, per_sequence)
        lib = self._lib
        memory = lib.llama_get_memory(ctx)
        batch = lib.llama_batch_init(max(per_sequence, slots), 0, 1)
        waiting = deque(sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True))
        free, running = list(range(slots)), []  # a heap: new sequences take the lowest free slot
        results = [""] * len(prompts)
        samplers: dict[int, Any] = {}  # slot -> the sampler of its sequence, until freed

        def decode() -> None:
            if lib.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama.cpp failed to decode a batch")

        def finished(seq: _Sequence) -> bool:
            """Draw ``seq``'s next token; at its end, report it and free its slot."""
            token = lib.llama_sampler_sample(samplers[seq.slot], ctx, seq.output)
            end = lib.llama_vocab_is_eog(self._vocab, token)
            if not end:
                seq.tokens.append(token)
            if not end and len(seq.tokens) < params.max_new_tokens:
                return False
            lib.llama_sampler_free(samplers.pop(seq.slot))
            lib.llama_memory_seq_rm(memory, seq.slot, -1, -1)
            results[seq.row] = text = self.tokenizer.decode(seq.tokens, skip_special_tokens=True)
            heapq.heappush(free, seq.slot)
            if on_result is not None:
                on_result(seq.row, text)
            return True

        try:
            while waiting or running:
                # a new prompt is prefilled alone: llama.cpp cuts a batch over separate KV streams into
                # micro-batches of equal tokens per sequence, so a prompt beside decoding steps would take a
                # pass per prompt token
                while waiting and free:
                    row = waiting.popleft()
                    prompt = prompts[row]
                    seed = None if params.seed is None else \
                        row_seed(params.seed, prompt, params.key(), samples[row]) % DEFAULT_SEED
                    seq = _Sequence(row, heapq.heappop(free), position=len(prompt))
                    samplers[seq.slot] = self._sampler(params, prompt, seed)  # freed at its end, or below on failure
                    batch.n_tokens = 0
                    for position, token in enumerate(prompt):
                        seq.output = self._add(batch, token, position, seq.slot, position == len(prompt) - 1)
                    decode()
                    if not finished(seq):
                        running.append(seq)
                if not running:
                    continue
                # one step: the next token of every running sequence, in slot order (llama.cpp puts only
                # consecutive sequence ids of separate KV streams into one micro-batch)
                running.sort(key=lambda seq: seq.slot)
                batch.n_tokens = 0
                for seq in running:
                    seq.output = self._add(batch, seq.tokens[-1], seq.position, seq.slot, True)
                    seq.position += 1
                decode()
                running = [seq for seq in running if not finished(seq)]
        finally:
            for sampler in samplers.values():
                lib.llama_sampler_free(sampler)
            lib.llama_batch_free(batch)
        return results

    @staticmethod
    def _add(batch: Any, token: int, position: int, sequence: int, logits: bool) -> int:
        """Append one token of ``sequence`` to ``batch``; its index in the batch."""
        i = batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
        batch.seq_id[i][0], batch.logits[i] = sequence, logits
        batch.n_tokens = i + 1
        return i
