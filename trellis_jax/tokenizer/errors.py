"""Errors raised by the tokenizer package.

Both derive from ValueError so callers that only care about "bad input" can catch one type; the
message always names the file or the field that is wrong and what would fix it.
"""


class TokenizerError(ValueError):
    """A tokenizer could not be built or used: unsupported vocabulary type, missing file or field, bad id."""


class ChatTemplateError(ValueError):
    """A chat template is missing, fails to render, or the message list is malformed."""
