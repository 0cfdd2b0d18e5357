"""The original release's documentation, run as written: its quick start, advanced usage and
visualisation, with only the checkpoint id replaced by the shipped default's folder (the 8B
checkpoint does not exist) and only what the snippets leave undefined supplied (`labels`; the
visualisation gets the pretrained model of the quick start, not the random one of the advanced
usage). Then the rest of the original package's public API, on the tiny model."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from shuffle_model.model.faster_decode_mixer import DEFAULT_HEAD_DIR
from tests.tiny import tiny_backbone, tiny_mixer

QUICK_START = """
import torch
from shufflers import FasterDecodeMixer
from transformers import AutoTokenizer

# Load model and tokenizer
model_id = "{model_id}"
model = FasterDecodeMixer.from_pretrained(model_id)
tokenizer = AutoTokenizer.from_pretrained(model_id)

# Generate text
prompt = "The future of artificial intelligence is"
inputs = tokenizer(prompt, return_tensors="pt")

# Parallel generation with shuffling
with torch.no_grad():
    outputs = model.generate(
        **inputs,
        max_parallel_tokens=30,  # Maximum parallel tokens to generate
        shuffle_strategy="rotary", # Shuffle strategy
        temperature=0.7
    )

generated_text = tokenizer.decode(outputs[0], skip_special_tokens=True)
print(generated_text)
"""

ADVANCED_USAGE = """
from shufflers import ShuffleLM, ShuffleConfig

# Custom configuration
config = ShuffleConfig(
    vocab_size=50257,
    hidden_size=768,
    num_layers=12,
    num_heads=12,
    max_parallel_tokens=50,
    rotary_dim=64,
    shuffle_temperature=0.8
)

# Initialize model
model = ShuffleLM(config)

# Training mode
model.train()
outputs = model(
    input_ids=inputs["input_ids"],
    attention_mask=inputs["attention_mask"],
    labels=labels  # Required only during training
)

loss = outputs.loss
logits = outputs.logits
shuffle_scores = outputs.shuffle_scores  # Position reordering scores
"""

VISUALIZATION = """
from shufflers.utils import visualize_shuffle

# Visualize generation process
visualization = visualize_shuffle(
    model=model,
    tokenizer=tokenizer,
    prompt="Hello, I am",
    save_animation=True,
    output_path="shuffle_animation.gif"
)

# Check step-by-step process
for step, tokens in visualization.steps:
    print(f"Step {step}: {tokens}")
"""


@pytest.mark.default_model
def test_the_original_documentation_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the visualisation writes shuffle_animation.gif here
    scope: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(QUICK_START.format(model_id=DEFAULT_HEAD_DIR), scope)
    quick = printed.getvalue()
    assert quick.startswith("The future of artificial intelligence is")
    outputs = scope["outputs"]
    assert outputs.shape[0] == 1 and outputs.shape[1] > scope["inputs"]["input_ids"].shape[1]
    pretrained, tokenizer = scope["model"], scope["tokenizer"]
    assert pretrained.tokenizer.get_vocab() == tokenizer.get_vocab()  # one id, one vocabulary

    scope["labels"] = scope["inputs"]["input_ids"]  # what the advanced usage leaves undefined
    exec(ADVANCED_USAGE, scope)
    config, trained = scope["config"], scope["model"]
    assert config.num_slots == config.max_parallel_tokens == 50
    assert trained.training and torch.isfinite(scope["loss"]) and scope["loss"].requires_grad
    length = scope["inputs"]["input_ids"].shape[1]
    assert scope["logits"].shape == (1, length, 50257)
    assert scope["shuffle_scores"].shape == (1, length, 50, 50)

    scope["model"] = pretrained  # the visualisation gets the pretrained model
    own_tokenizer = pretrained.tokenizer
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(VISUALIZATION, scope)
    visualization = scope["visualization"]
    lines = printed.getvalue().splitlines()
    assert len(lines) == len(visualization.trace.steps) and lines[0].startswith("Step 0: [")
    assert (tmp_path / "shuffle_animation.gif").read_bytes()[:6] == b"GIF89a"
    assert pretrained.tokenizer is own_tokenizer  # the model is left as it was
    written = "".join(t for _, tokens in visualization.steps for t in tokens)
    assert written == "".join(t.text for s in visualization.trace.steps for t in s.emitted)


# --- the rest of the original package's public API, on the tiny model ---------------------


@pytest.fixture
def model(tokenizer):
    return tiny_mixer(tiny_backbone(seed=0), seed=1, tokenizer=tokenizer)


def test_both_spellings_of_k_work_in_the_config():
    from shufflers import ShuffleConfig

    original = ShuffleConfig(max_parallel_tokens=5)
    assert original.num_slots == original.max_parallel_tokens == 5
    assert original == ShuffleConfig(num_slots=5)
    original.max_parallel_tokens = 3
    assert original.num_slots == 3
    assert "max_parallel_tokens" not in original.to_dict()  # saved once, as num_slots
    with pytest.raises(ValueError, match="both name K"):
        ShuffleConfig(num_slots=3, max_parallel_tokens=5)


def test_max_parallel_tokens_is_a_maximum(model):
    ids = torch.tensor([[9, 8, 7, 9, 8, 7]])
    most, trace = model.generate(ids, max_new_tokens=12, max_parallel_tokens=30, return_trace=True)
    default, default_trace = model.generate(ids, max_new_tokens=12, return_trace=True)
    assert most.tolist() == default.tolist()
    in_effect = model.config.num_slots + 10  # a full head chain beside a full context chain
    assert trace.settings["max_parallel_tokens"] == in_effect
    assert default_trace.settings["max_parallel_tokens"] == in_effect
    for bad in (-1, 2.5, "4", True):
        with pytest.raises(ValueError, match="max_parallel_tokens"):
            model.generate(ids, max_parallel_tokens=bad)


def test_do_sample_has_transformers_meaning(model):
    ids = torch.tensor([[5, 6, 7]])
    greedy = model.generate(ids, max_new_tokens=10)
    # do_sample=False is greedy whatever the temperature
    assert model.generate(ids, max_new_tokens=10, temperature=0.7, do_sample=False).equal(greedy)
    _, trace = model.generate(ids, max_new_tokens=10, do_sample=True, seed=1, return_trace=True)
    assert trace.settings["temperature"] == 1.0  # transformers' default temperature
    sampled = {
        tuple(model.generate(ids, max_new_tokens=10, do_sample=True, top_p=0.9, seed=s)[0].tolist())
        for s in range(4)
    }
    assert len(sampled) > 1  # it samples: different seeds, different texts


def test_the_original_strategy_names(model):
    ids = torch.tensor([[5, 6, 7]])
    for alias, ours in (("fixed", "identity"), ("learned", "hungarian")):
        out, trace = model.generate(
            ids, max_new_tokens=8, shuffle_strategy=alias, keep_threshold=0.0, return_trace=True
        )
        same = model.generate(ids, max_new_tokens=8, shuffle_strategy=ours, keep_threshold=0.0)
        assert trace.settings["shuffle_strategy"] == ours and out.equal(same)
        if alias == "fixed":
            drafted = [s for step in trace.steps for s in step.slots]
            assert drafted and all(s.offset == s.index + 1 for s in drafted)


def test_a_batch_decodes_like_each_row_alone_padded_as_transformers(model):
    rows = [[5, 6, 7, 8], [9, 10]]
    pad = 0
    input_ids = torch.tensor([rows[0], [pad, pad, *rows[1]]])  # left padding
    attention_mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=6)
    alone = [model.generate(torch.tensor([r]), max_new_tokens=6)[0, len(r) :] for r in rows]
    assert out.shape == (2, 4 + max(len(a) for a in alone))
    assert out[:, :4].equal(input_ids)  # each row's input as given, padding included
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    for row, new in zip(out, alone, strict=True):
        assert row[4 : 4 + len(new)].equal(new)
        assert (row[4 + len(new) :] == pad_id).all()
    _, traces = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=6, return_trace=True
    )
    assert [t.prompt_ids for t in traces] == rows


def test_visualize_shuffle_leaves_the_model_as_it_was(tmp_path, tokenizer, monkeypatch):
    from shufflers.utils import visualize_shuffle

    monkeypatch.chdir(tmp_path)

    model = tiny_mixer(tiny_backbone(seed=0), seed=1)  # no tokenizer of its own
    vis = visualize_shuffle(model, tokenizer, "abc", max_new_tokens=10, keep_threshold=0.0)
    assert model.tokenizer is None  # the tokenizer went to the records, not onto the model
    assert vis.gif_path is None and not list(tmp_path.iterdir())  # no animation unasked
    assert vis.trace.output_ids and vis.trace.output_text is not None  # texts from `tokenizer`


def test_shuffle_visualization_offers_the_originals_methods(tmp_path, model, capsys):
    from shufflers.utils import ShuffleVisualization, visualize_shuffle

    vis = visualize_shuffle(model, model.tokenizer, "abc", max_new_tokens=12, keep_threshold=0.0)
    assert isinstance(vis, ShuffleVisualization)
    steps = vis.steps
    assert [s.index for s in steps] == [s.index for s in vis.trace.steps]
    assert sum(len(s.tokens) for s in steps) == vis.trace.totals.new_tokens
    drafting = [s for s in steps if s.scores is not None]
    assert drafting and all(len(s.scores) == len(s.positions) == 4 for s in drafting)

    vis.print_steps()
    printed = capsys.readouterr().out
    assert printed.count("=== Step") == len(steps) and "Keep probabilities" in printed

    stats = vis.get_statistics()
    assert stats["new_tokens"] == vis.trace.totals.new_tokens
    assert stats["backbone_passes"] == vis.trace.totals.backbone_forwards - 1
    assert sum(t["tokens"] for t in stats["step_types"].values()) == stats["new_tokens"]
    data = json.loads(vis.to_json())
    assert len(data["steps"]) == len(steps) and data["statistics"] == json.loads(json.dumps(stats))
    path = vis.save_animation(tmp_path / "run.gif")
    assert path.read_bytes()[:6] == b"GIF89a" and vis.gif_path == path


def test_generate_with_shuffle_and_its_config(model):
    from shufflers.utils import ShuffleGenerationConfig, generate_with_shuffle

    config = ShuffleGenerationConfig(do_sample=False, max_generation_length=8)
    result = generate_with_shuffle(model, model.tokenizer, "abc", config, return_shuffle_info=True)
    ids = model.tokenizer("abc", add_special_tokens=False)["input_ids"]
    plain = model.generate([ids], max_new_tokens=8, max_parallel_tokens=0)[0]
    assert result["generated_text"] == model.tokenizer.decode(plain, skip_special_tokens=True)
    info = result["shuffle_info"]
    assert info["generated_length"] == len(plain) - len(ids) and info["original_length"] == 3
    assert info["trace"].settings["temperature"] == 0.0  # do_sample=False: greedy
    with pytest.raises(ValueError, match="top_k"):
        generate_with_shuffle(model, model.tokenizer, "abc", top_k=5)
    with pytest.raises(ValueError, match="shuffle strategy"):
        ShuffleGenerationConfig(shuffle_strategy="random").validate()


def test_compare_shuffle_strategies_runs_each(model):
    from shufflers.utils import compare_shuffle_strategies

    runs = compare_shuffle_strategies(
        model, model.tokenizer, "abc", max_new_tokens=8, keep_threshold=0.0
    )
    assert set(runs) == {"rotary", "fixed"}
    assert runs["fixed"].trace.settings["shuffle_strategy"] == "identity"
    assert runs["rotary"].trace.output_ids == runs["fixed"].trace.output_ids  # verified, greedy


def test_shuffle_tokenizer_wraps_a_tokenizer(tokenizer):
    from shufflers import ShuffleTokenizer

    wrapped = ShuffleTokenizer(tokenizer)
    assert wrapped("abc")["input_ids"] == tokenizer("abc")["input_ids"]
    assert wrapped.decode([5, 6]) == tokenizer.decode([5, 6]) and wrapped.shuffle_tokens == {}
    encoding = wrapped.tokenize_for_shuffle(["abc", "a"])
    assert encoding["position_ids"].shape == encoding["input_ids"].shape
    assert encoding["shuffle_mask"].all()


def test_shuffle_tokenizer_loads_the_head_folder():
    from shufflers import ShuffleTokenizer

    wrapped = ShuffleTokenizer(str(DEFAULT_HEAD_DIR))
    assert wrapped.chat_template and wrapped("Hello")["input_ids"]


def test_the_original_import_names():
    import shuffle_model
    import shufflers
    import shufflers.utils as utils

    for name in ("FasterDecodeMixer", "ShuffleLM", "ShuffleConfig"):
        assert getattr(shufflers, name) is getattr(shuffle_model, name)
    assert shufflers.visualize_shuffle is utils.visualize_shuffle
    assert set(shuffle_model.__all__) <= set(shufflers.__all__)
    assert shufflers.__version__ == shuffle_model.__version__
