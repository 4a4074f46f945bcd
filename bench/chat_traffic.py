"""A day's chat as a gateway in front of the model server would log it: general requests,
none of any suite's, answered by the model the server serves, written as OpenAI chat-format
JSONL for `reflexa traffic import`. What a night rehearses (trainers/rehearsal.py) comes
from such prompts; it asks them afresh, so the logged answers only make the log real.

The topics and the forms are not the frozen suite's (evals/builtin/capabilities.py: its ten
topics and its instructions of case, length, keywords, lists, quotes), and the contamination
guard keeps any prompt that is one of its items, or a duplicate, out of training anyway.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

TOPICS = ("volcanoes", "chess", "bread", "honey", "penguins", "bridges", "deserts", "clocks",
          "football", "the internet", "elephants", "mountains", "tea", "painting", "airplanes",
          "recycling", "the stars", "friendship", "cheese", "rivers", "dinosaurs", "pizza",
          "robots", "forests", "the Olympics", "bees", "castles", "photography", "tigers",
          "submarines", "chocolate", "islands", "dragons", "the human heart", "kites",
          "lighthouses", "origami", "sharks", "tomatoes", "umbrellas")  # fmt: skip
FORMS = (
    "What is interesting about {t}?",
    "Explain {t} to a ten-year-old.",
    "Write a short poem about {t}.",
    "Give me three questions I could ask an expert on {t}.",
    "Summarise the history of {t} in a few sentences.",
    "What are the pros and cons of {t}?",
    "Write a tweet about {t}.",
    "Describe {t} as a JSON object with a few fields.",
    "Write a Python function that returns a fun fact about {t}.",
    "Tell me a joke about {t}.",
)


def chat_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` of the pool's 400 prompts, in an order `seed` fixes."""
    prompts = [form.format(t=topic) for topic in TOPICS for form in FORMS]
    random.Random(seed).shuffle(prompts)
    return prompts[:count]


def chat_log(url: str, model: str, prompts: list[str], path: Path, api_key: str = "EMPTY") -> Path:
    """Each prompt answered by `model` at `url` (the server's OpenAI API), 8 at a time, as a
    gateway's JSONL log at `path`."""

    def answer(http: httpx.Client, prompt: str) -> dict[str, object]:
        messages = [{"role": "user", "content": prompt}]
        body = {"model": model, "messages": messages, "max_tokens": 256, "temperature": 0.7}
        reply = http.post(f"{url}/v1/chat/completions", json=body)
        reply.raise_for_status()
        text = reply.json()["choices"][0]["message"]["content"] or ""
        return {"messages": messages, "response": text, "metadata": {"source": "chat"}}

    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(timeout=600, headers=headers) as http, ThreadPoolExecutor(8) as pool:
        lines = list(pool.map(lambda p: answer(http, p), prompts))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
