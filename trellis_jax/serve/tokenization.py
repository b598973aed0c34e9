"""POST /tokenize and POST /detokenize, in vLLM's shapes, through the server's own tokenizer.

    /tokenize   {model?, prompt | messages, add_special_tokens?, add_generation_prompt?, chat_template_kwargs?,
                 tools?} -> {"tokens": [...], "count": N, "max_model_len": M}
    /detokenize {model?, tokens} -> {"prompt": text}

With the defaults, /tokenize answers exactly the ids the generation routes would run: a `prompt` is read
as /v1/completions reads a string prompt (special-token text parsed), `messages` as /v1/chat/completions
renders them. `add_special_tokens: false` adds no BOS beyond what the text or template holds. `model`, if
given, must name the served model (404 otherwise). Same auth as the generation routes.
"""

from __future__ import annotations

from fastapi import FastAPI

from trellis_jax.serve.errors import APIError
from trellis_jax.serve.protocol import DetokenizeRequest, TokenizeRequest
from trellis_jax.serve.requests_prep import check_text_fields, encode_messages
from trellis_jax.serve.tool_calls import tools_for_template


def add_tokenization_routes(app: FastAPI, handlers) -> None:
    tokenizer = handlers.engine.tokenizer

    @app.post("/tokenize", responses=handlers.errors(400, 404, 408, 413), dependencies=handlers.guard())
    async def tokenize(body: TokenizeRequest):
        """Token ids of a prompt or a chat, as the generation routes would tokenize it."""
        if body.model is not None:
            handlers.check_model(body.model)
        check_text_fields(body)
        add_bos = None if body.add_special_tokens else False
        if body.messages is not None:
            ids = encode_messages(
                body.messages,
                tokenizer,
                add_generation_prompt=body.add_generation_prompt,
                template_kwargs=body.chat_template_kwargs,
                tools=tools_for_template(body.tools),
                add_bos=add_bos,
                tool_format=handlers.tool_format,
            )
        else:
            ids = list(tokenizer.encode(body.prompt, parse_special=True, add_bos=add_bos))
        return {"tokens": ids, "count": len(ids), "max_model_len": handlers.max_model_len}

    @app.post("/detokenize", responses=handlers.errors(400, 404, 408, 413), dependencies=handlers.guard())
    async def detokenize(body: DetokenizeRequest):
        """The text of token ids (special tokens kept, so tokenize -> detokenize round-trips)."""
        if body.model is not None:
            handlers.check_model(body.model)
        bad = [t for t in body.tokens if t >= tokenizer.vocab_size]
        if bad:
            raise APIError(
                400, f"token id {bad[0]} is outside the vocabulary (size {tokenizer.vocab_size})", param="tokens"
            )
        return {"prompt": tokenizer.decode(body.tokens, skip_special_tokens=False)}
