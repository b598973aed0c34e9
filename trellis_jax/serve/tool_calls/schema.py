"""Request-body models of the tool fields (`tools`, `tool_choice`): a malformed tool is a 400 whose `param`
names the field (`tools[0].function.name`), as pydantic reports it through serve/errors.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function names


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")  # anything else goes to the chat template as given
    name: Annotated[StrictStr, Field(pattern=FUNCTION_NAME)]
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema of the arguments object
    strict: StrictBool | None = None


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: Annotated[StrictStr, Field(pattern=FUNCTION_NAME)]


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


def tools_for_template(tools: list[ToolSpec] | None) -> list[dict] | None:
    """The tools as the chat template (and the model) should see them: as the client sent them."""
    return [t.model_dump(exclude_none=True) for t in tools] if tools else None
