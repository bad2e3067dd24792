"""Local generation with llama.cpp (``llama-cpp-python``): GGUF weights, many sequences decoded in one batch.

One llama.cpp context holds ``parallel`` sequences, each in its own KV-cache stream. Every step decodes the next
token of all running sequences together and starts waiting prompts in the slots that finished (continuous
batching, as ``llama-server --parallel`` does), so the CPU works on large matrix products instead of one token
at a time. Every stream is as long as the context's longest sequence needs, so the KV cache is kept within a budget
(``kv_cache_gib``): prompts run longest first, and long ones with fewer sequences at a time than short ones
(:func:`plan_runs`). The part of the prompt every question shares (the chat template and instructions before the
question, :func:`template_prefix`) is decoded once per run and its KV cache copied into each new sequence. Calls
from several threads or tasks (copies made by ``QRReasoner.with_`` share their backend) share the one context: one
background thread decodes, and a request that arrives while a run decodes takes a free slot between two steps
(:class:`LlamaEngine`), as ``llama-server --parallel`` serves its clients.

The embedded model and its fine-tunes run as a GGUF of the weight type chosen for this CPU (:func:`weights_type_for`
of what llama.cpp reports, :func:`cpu_features`, and of :func:`~.cpu.native_bf16`). Layers go to a GPU only when
one is asked for (``device``; a GPU build of llama.cpp would otherwise offload every layer).

Prompts are the same token ids as the transformers backend's (the model's chat template through its Hugging Face
tokenizer) and completions are decoded by that tokenizer. Sampling follows the paper's settings in transformers'
order: repetition penalty over the prompt and the completion, then temperature, top-k, top-p and a draw; with
``seed`` set, each (query, sample index) draws from its own seeded stream and a run repeats exactly. llama.cpp's
arithmetic is not batch-invariant (its kernels change with the number of rows), so a query batched with other
queries may draw a different completion than alone; the reasoning cache keeps whichever came first.
"""

from __future__ import annotations

import ctypes
import functools
import heapq
import logging
import os
import random
import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..generation import GenerationParams
from ..gguf_export import check_weights_type, gguf_model, is_gguf_file
from ..prompts import PromptTemplate
from .base import ResultCallback, row_seed, sample_indices
from .cpu import native_bf16
from .engine import BackgroundEngine, Job, resolve, wait_rows
from .prompting import fit_prompt, render

log = logging.getLogger(__name__)
_LOG_CALLBACK: Any = None
MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ
DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp draws a random seed instead
DEFAULT_KV_CACHE_GIB = 4.0
_CONTEXT_STEP = 256  # llama.cpp pads each sequence's context to a multiple of this
_GIB = 1 << 30
#: llama.cpp CPU features (as :func:`cpu_features` reports them) under which its kernels compute bfloat16 natively
NATIVE_BF16_FEATURES = frozenset({"AVX512_BF16"})
#: the weight type on CPUs without them: 16 bits like BF16, and with llama.cpp built for AVX2 without AVX-512
#: (Zen 3's instructions) faster than the shipped Q4_1 (benchmarks/results/throughput/throughput-no-bf16-emulated.txt)
NON_BF16_WEIGHTS_TYPE = "F16"
#: llama.cpp CPU features under which its extra CPU buffer types include AMX, whose kernels crash or compute garbage
#: on quantized weights (ggml-org/llama.cpp#20824: a segfault in ggml_backend_amx_mul_mat; #16315: wrong Q4_0/Q4_1)
AMX_FEATURES = frozenset({"AMX_INT8"})
#: ``n_gpu_layers`` that offloads every layer (llama-cpp-python's ``Llama`` uses the same for -1)
ALL_LAYERS = 0x7FFFFFFF
#: called with a finished job and its completion
JobDone = Callable[[Job, str], None]


def cpu_features(lib: Any = None) -> frozenset[str]:
    """The CPU features llama.cpp's kernels use on this machine, as llama.cpp reports them (``AVX2``,
    ``AVX512_BF16``, ``NEON``...): those of the CPU that its build was compiled for."""
    if lib is None:
        import llama_cpp as lib
    return frozenset(re.findall(r"(\w+) = 1\b", lib.llama_print_system_info().decode()))


@functools.cache
def installed_cpu_features() -> frozenset[str] | None:
    """:func:`cpu_features` of the installed llama-cpp-python, or ``None`` where it is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return cpu_features(llama_cpp)


def weights_type_for(features: frozenset[str], cpu_bf16: bool) -> str:
    """The GGUF weight type for llama.cpp with CPU ``features`` on a CPU that computes bfloat16 natively or not
    (``cpu_bf16``: :func:`~.cpu.native_bf16`): ``BF16`` where both the CPU and llama.cpp's kernels do (the type the
    transformers backend runs there; faster than the shipped Q4_1, benchmarks/results/throughput/), else
    :data:`NON_BF16_WEIGHTS_TYPE`."""
    return "BF16" if cpu_bf16 and features & NATIVE_BF16_FEATURES else NON_BF16_WEIGHTS_TYPE


def offload_device(lib: Any, device: str) -> str:
    """Where llama.cpp (the ``llama_cpp`` module ``lib``) runs the model's layers for ``device``: ``cpu``, or
    ``cuda``/``cuda:N`` (an error where this build cannot offload); ``auto``: CUDA where torch finds a GPU and this
    build can offload, else ``cpu``."""
    can_offload = bool(lib.llama_supports_gpu_offload())
    if device == "auto":
        from .transformers_backend import pick_device

        return pick_device("auto") if can_offload else "cpu"
    if device == "cpu":
        return device
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N for the llamacpp backend, got {device!r}")
    if not can_offload:
        raise ValueError(
            f"device {device!r} asked, but this llama-cpp-python build runs on the CPU only; use "
            "device 'cpu' or install a CUDA build of llama-cpp-python"
        )
    return device


def model_params(lib: Any, device: str) -> Any:
    """llama.cpp's model parameters for a model on ``device`` (``cpu`` or ``cuda[:N]``, see
    :func:`offload_device`): every layer on that GPU, or none offloaded on the CPU (llama.cpp's default, -1 in
    llama-cpp-python 0.3, offloads every layer in a GPU build). Where llama.cpp was built with AMX
    (:data:`AMX_FEATURES`) its extra CPU buffer types stay off, so the weights use the plain CPU kernels."""
    params = lib.llama_model_default_params()
    params.n_gpu_layers = 0 if device == "cpu" else ALL_LAYERS
    if cpu_features(lib) & AMX_FEATURES:
        params.use_extra_bufts = False
    if device.startswith("cuda:"):  # that GPU alone
        params.split_mode, params.main_gpu = lib.LLAMA_SPLIT_MODE_NONE, int(device.partition(":")[2])
    return params


def template_prefix(tokenizer: Any, template: PromptTemplate) -> list[int]:
    """The token ids every prompt of ``template`` starts with (the chat template and the instructions before the
    question): what two prompts with different questions have in common. A prompt that does not start with them
    (the question merged a token with the text before it) is decoded whole."""
    first, second = (render(tokenizer, template, question) for question in ("a", "Z"))
    shared = next((i for i, (x, y) in enumerate(zip(first, second)) if x != y), min(len(first), len(second)))
    return first[:shared]


def _forward_log(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's warnings and errors go to Python logging; its progress reports (every load step) do not."""
    if level in (3, 4):  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
        log.log(logging.WARNING if level == 3 else logging.ERROR, "llama.cpp: %s", text.decode(errors="replace").rstrip())


@dataclass(frozen=True)
class Run:
    """Prompts that share one llama.cpp context: their ``rows`` (longest prompt first), how many decode at a time
    (``slots``) and the tokens each sequence's KV stream holds (``per_sequence``)."""

    rows: list[int]
    slots: int
    per_sequence: int


def sequence_shape(need: int, parallel: int, budget_tokens: int) -> tuple[int, int]:
    """(tokens per KV stream, streams that fit the budget) for a sequence of ``need`` tokens (prompt and new): its
    stream padded to llama.cpp's step, and at most ``parallel`` such streams in ``budget_tokens``."""
    per_sequence = -(-need // _CONTEXT_STEP) * _CONTEXT_STEP
    return per_sequence, min(parallel, budget_tokens // per_sequence)


def plan_runs(
    lengths: Sequence[int], max_new_tokens: int, parallel: int, kv_budget_bytes: int, kv_bytes_per_token: int
) -> list[Run]:
    """Split prompts of ``lengths`` tokens into :class:`Run` s whose KV cache (``slots x per_sequence`` tokens)
    stays within ``kv_budget_bytes``. Prompts go longest first; a run ends where a context for the next prompt
    could hold at least twice as many sequences, so a long prompt decodes beside few others and short ones keep up
    to ``parallel`` at a time. A prompt that alone needs more than the budget is an error (nothing runs)."""
    budget_tokens = kv_budget_bytes // kv_bytes_per_token

    def shape(row: int) -> tuple[int, int]:
        return sequence_shape(lengths[row] + max_new_tokens, parallel, budget_tokens)

    order = sorted(range(len(lengths)), key=lambda row: lengths[row], reverse=True)
    runs, start = [], 0
    while start < len(order):
        per_sequence, slots = shape(order[start])
        if slots < 1:
            need = per_sequence * kv_bytes_per_token / _GIB
            raise ValueError(
                f"a prompt of {lengths[order[start]]} tokens with max_new_tokens={max_new_tokens} needs {need:.2f} GiB "
                f"of KV cache, more than kv_cache_gib={kv_budget_bytes / _GIB:.3g}: raise kv_cache_gib (--kv-cache-gib) "
                "or lower max_new_tokens"
            )
        end = start + 1
        while end < len(order) and shape(order[end])[1] < 2 * slots:
            end += 1
        runs.append(Run(order[start:end], min(slots, end - start), per_sequence))
        start = end
    return runs


@dataclass
class _Sequence:
    job: Job
    slot: int
    tokens: list[int] = field(default_factory=list)
    position: int = 0
    output: int = -1  # this step's index of its logits in the batch


def sequence_seed(params: GenerationParams, prompt: list[int], sample: int) -> int | None:
    """The seed of one sequence's sampler: from (seed, prompt, parameters, sample index), so a seeded run repeats
    exactly (``None``: unseeded)."""
    return None if params.seed is None else row_seed(params.seed, prompt, params.key(), sample) % DEFAULT_SEED


class DecodeRun:
    """Sequences decoding together in one llama.cpp context: as many KV streams (``slots``) of ``per_sequence``
    tokens as the backend's context holds (at least those asked for), the jobs waiting for a free slot, the running
    sequences with their samplers, and the KV cache of each shared prompt prefix once decoded (copied into every later
    sequence that starts with it; a job's prefix is its ``context``).

    Each :meth:`step` starts waiting jobs in free slots, then decodes the next token of every running sequence in
    one batch (continuous batching); a sequence that ends goes to ``done(job, text)`` and frees its slot. Jobs may be
    added between steps, each with its own decoding settings.
    """

    def __init__(self, backend: LlamaCppBackend, slots: int, per_sequence: int):
        self.backend, self.lib = backend, backend._lib
        self.ctx = backend._context(slots, per_sequence)
        self.slots, self.per_sequence = backend._ctx_shape
        self.memory = self.lib.llama_get_memory(self.ctx)
        self.waiting: deque[Job] = deque()
        self.free: list[int] = list(range(self.slots))  # a heap: a new sequence takes the lowest free slot
        self.running: list[_Sequence] = []
        self.samplers: dict[int, Any] = {}  # slot -> the sampler of its sequence, until freed
        self.prefix_states: dict[tuple[int, ...], Any] = {}  # a prefix -> its KV cache in one sequence, once decoded
        self.batch = self.lib.llama_batch_init(max(self.per_sequence, self.slots), 0, 1)

    @property
    def idle(self) -> bool:
        """No job waiting nor running."""
        return not self.waiting and not self.running

    def add(self, job: Job) -> None:
        """Queue ``job`` for the next free slot."""
        self.waiting.append(job)

    def step(self, done: JobDone) -> None:
        """Start waiting jobs in the free slots, then decode the next token of every running sequence."""
        # a new prompt is prefilled alone: llama.cpp cuts a batch over separate KV streams into micro-batches of
        # equal tokens per sequence, so a prompt beside decoding steps would take a pass per prompt token
        while self.waiting and self.free:
            job = self.waiting.popleft()
            seq = _Sequence(job, heapq.heappop(self.free), position=len(job.prompt))
            self.samplers[seq.slot] = self.backend._sampler(job.params, job.prompt, job.seed)  # freed at its end
            self._prefill(seq)
            if not self._finished(seq, done):
                self.running.append(seq)
        if not self.running:
            return
        # the next token of every running sequence, in slot order (llama.cpp puts only consecutive sequence ids
        # of separate KV streams into one micro-batch)
        self.running.sort(key=lambda seq: seq.slot)
        self.batch.n_tokens = 0
        for seq in self.running:
            seq.output = self._add(seq.tokens[-1], seq.position, seq.slot, True)
            seq.position += 1
        self._decode()
        self.running = [seq for seq in self.running if not self._finished(seq, done)]

    def jobs(self) -> list[Job]:
        """The jobs waiting or running."""
        return [seq.job for seq in self.running] + list(self.waiting)

    def close(self) -> None:
        """Free the samplers still held and the batch."""
        for sampler in self.samplers.values():
            self.lib.llama_sampler_free(sampler)
        self.samplers.clear()
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None

    def _prefill(self, seq: _Sequence) -> None:
        """Decode the job's prompt into ``seq``'s KV stream (its shared prefix copied in), logits of its last token."""
        lib, start, prompt, prefix = self.lib, 0, seq.job.prompt, seq.job.context or []
        if prefix and len(prompt) > len(prefix) and prompt[: len(prefix)] == prefix:
            state = self.prefix_states.get(tuple(prefix))
            if state is None:
                self.batch.n_tokens = 0
                for position, token in enumerate(prefix):
                    self._add(token, position, seq.slot, False)
                self._decode()
                state = (ctypes.c_uint8 * lib.llama_state_seq_get_size(self.ctx, seq.slot))()
                lib.llama_state_seq_get_data(self.ctx, state, len(state), seq.slot)
                self.prefix_states[tuple(prefix)] = state
            elif lib.llama_state_seq_set_data(self.ctx, state, len(state), seq.slot) != len(state):
                raise RuntimeError("llama.cpp could not copy the shared prompt prefix into a sequence")
            start = len(prefix)
        self.batch.n_tokens = 0
        for position in range(start, len(prompt)):
            seq.output = self._add(prompt[position], position, seq.slot, position == len(prompt) - 1)
        self._decode()

    def _finished(self, seq: _Sequence, done: JobDone) -> bool:
        """Draw ``seq``'s next token; at its end, free its slot and report it."""
        lib = self.lib
        token = lib.llama_sampler_sample(self.samplers[seq.slot], self.ctx, seq.output)
        end = lib.llama_vocab_is_eog(self.backend._vocab, token)
        if not end:
            seq.tokens.append(token)
        if not end and len(seq.tokens) < seq.job.params.max_new_tokens:
            return False
        lib.llama_sampler_free(self.samplers.pop(seq.slot))
        lib.llama_memory_seq_rm(self.memory, seq.slot, -1, -1)
        heapq.heappush(self.free, seq.slot)
        done(seq.job, self.backend.decode(seq.tokens))
        return True

    def _decode(self) -> None:
        if self.lib.llama_decode(self.ctx, self.batch) != 0:
            raise RuntimeError("llama.cpp failed to decode a batch")

    def _add(self, token: int, position: int, sequence: int, logits: bool) -> int:
        """Append one token of ``sequence`` to the batch; its index in the batch."""
        batch, i = self.batch, self.batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
        batch.seq_id[i][0], batch.logits[i] = sequence, logits
        batch.n_tokens = i + 1
        return i


class LlamaEngine(BackgroundEngine):
    """The backend's decoding thread: one :class:`DecodeRun` at a time over the queued jobs.

    A run starts with the jobs :func:`plan_runs` puts first (the longest prompts, with those that decode as many at a
    time); jobs queued while it decodes join it between steps (continuous batching) when their sequence fits its KV
    streams and :func:`plan_runs` would put it in such a run (not one with twice the slots), in the order they
    arrived. The first queued job that does not fit stops the jobs behind it from joining: the run drains, and the
    next is planned over everything queued, so no request waits behind later ones for ever.
    """

    def __init__(self, backend: LlamaCppBackend):
        super().__init__("tongsearch-qr-llamacpp")
        self.backend = backend
        self.run: DecodeRun | None = None
        self.capacity = 0  # the slots plan_runs gives the run's first sequence (for the twice-the-slots rule)

    def _active(self) -> bool:
        return self.run is not None

    def _serve_once(self) -> None:
        with self._cond:
            if self.run is None:
                self._start_run()
            self._admit()
        assert self.run is not None
        self.run.step(self._done)
        if self.run.idle:
            self.run.close()
            self.run = None

    def _start_run(self) -> None:
        backend, budget = self.backend, self.backend.kv_budget_tokens
        first = plan_runs(
            [_need(job) for job in self._pending],
            0,
            backend.parallel,
            budget * backend.kv_bytes_per_token,
            backend.kv_bytes_per_token,
        )[0]
        per_sequence, self.capacity = sequence_shape(_need(self._pending[first.rows[0]]), backend.parallel, budget)
        self.run = DecodeRun(backend, self.capacity, per_sequence)
        chosen = [self._pending[row] for row in first.rows]  # longest first
        for job in chosen:
            self.run.add(job)
        taken = {id(job) for job in chosen}
        self._pending = [job for job in self._pending if id(job) not in taken]

    def _admit(self) -> None:
        """Move the queued jobs that may join the run into it, in arrival order, up to the first that may not."""
        assert self.run is not None
        joined = 0
        for job in self._pending:
            per_sequence, slots = sequence_shape(_need(job), self.backend.parallel, self.backend.kv_budget_tokens)
            if per_sequence > self.run.per_sequence or slots >= 2 * self.capacity:
                break
            self.run.add(job)
            joined += 1
        del self._pending[:joined]

    @staticmethod
    def _done(job: Job, text: str) -> None:
        resolve(job.future, text)

    def _fail_active(self, error: BaseException) -> None:
        if self.run is not None:
            for job in self.run.jobs():
                resolve(job.future, error=error)
            self.run.close()
            self.run = None


def _need(job: Job) -> int:
    """Tokens a job's sequence holds at most: its prompt and its new tokens."""
    return len(job.prompt) + job.params.max_new_tokens


class LlamaCppBackend:
    """Generation with llama.cpp's batched decoding on a GGUF model.

    ``model``: the embedded default or a local fine-tune / LoRA adapter of it (the weights the transformers backend
    loads, written once per weight type as GGUF and cached), or any ``.gguf`` file as it is. ``weights_type``:
    ``BF16``, ``F16``, ``Q8_0``, ``Q4_0`` or ``F32`` for those exported weights (default: :func:`weights_type_for`
    this CPU). ``parallel``: how many sequences decode together at most; ``kv_cache_gib``: the most memory the KV
    cache may take (long prompts then decode with fewer sequences at a time); ``threads``: CPU threads (default: all
    cores); ``share_prefix``: decode the prompts' shared start once per run; ``device``: ``cpu``, ``cuda[:N]`` (every
    layer on that GPU) or ``auto`` (a GPU where there is one and this build can use it), see :func:`offload_device`;
    ``backend.device`` says where the layers run. Thread-safe: concurrent ``submit``/``generate`` calls share the
    context, their requests decoding together (:class:`LlamaEngine`).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        parallel: int = 64,
        threads: int | None = None,
        kv_cache_gib: float = DEFAULT_KV_CACHE_GIB,
        weights_type: str | None = None,
        share_prefix: bool = True,
        device: str = "auto",
    ):
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to use from several threads at once
        self._prefixes: dict[str, list[int]] = {}  # a template's key -> its shared prompt prefix
        if not 1 <= parallel <= MAX_SEQUENCES:
            raise ValueError(f"parallel must be between 1 and {MAX_SEQUENCES} (llama.cpp's limit), got {parallel}")
        if not kv_cache_gib > 0:
            raise ValueError(f"kv_cache_gib must be > 0, got {kv_cache_gib}")
        try:
            import llama_cpp
        except ImportError as exc:
            raise ImportError("the llamacpp backend needs llama-cpp-python: pip install 'tongsearch-qr[llamacpp]'") from exc
        global _LOG_CALLBACK
        _LOG_CALLBACK = _LOG_CALLBACK or llama_cpp.llama_log_callback(_forward_log)  # kept alive: called later
        llama_cpp.llama_log_set(_LOG_CALLBACK, None)
        self._lib = llama_cpp
        self.device = offload_device(llama_cpp, device)
        if is_gguf_file(model):
            if weights_type is not None:
                raise ValueError(f"{model} is a GGUF file and runs with the weights it holds: leave weights_type out")
            self.weights_type = None
        else:
            self.weights_type = (
                check_weights_type(weights_type) if weights_type else weights_type_for(cpu_features(llama_cpp), native_bf16())
            )
        found = gguf_model(model, self.weights_type or "BF16")
        self.gguf_path, self.tokenizer = found.path, found.tokenizer
        self.cache_id = f"llamacpp:{found.identity}"
        self.parallel, self.threads = parallel, threads or os.cpu_count() or 1
        self.kv_cache_gib, self.share_prefix = kv_cache_gib, share_prefix
        llama_cpp.llama_backend_init()
        self._model = llama_cpp.llama_model_load_from_file(str(self.gguf_path).encode(), model_params(llama_cpp, self.device))
        if not self._model:
            raise ValueError(f"llama.cpp could not load {self.gguf_path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.context_length = llama_cpp.llama_model_n_ctx_train(self._model)
        self.kv_bytes_per_token = self._kv_bytes_per_token()
        self._ctx, self._ctx_shape = None, (0, 0)
        self._engine = LlamaEngine(self)

    @property
    def kv_budget_tokens(self) -> int:
        """Tokens the KV cache may hold, over all sequences (``kv_cache_gib``)."""
        return int(self.kv_cache_gib * _GIB) // self.kv_bytes_per_token

    def _kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token of one sequence: keys and values in float16 (llama.cpp's default) per layer."""
        lib, model = self._lib, self._model
        head = lib.llama_model_n_embd(model) // lib.llama_model_n_head(model)
        width = sum(self._metadata_int(f"attention.{part}_length") or head for part in ("key", "value"))
        return lib.llama_model_n_layer(model) * lib.llama_model_n_head_kv(model) * width * 2

    def _metadata_int(self, key: str) -> int | None:
        """An integer of the GGUF metadata under the model's architecture (``llama.<key>``), if it is there."""
        value = ctypes.create_string_buffer(64)
        if self._lib.llama_model_meta_val_str(self._model, b"general.architecture", value, len(value)) < 0:
            return None
        name = f"{value.value.decode()}.{key}".encode()
        return int(value.value) if self._lib.llama_model_meta_val_str(self._model, name, value, len(value)) > 0 else None

    def close(self) -> None:
        """Fail the requests still queued, wait for the running ones, then free the llama.cpp context and model (also
        done when the backend is garbage-collected)."""
        if getattr(self, "_engine", None) is not None:
            self._engine.shut()
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
            # the cells only: zeroing the data (GiBs for a large context) costs more than a short call decodes, and
            # the cells a run does not fill are masked out (their data, zeroed when the context was made, stays finite)
            self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), False)
            return self._ctx
        if self._ctx:
            self._lib.llama_free(self._ctx)
            self._ctx = None
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
            lib.llama_sampler_chain_add(
                chain, lib.llama_sampler_init_penalties(self.n_vocab, window, params.repetition_penalty, 0.0, 0.0)
            )
        if params.do_sample:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
            if params.top_k:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(params.top_k))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(random.getrandbits(32) if seed is None else seed))
        else:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        for token in prompt:
            lib.llama_sampler_accept(chain, token)
        return chain

    def decode(self, tokens: list[int]) -> str:
        """The text of generated token ids."""
        with self._tokenizer_lock:
            return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def submit(
        self, questions: Sequence[str], template: PromptTemplate, params: GenerationParams, samples: Sequence[int] | None = None
    ) -> list[Future[str]]:
        """Queue ``questions`` for decoding and return one future per row at once; they decode beside whatever else is
        queued or running (fewer sequences at a time for long prompts, to keep the KV cache within ``kv_cache_gib``).
        A prompt that alone needs more KV cache than the budget is an error here, before anything is queued."""
        samples = sample_indices(questions, samples)
        if not questions:
            return []
        with self._tokenizer_lock:
            prompts = [fit_prompt(self.tokenizer, template, q, self.context_length, params.max_new_tokens) for q in questions]
            prefix = self._prefix(template) if self.share_prefix else []
        plan_runs(
            [len(p) for p in prompts],
            params.max_new_tokens,
            self.parallel,  # raises for a prompt too long
            int(self.kv_cache_gib * _GIB),
            self.kv_bytes_per_token,
        )
        jobs = [
            Job(prompt, params, sample, sequence_seed(params, prompt, sample), context=prefix)
            for prompt, sample in zip(prompts, samples)
        ]
        self._engine.put(jobs)
        return [job.future for job in jobs]

    def generate(
        self,
        questions: Sequence[str],
        template: PromptTemplate,
        params: GenerationParams,
        on_result: ResultCallback | None = None,
        samples: Sequence[int] | None = None,
    ) -> list[str]:
        """Completions for ``questions`` in input order (see :meth:`submit`), ``on_result`` called as each is done."""
        return wait_rows(self.submit(questions, template, params, samples), questions, on_result)

    def _prefix(self, template: PromptTemplate) -> list[int]:
        key = repr(template.key())
        if key not in self._prefixes:
            self._prefixes[key] = template_prefix(self.tokenizer, template)
        return self._prefixes[key]
