"""A language-model bot: answers each direct message with a reply streamed from an OpenAI-compatible endpoint.

The reply grows in the conversation as the model writes it (``msg.stream_reply()``); the others see it
grow, and history keeps the final text. Any server that speaks ``POST /v1/chat/completions`` with
``"stream": true`` (server-sent ``data:`` lines) works: OpenAI, a local llama.cpp or vLLM server, Ollama's
OpenAI endpoint...

With ``im server up --demo`` running::

    im register llm
    IM_USERNAME=llm IM_PASSWORD=... LLM_API_KEY=sk-... python examples/llm_bot.py

then ``im --profile alice friends add llm`` and ``im --profile alice send llm "a haiku about tea"``
(``im --profile alice listen`` shows the answer). Settings, from the environment:

- ``LLM_BASE_URL``: the API's base, default ``https://api.openai.com/v1`` (a local server:
  ``http://127.0.0.1:8000/v1``);
- ``LLM_API_KEY``: sent as a bearer token (leave it unset for a local server without keys);
- ``LLM_MODEL``: default ``gpt-4o-mini``;
- ``LLM_SYSTEM_PROMPT``: an optional first instruction;
- ``LLM_MAX_CHARS``: where a reply is cut (the server refuses texts past its limit, 4,000 by default).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator

import httpx

from im_sdk.bot import Bot, FriendRequest, MessageEvent, direct

log = logging.getLogger("llm_bot")

BASE_URL = os.environ.get("LLM_BASE_URL", "https://api.openai.com/v1").rstrip("/")
API_KEY = os.environ.get("LLM_API_KEY", "")
MODEL = os.environ.get("LLM_MODEL", "gpt-4o-mini")
SYSTEM_PROMPT = os.environ.get("LLM_SYSTEM_PROMPT", "")
MAX_CHARS = int(os.environ.get("LLM_MAX_CHARS", "4000"))

bot = Bot.from_env(device="llm-bot")


async def complete(prompt: str) -> AsyncIterator[str]:
    """The model's answer to ``prompt``, piece by piece, as the endpoint streams it."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] if SYSTEM_PROMPT else []
    messages.append({"role": "user", "content": prompt})
    headers = {"authorization": f"Bearer {API_KEY}"} if API_KEY else {}
    body = {"model": MODEL, "messages": messages, "stream": True}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as http,
        http.stream("POST", f"{BASE_URL}/chat/completions", json=body, headers=headers) as response,
    ):
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank lines between events, comments, other fields
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                return
            for choice in json.loads(data).get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece


@bot.on_event(FriendRequest)
async def befriend(event: FriendRequest) -> None:
    await event.accept()


@bot.on_message(direct)
async def answer(msg: MessageEvent) -> None:
    if not msg.text:
        return
    try:
        # Leaving the block finishes the message; an error on the way marks it cut short, keeping its text.
        async with msg.stream_reply() as stream:
            async for piece in complete(msg.text):
                room = MAX_CHARS - len(stream.text)
                await stream.append(piece[:room])
                if len(piece) >= room:
                    break
            if stream.message is None:
                await stream.append("(the model said nothing)")
    except httpx.HTTPError as exc:
        log.warning("the model did not answer: %s", exc)
        if stream.message is None:  # nothing was shown yet: say why
            await msg.reply("sorry, the language model is not reachable right now")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    bot.run()
