"""The scheduler's view of one sequence: its tokens, how far its KV is computed, and its pages.

Page ownership of a running request (page_size S, cached/computed positions):

    page_ids:  [ tree pages (locked via `handle`) | private pages (owned by this request) ]
               [0 .............. num_tree_pages) [num_tree_pages ........ len(page_ids))
    positions: pages cover 0 .. len(page_ids)*S - 1; KV is valid for positions < num_computed.

Right after admission the first private page may start with positions copied from a tree page (a
sibling branch's, or an earlier request's cached last page: `page_copy`, kv_manager.py); the first step
copies them, and until its commit the source stays locked (`copy_lock`). A waiting request holds no
pages and no lock. `token_ids` = prompt + generated tokens; the last generated token has no KV yet (it
is the next step's input). In an overlapped loop `token_ids` may end with `num_pending` PENDING_TOKEN
placeholders: tokens dispatched steps sampled that the host has not read back yet (Scheduler.resolve fills
them in order); no placeholder ever enters the radix tree or a page hash.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from trellis_jax.step_plan import SampledToken, SamplingArrays


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class RequestEvent:
    """What commit reports per request: a new token (or None) and the finish reason (or None)."""

    request_id: str
    token: SampledToken | None
    finish_reason: str | None = None
    num_cached_tokens: int = 0  # prompt tokens found in the tree when the request was first admitted


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingArrays
    max_tokens: int | None
    stop_token_ids: frozenset[int]
    namespace: str | None
    priority: int
    arrival: int
    token_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: str | None = None
    num_computed: int = 0
    page_ids: list[int] = field(default_factory=list)
    num_tree_pages: int = 0
    handle: object = None
    num_cached_tokens: int | None = None  # prompt tokens found in the tree at first admission
    num_preemptions: int = 0
    page_hashes: list[int] = field(default_factory=list)
    queued_at: float = field(default_factory=time.monotonic)  # when add_request queued it (queue-time metric)
    lookup: object = None  # the scheduler's NgramIndex over token_ids (prompt-lookup drafts), made on first use
    page_copy: tuple[int, int] | None = None  # (tree page, own page) to copy before this step computes (see kv_manager)
    copy_lock: object = None  # the tree handle locked until that copy has run
    num_pending: int = 0  # trailing PENDING_TOKEN placeholders in token_ids (overlapped loop; Scheduler.resolve)

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids) :]

    @property
    def num_known_tokens(self) -> int:
        """Leading tokens whose values the host knows (all but the pending placeholders)."""
        return len(self.token_ids) - self.num_pending

    @property
    def num_to_compute(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def is_prefilling(self) -> bool:
        """True until the KV of every token but the last is computed (the last is the decode input)."""
        return self.num_to_compute > 1

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED
