"""The draft sources of one generation: those `draft_source` names, then any extra ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .corpus import CORPUS, CorpusProposer
from .proposers import CONTEXT, HEAD, ContextProposer, DraftSource, HeadProposer
from .sampling import TokenSampler

SOURCE_CLASSES = {  # draft_source's names
    HEAD: HeadProposer,
    CONTEXT: ContextProposer,
    CORPUS: CorpusProposer,
}


def make_sources(
    model, settings, sampler: TokenSampler, *, record: bool, extra: Iterable[Callable] = ()
) -> list[DraftSource]:
    """The sources `settings.draft_source` names, then one from each of `extra` (a class or
    a factory called with no arguments), fresh for one generation."""
    extra = list(extra)
    if extra and not settings.verify:
        raise ValueError(
            "pure parallel mode (verify=False) emits the head's drafts unchecked: "
            "extra_sources need verify=True"
        )
    sources = [
        SOURCE_CLASSES[name].from_settings(model, settings, sampler, record=record)
        for name in settings.sources
    ]
    sources += [make() for make in extra]
    names = [source.name for source in sources]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"draft sources need distinct, non-empty names; got {names}")
    return sources


def check_sources(model, settings) -> None:
    """Raise ValueError, before the generation starts, where a source `settings.draft_source`
    names cannot draft for `model` (each source's `check`)."""
    for name in settings.sources:
        SOURCE_CLASSES[name].check(model)
