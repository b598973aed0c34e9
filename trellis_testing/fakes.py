"""Fakes for host-side tests of the scheduler, engine and server: outputs computable by hand.

`FakeRunner` honours the StepPlan contract like the real runner: it keeps a fake KV pool (one token id
per slot), applies the plan's page_copies first, writes every new token at `page_ids[pos // page_size]`,
and in mode "sum" computes the next token from the context it *reads back through the page table*, so a
wrong page or a wrong copy (a cache bug) changes the output. Formulas (V = vocab_size):
  "sum":       next = (sum of the sequence's tokens at positions 0 .. kv_len-1) % V
  "increment": next = (last token + 1) % V
With temperature > 0 a seeded offset is added: random.Random(f"{seed}:{rng_step}").randrange(V).
`dispatch(plan) -> launch` / `collect(launch) -> StepOutputs` as the Runner's overlapped pair: a PENDING_TOKEN
row takes the token the previous dispatch sampled for its request id (a ValueError if there is none).
A multi-step plan (StepPlan.decode_steps k > 1) runs k iterations per row as the real runner does: each
writes its token and samples the next, positions past the row's page_ids write nowhere and sample 0
(the device's sink page: junk the scheduler must drop); `StepOutputs.more` holds tokens 2..k.
`save_pages(ids) -> read` (`read.fetch()` -> one tuple of slot values per page) and `load_pages(ids, pages)` move
whole pages as the Runner's do (the radix cache's lower tiers), so a wrong reload changes a "sum" output.
`ByteTokenizer` is a tiny tokenizer over UTF-8 bytes (ids 0-255) plus BOS "<s>" 256 and EOS "</s>" 257.
"""

from __future__ import annotations

import codecs
import dataclasses
import random

from trellis_jax.step_plan import PENDING_TOKEN, SampledToken, SequenceWork, StepOutputs, StepPlan

BOS_ID = 256
EOS_ID = 257
_SPECIALS = {"<s>": BOS_ID, "</s>": EOS_ID}


class FakeRunner:
    def __init__(
        self,
        num_pages: int,
        page_size: int,
        *,
        vocab_size: int = 258,
        mode: str = "sum",
        max_num_tokens: int = 4096,
        max_num_seqs: int = 256,
    ) -> None:
        if mode not in ("sum", "increment"):
            raise ValueError(f"mode must be 'sum' or 'increment', got {mode!r}")
        self.num_pages, self.page_size, self.vocab_size, self.mode = num_pages, page_size, vocab_size, mode
        self.max_num_tokens, self.max_num_seqs = max_num_tokens, max_num_seqs
        self.kv: dict[int, int] = {}  # slot (page * page_size + offset) -> token id
        self.num_steps = 0
        self.num_page_copies = 0
        self.num_pages_loaded = 0
        self.num_tokens_computed = 0
        self.computed: list[tuple[str, int, int]] = []  # (request id, start_pos, num tokens) per sequence
        self.kv_generation = 0  # as Runner: bumped by every run()
        self._last_sampled: dict[str, int] = {}  # request id -> token the last run sampled (PENDING_TOKEN feed)

    def dispatch(self, plan: StepPlan) -> StepOutputs:
        """As Runner.dispatch; the fake computes at once, so the launch is the outputs."""
        return self.run(plan)

    def collect(self, launch: StepOutputs) -> StepOutputs:
        return launch

    def run(self, plan: StepPlan) -> StepOutputs:
        self.kv_generation += 1
        self._check(plan)
        plan = self._fed(plan)
        for src, dst in plan.page_copies:  # before any write, as the real runner
            for offset in range(self.page_size):
                slot = src * self.page_size + offset
                if slot in self.kv:
                    self.kv[dst * self.page_size + offset] = self.kv[slot]
                else:
                    self.kv.pop(dst * self.page_size + offset, None)
        self.num_page_copies += len(plan.page_copies)
        self.num_steps += 1
        self.num_tokens_computed += plan.num_tokens
        if plan.decode_steps > 1:
            return self._run_multi_step(plan)
        tokens = {}
        for work in plan.sequences:
            self.computed.append((work.request_id, work.start_pos, len(work.token_ids)))
            self._write(work)
            if work.sample:
                tokens[work.request_id] = self._sample(work)
        self._last_sampled = {rid: t.token_id for rid, t in tokens.items()}
        return StepOutputs(tokens)

    def _run_multi_step(self, plan: StepPlan) -> StepOutputs:
        tokens, more = {}, {}
        for work in plan.sequences:
            self.computed.append((work.request_id, work.start_pos, plan.decode_steps))
            sampled = []
            for _ in range(plan.decode_steps):
                if work.kv_len <= len(work.page_ids) * self.page_size:
                    self._write(work)
                    sampled.append(self._sample(work))
                else:
                    sampled.append(SampledToken(0, 0.0))  # past its pages: the sink, junk never to be kept
                work = dataclasses.replace(
                    work, token_ids=[sampled[-1].token_id], start_pos=work.kv_len, rng_step=work.rng_step + 1
                )
            tokens[work.request_id], more[work.request_id] = sampled[0], sampled[1:]
        self._last_sampled = {rid: (more[rid][-1] if more[rid] else t).token_id for rid, t in tokens.items()}
        return StepOutputs(tokens, more)

    def _fed(self, plan: StepPlan) -> StepPlan:
        """The plan with every PENDING_TOKEN replaced by the previous run's token for that request id."""
        rows = []
        for work in plan.sequences:
            if PENDING_TOKEN in work.token_ids:
                if work.token_ids != [PENDING_TOKEN] or work.request_id not in self._last_sampled:
                    raise ValueError(f"row {work.request_id!r}: no token of the previous step to feed")
                work = dataclasses.replace(work, token_ids=[self._last_sampled[work.request_id]])
            rows.append(work)
        return dataclasses.replace(plan, sequences=rows)

    def save_pages(self, page_ids: list[int]) -> _PageRead:
        """As Runner.save_pages: each page's slots now (None: never written), fetched later."""
        self._check_pages(page_ids)
        ps = self.page_size
        return _PageRead([tuple(self.kv.get(p * ps + o) for o in range(ps)) for p in page_ids])

    def load_pages(self, page_ids: list[int], pages) -> None:
        """As Runner.load_pages: write saved pages back into these page ids."""
        self._check_pages(page_ids)
        for page_id, page in zip(page_ids, pages, strict=True):
            for offset, value in enumerate(page):
                slot = page_id * self.page_size + offset
                if value is None:
                    self.kv.pop(slot, None)
                else:
                    self.kv[slot] = value
        self.num_pages_loaded += len(page_ids)

    def page_load_rate(self, num_pages: int = 16) -> tuple[float, float]:
        return 0.0, 1e9

    def _check_pages(self, page_ids) -> None:
        if any(not 0 < p < self.num_pages for p in page_ids):
            raise ValueError(f"page ids must be in 1..{self.num_pages - 1}, got {list(page_ids)[:8]}")

    def check_plan(self, plan: StepPlan) -> None:
        """As Runner.check_plan: raise what run() would raise for this plan, changing nothing."""
        self._check(plan)
        self._fed(plan)

    def _check(self, plan: StepPlan) -> None:
        if plan.num_tokens > self.max_num_tokens or len(plan.sequences) > self.max_num_seqs:
            raise ValueError(f"plan of {plan.num_tokens} tokens / {len(plan.sequences)} seqs exceeds the runner")
        for work in plan.sequences:
            if len(work.page_ids) * self.page_size < work.kv_len or not work.token_ids:
                raise ValueError(f"bad work for {work.request_id}: {len(work.page_ids)} pages for kv_len {work.kv_len}")
            if any(p <= 0 or p >= self.num_pages for p in work.page_ids):
                raise ValueError(f"page id out of range (or the sink page 0) in {work.page_ids}")

    def _slot(self, work: SequenceWork, pos: int) -> int:
        return work.page_ids[pos // self.page_size] * self.page_size + pos % self.page_size

    def _write(self, work: SequenceWork) -> None:
        for i, token in enumerate(work.token_ids):
            self.kv[self._slot(work, work.start_pos + i)] = token

    def _sample(self, work: SequenceWork) -> SampledToken:
        if self.mode == "sum":
            base = sum(self.kv[self._slot(work, pos)] for pos in range(work.kv_len))
        else:
            base = work.token_ids[-1] + 1
        if work.sampling.temperature > 0:
            base += random.Random(f"{work.sampling.seed}:{work.rng_step}").randrange(self.vocab_size)
        token = base % self.vocab_size
        top = [((token + k) % self.vocab_size, -0.5 - k) for k in range(work.sampling.num_logprobs)]
        return SampledToken(token, -0.5, top)


class _PageRead:
    def __init__(self, pages: list[tuple]) -> None:
        self._pages = pages

    def fetch(self) -> list[tuple]:
        return self._pages


class ByteTokenizer:
    """UTF-8 bytes as token ids; "<s>" / "</s>" parsed as BOS / EOS when parse_special."""

    bos_token_id = BOS_ID
    eos_token_ids = (EOS_ID,)
    vocab_size = 258

    def encode(self, text: str, parse_special: bool = True, add_bos: bool | None = None) -> list[int]:
        """`add_bos`: True prepends BOS; None (the model's setting) and False add none."""
        ids: list[int] = [BOS_ID] if add_bos else []
        i = 0
        while i < len(text):
            special = next((s for s in _SPECIALS if parse_special and text.startswith(s, i)), None)
            if special:
                ids.append(_SPECIALS[special])
                i += len(special)
            else:
                ids.extend(text[i].encode())
                i += 1
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        out, pending = [], bytearray()
        for token in ids:
            if token < 256:
                pending.append(token)
                continue
            out.append(pending.decode(errors="replace"))
            pending = bytearray()
            if not skip_special_tokens:
                out.append("<s>" if token == BOS_ID else "</s>")
        out.append(pending.decode(errors="replace"))
        return "".join(out)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<{m['role']}>{m['content']}</s>" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True, *, add_bos=None) -> list[int]:
        """apply_chat_template's ids, but "<s>" / "</s>" text inside a message is plain bytes (as in Tokenizer)."""
        ids: list[int] = [BOS_ID] if add_bos else []
        for m in messages:
            ids += self.encode(f"<{m['role']}>", parse_special=False) + self.encode(m["content"], parse_special=False)
            ids.append(EOS_ID)
        return ids + (self.encode("<assistant>") if add_generation_prompt else [])


class ByteDetokenizer:
    """Incremental detokenizer for ByteTokenizer (same push/flush contract as the real one)."""

    def __init__(self, tokenizer: ByteTokenizer | None = None, *, skip_special_tokens: bool = True) -> None:
        self.skip_special_tokens = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        if token_id < 256:
            return self._utf8.decode(bytes([token_id]))
        held = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return held if self.skip_special_tokens else held + ("<s>" if token_id == BOS_ID else "</s>")

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def make_fake_engine(
    *,
    num_pages: int = 64,
    page_size: int = 4,
    mode: str = "sum",
    enable_prefix_cache: bool = True,
    eviction_policy: str = "lru",
    runner: FakeRunner | None = None,
    overlap: bool = False,
    page_store=None,
    **scheduler_options,
):
    """An Engine over FakeRunner + ByteTokenizer: returns (engine, runner, cache, tokenizer). `runner`: take
    turns on an existing FakeRunner instead of a new one. `page_store` (e.g. trellis_testing's DictPageStore):
    the lower tiers on (engine.tiers, a TierMover; a page counts as one byte, so reloading always pays)."""
    from trellis_jax.cache import RadixCache
    from trellis_jax.engine.engine import Engine
    from trellis_jax.scheduler import Scheduler, SchedulerConfig

    config = SchedulerConfig(page_size=page_size, enable_prefix_cache=enable_prefix_cache, **scheduler_options)
    cache = RadixCache(num_pages, page_size, policy=eviction_policy, enabled=enable_prefix_cache)
    runner = runner or FakeRunner(
        num_pages, page_size, mode=mode, max_num_tokens=config.max_num_batched_tokens, max_num_seqs=config.max_num_seqs
    )
    scheduler = Scheduler(config, cache)
    tiers = None
    if page_store is not None:
        from trellis_jax.engine.tiers import TierMover

        tiers = TierMover(scheduler, runner, page_store, bytes_per_page=1)
    engine = Engine(
        scheduler,
        runner,
        make_detokenizer=lambda skip: ByteDetokenizer(skip_special_tokens=skip),
        eos_token_ids=(EOS_ID,),
        overlap=overlap,
        tiers=tiers,
    )
    return engine, runner, cache, ByteTokenizer()
