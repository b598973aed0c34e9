"""Helpers for the ablation tests: tiny traces written by hand."""

from trellis_jax.ablate.trace import Trace, TraceRequest


def single_page_trace(keys: str, page_size: int = 2) -> Trace:
    """One request per letter; each references exactly one tree page (the letter's), as in paging.

    The prompt is the page (page_size tokens, all equal to the letter's code) plus one unique token:
    the engine matches prompt[:-1] = the page, computes the last token on a private partial page, and
    inserts the page. With a pool of C pages the tree then behaves as a paging cache of C - 1 pages.
    """
    requests = []
    for i, key in enumerate(keys):
        page = [ord(key)] * page_size
        requests.append(TraceRequest(f"r{i}", page + [1000 + i], []))
    return Trace(requests, name=f"pages-{keys}")


def trace_of(*prompts, outputs=None, namespaces=None) -> Trace:
    outputs = outputs or [[] for _ in prompts]
    namespaces = namespaces or ["" for _ in prompts]
    return Trace(
        [TraceRequest(f"r{i}", list(p), list(o), ns) for i, (p, o, ns) in enumerate(zip(prompts, outputs, namespaces))]
    )
