"""End to end: a head trained with the set loss on text its backbone has memorised drafts
tokens the backbone accepts, several per backbone pass."""

from __future__ import annotations

import pytest
import torch

from shuffle_model import FasterDecodeMixer, train_step
from tests.tiny import tiny_backbone, tiny_mixer, tiny_shuffle_lm

K = 4
SEQUENCES, LENGTH = 12, 40


def corpus(seed: int = 0) -> torch.Tensor:
    """Random token sequences (ids 3..63, so no EOS) that a tiny model can memorise."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 64, (SEQUENCES, LENGTH), generator=generator)


def memorise(model, data: torch.Tensor, steps: int = 250) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(data, labels=data).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


@pytest.fixture(scope="module")
def memorised_backbone():
    backbone = tiny_backbone(seed=0, layers=2, hidden=64, dtype=torch.float32).train()
    final_loss = memorise(backbone, corpus())
    assert final_loss < 0.1, f"the tiny backbone did not memorise its corpus ({final_loss})"
    return backbone.eval()


def train_head(model, data: torch.Tensor, steps: int) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    return [train_step(model, {"input_ids": data}, optimizer)["loss"] for _ in range(steps)]


def tokens_per_pass(model, data: torch.Tensor, **settings) -> float:
    tokens = forwards = 0
    for row in data:
        out, trace = model.generate(row[None, :6], max_new_tokens=30, return_trace=True, **settings)
        tokens += trace.totals.new_tokens
        forwards += trace.totals.backbone_forwards
    return tokens / forwards


@pytest.mark.parametrize("assignment", ["hungarian", "fixed"])
def test_trained_head_drafts_accepted_tokens(memorised_backbone, assignment):
    data = corpus()
    torch.manual_seed(0)
    model = FasterDecodeMixer.from_backbone(
        memorised_backbone,
        num_slots=K,
        mixer_token_hidden=16,
        assignment=assignment,
        lambda_prior=0.1,
    )
    before = tokens_per_pass(model, data[:4], keep_threshold=0.5)
    losses = train_head(model, data, steps=150)
    model.eval()
    assert losses[-1] < 0.3 * losses[0], f"loss did not fall: {losses[0]:.2f} -> {losses[-1]:.2f}"
    after = tokens_per_pass(model, data, keep_threshold=0.5)
    assert after >= 2.5, f"tokens per pass {before:.2f} -> {after:.2f}"
    for row in data[:4]:  # and verification keeps it lossless
        prompt = row[None, :6]
        expected = memorised_backbone.generate(prompt, max_new_tokens=30, do_sample=False)
        assert model.generate(prompt, max_new_tokens=30).tolist() == expected.tolist()


def test_shuffle_lm_trains_trunk_and_head_together():
    data = corpus(seed=1)
    model = tiny_shuffle_lm(seed=0).float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = [train_step(model, {"input_ids": data}, optimizer) for _ in range(250)]
    model.eval()
    assert history[-1]["lm_loss"] < 0.1 * history[0]["lm_loss"]
    assert history[-1]["set_loss"] < 0.3 * history[0]["set_loss"]
    assert tokens_per_pass(model, data, keep_threshold=0.5) >= 2.5


def test_training_records_its_command_line_as_json():
    """Checkpoints store the training arguments in the head's config: paths become text."""
    import json
    from pathlib import Path

    from shuffle_model.cli.train import _jsonable

    args = {"data": [Path("cache/a"), Path("cache/b")], "out": Path("runs/x"), "lr": 1e-3}
    assert json.loads(json.dumps({k: _jsonable(v) for k, v in args.items()})) == {
        "data": ["cache/a", "cache/b"],
        "out": "runs/x",
        "lr": 1e-3,
    }


def test_train_command_logs_the_shuffle_checkpoints_and_resumes(tmp_path):
    """`python -m shuffle_model.cli.train` end to end on a tiny local backbone: held-out metrics at
    every evaluation (the shuffle's variety included), a loadable head, a resume that continues
    the step count and the training clock."""
    import json

    from shuffle_model import FasterDecodeMixer
    from shuffle_model.cli import train
    from tests.tiny import tiny_training_folder

    backbone_dir, data = tiny_training_folder(tmp_path)
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--backbone", str(backbone_dir)]
    common += ["--slots", "4", "--draft-vocab", "0", "--batch-size", "16", "--heldout-every", "4"]
    common += ["--eval-every", "2", "--warmup", "1", "--lambda-prior", "0"]
    train.main([*common, "--steps", "4"])
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [2, 4]
    for metrics in history:
        assert len(metrics["offset_accuracy"]) == 4
        assert 0.0 <= metrics["shuffle_varies"] <= 1.0
        assert metrics["tokens_per_pass/rotary@0.3"] >= 1.0
    train.main([*common, "--steps", "6", "--resume"])
    resumed = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in resumed] == [2, 4, 6]
    assert resumed[2]["minutes"] >= resumed[1]["minutes"]  # the clock carries over
    head = FasterDecodeMixer.from_pretrained(out / "final", device="cpu")
    assert head.config.extra["training"]["lambda_prior"] == 0
    assert head.config.extra["history"] == resumed


def test_training_and_its_heldout_loss_use_the_one_objective_of_the_config():
    """The training objective on cached positions and the held-out loss are the model's own
    set loss with the config's weights: a keep weight of 0 drops the keep term from both."""
    from shuffle_model.training.features import MAX_OFFSETS, Features
    from shuffle_model.training.trainer import HeadObjective, heldout_metrics

    generator = torch.Generator().manual_seed(0)
    n, k = 24, 4
    targets = torch.randint(3, 64, (n, MAX_OFFSETS), generator=generator)
    targets[::5, 2:] = -100  # answers that end early
    features = Features(
        hidden=torch.randn(n, 32, generator=generator),
        anchors=torch.randint(3, 64, (n,), generator=generator),
        targets=targets,
        example=torch.arange(n),
        greedy=torch.ones(n, dtype=torch.bool),
    )
    losses = {}
    for keep_weight in (0.5, 0.0):
        model = tiny_mixer(tiny_backbone(dtype=torch.float32), lambda_keep=keep_weight)
        loss, result = HeadObjective(model)(features.hidden, features.anchors, features.targets)
        draft = model.draft(features.hidden, features.anchors)
        direct = model.set_loss(
            draft.logits, draft.shuffle_scores, draft.keep_logits, features.targets[:, :k]
        )
        torch.testing.assert_close(loss, direct.loss)
        expected = result.token_loss + result.position_loss + keep_weight * result.keep_loss
        torch.testing.assert_close(loss, expected)
        metrics = heldout_metrics(model, features, strategies=("rotary",), thresholds=(0.5,))
        assert metrics["heldout_loss"] == pytest.approx(direct.loss.item(), rel=1e-5)
        losses[keep_weight] = metrics["heldout_loss"]
    assert losses[0.0] < losses[0.5]  # the same head, the keep term left out
