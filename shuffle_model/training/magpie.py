"""Prompts the backbone writes itself (Magpie, Xu et al. 2024): sample the user turn from the
chat template's user prefix, keep the turns that read as a question or a request, answer them.

The prefix is the template up to the user's text (`<|im_start|>system\\n...<|im_end|>\\n
<|im_start|>user\\n` for SmolLM2); a system message chosen from a few (the template's own, or
one that names a field) spreads the topics. A sampled turn is kept when it ended by itself
(EOS within its budget), is neither too short nor too long, does not repeat itself, reads as a
question or request, does not write a second turn of the conversation, is mostly plain text,
and is no near-duplicate of a turn kept before (word 3-gram overlap).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..model.chat import PLACEHOLDER

SYSTEM_PROMPTS = [
    None,  # the chat template's own system message
    None,
    None,
    "You are a helpful assistant. Users ask you about science and nature.",
    "You are a helpful assistant. Users ask you for help with programming.",
    "You are a helpful assistant. Users ask you about history, culture and society.",
    "You are a helpful assistant. Users ask you to write or edit texts.",
    "You are a helpful assistant. Users ask you maths and logic questions.",
    "You are a helpful assistant. Users ask you for everyday advice: health, food, travel, money.",
    "You are a helpful assistant. Users ask you to summarise, translate or explain short texts.",
    "You are a helpful assistant. Users ask you to play a role or imagine a situation.",
]
REQUEST_WORDS = re.compile(
    r"\b(can you|could you|would you|will you|please|help me|i need|i want|i'd like|i would like|"
    r"write|explain|describe|give|list|tell me|show me|create|make|suggest|recommend|summari[sz]e|"
    r"translate|compare|calculate|solve|find|plan|design|generate|draft|rewrite|edit|how|what|"
    r"why|when|where|which|who)\b",
    re.IGNORECASE,
)
TURN_MARKERS = re.compile(r"<\|im_|^\s*(user|assistant|you|me|i|q|a)\s*:", re.IGNORECASE | re.M)


def user_prefix(tokenizer, system: str | None = None) -> list[int]:
    """Token ids of the chat template up to where the user's text starts."""
    messages = [{"role": "user", "content": PLACEHOLDER}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(rendered.split(PLACEHOLDER)[0], add_special_tokens=False)["input_ids"]


def repeated_share(words: list[str], n: int = 3) -> float:
    """Share of the word n-grams that occurred earlier in the same text."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 0.0 if not grams else 1 - len(set(grams)) / len(grams)


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


@dataclass
class TurnFilter:
    """Decides which sampled user turns to keep; remembers the kept ones (near-duplicates)."""

    min_words: int = 4  # fewer words: too short to be a request
    max_words: int = 120  # more: a rambling turn, not a request
    max_repeated: float = 0.2  # share of repeated word 3-grams allowed
    max_overlap: float = 0.6  # shingle overlap with a kept turn that makes a near-duplicate
    max_non_ascii: float = 0.1  # share of non-ASCII characters allowed
    kept: list[set] = field(default_factory=list)  # shingles of the kept turns
    index: dict = field(default_factory=dict)  # shingle -> indices of kept turns holding it
    rejected: dict = field(default_factory=dict)  # reason -> count

    def reason(self, text: str, ended: bool) -> str | None:
        """Why a turn is rejected, or None when it is kept (and then remembered)."""
        text = text.strip()
        words = text.split()
        if not ended:
            return "unfinished"
        if len(words) < self.min_words:
            return "too short"
        if len(words) > self.max_words:
            return "too long"
        if repeated_share([w.lower() for w in words]) > self.max_repeated:
            return "repetitive"
        if sum(not c.isascii() for c in text) > self.max_non_ascii * len(text):
            return "not plain text"
        if TURN_MARKERS.search(text):
            return "writes another turn"
        if "?" not in text and not REQUEST_WORDS.search(text):
            return "no question or request"
        mine = shingles(text)
        counts: dict[int, int] = {}
        for gram in mine:
            for i in self.index.get(gram, ()):
                counts[i] = counts.get(i, 0) + 1
        for i, shared in counts.items():
            if shared / min(len(mine), len(self.kept[i])) > self.max_overlap:
                return "near-duplicate"
        for gram in mine:
            self.index.setdefault(gram, []).append(len(self.kept))
        self.kept.append(mine)
        return None

    def keep(self, text: str, ended: bool) -> bool:
        why = self.reason(text, ended)
        if why is not None:
            self.rejected[why] = self.rejected.get(why, 0) + 1
        return why is None
