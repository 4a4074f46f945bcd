"""A scripted chat model: it replies with the given texts, in order, and remembers the
messages it was sent. An Exception in the script is raised instead of replying; a function
is called (a fault injected mid-episode, say) and its text is the reply."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import PrivateAttr


class ScriptedChatModel(BaseChatModel):
    script: list[str | Exception | Callable[[], str]]
    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _kwargs: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def calls(self) -> list[list[BaseMessage]]:
        return self._calls

    @property
    def call_kwargs(self) -> list[dict[str, Any]]:
        """What each non-streamed call was given besides the messages (n, extra_body)."""
        return self._kwargs

    def _next(self, messages: Sequence[BaseMessage]) -> str:
        self._calls.append(list(messages))
        if not self.script:
            raise AssertionError("the scripted model ran out of replies")
        reply = self.script.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply if isinstance(reply, str) else reply()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._kwargs.append(kwargs)
        generations = []
        for _ in range(kwargs.get("n") or 1):  # n: that many replies, in script order
            text = self._next(messages)
            usage = {"input_tokens": 10, "output_tokens": len(text.split()), "total_tokens": 0}
            message = AIMessage(content=text, usage_metadata=usage)  # type: ignore[arg-type]
            generations.append(ChatGeneration(message=message))
        return ChatResult(generations=generations)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        words = self._next(messages).split(" ")
        for i, word in enumerate(words):
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(content=word + " " * (i < len(words) - 1))
            )
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Runnable[Any, Any]:
        def parse(prompt: Any) -> Any:
            messages = self._convert_input(prompt).to_messages()
            return schema(**json.loads(self._next(messages)))

        return RunnableLambda(parse)
