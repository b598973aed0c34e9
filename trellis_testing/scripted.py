"""A fake runner that says what the test scripts: outputs controlled to the byte, for testing what the
server makes of a model's text (tool calls, ...) end to end through the real engine and HTTP layer.

`ScriptedRunner(num_pages, page_size, reply)`: a `FakeRunner` whose completion of a prompt is the UTF-8
bytes of `reply(prompt_text)` (the prompt decoded by `ByteTokenizer`, special tokens shown), then EOS.
`say_after(marker)` is a reply that repeats what the last message says after `marker`
(`"SAY:<tool_call>..."` -> the model writes `<tool_call>...`).
"""

from __future__ import annotations

from collections.abc import Callable

from trellis_jax.step_plan import SampledToken, SequenceWork
from trellis_testing.fakes import EOS_ID, ByteTokenizer, FakeRunner


class ScriptedRunner(FakeRunner):
    def __init__(self, num_pages: int, page_size: int, reply: Callable[[str], str], **options) -> None:
        super().__init__(num_pages, page_size, mode="increment", **options)
        self.reply = reply
        self._prompt_len: dict[str, int] = {}  # request id -> its prompt length (kv_len at its first sample)
        self._tokenizer = ByteTokenizer()

    def _sample(self, work: SequenceWork) -> SampledToken:
        start = self._prompt_len.setdefault(work.request_id, work.kv_len)
        prompt = [self.kv[self._slot(work, pos)] for pos in range(start)]
        script = self.reply(self._tokenizer.decode(prompt, skip_special_tokens=False)).encode()
        at = work.kv_len - start
        token = script[at] if at < len(script) else EOS_ID
        top = [(token, -0.5)][: work.sampling.num_logprobs]
        return SampledToken(token, -0.5, top)


def say_after(marker: str = "SAY:") -> Callable[[str], str]:
    """A reply: the text after the last `marker` in the prompt, up to the end of that message ("</s>")."""

    def reply(prompt: str) -> str:
        _, _, said = prompt.rpartition(marker)
        return said.split("</s>", 1)[0]

    return reply
