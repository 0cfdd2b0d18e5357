"""Every command the documentation shows runs, and every import in the packages resolves.

Each `python -m ...` command in README.md and docs/*.md is parsed out of the markdown and run
(in-process, through the module's main(argv)) on a tiny random model with the smallest sizes,
together with more runs so that every option the command's --help offers runs at least once.
Whatever the commands write lands in a temporary folder: the "default" heads are tiny heads
there, the caches live there, and every output option points there. A command the documents
show that has no entry in SMALL below fails the test, and so does an option that the command
no longer has (its documented arguments are parsed by the command's own parser) or an option
of the command that no run exercises.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import io
import json
import os
import pkgutil
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# --- the commands the documents show --------------------------------------------------------------

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LAUNCH = re.compile(r"(?<![\w./-])(?:python3?|accelerate launch)\s+-m\s+\S")
COMMENT = re.compile(r"\s+#.*$")
TEMPLATE = re.compile(r"<(\w+)>")


def fenced_lines(block: list[str]) -> list[str]:
    """A fenced block's lines (backslash continuations joined); where a line holds inline code
    spans (a layout listing), those spans instead."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(block))
    lines = []
    for line in joined.splitlines():
        lines += SPAN.findall(line) or [line]
    return lines


def code_snippets(markdown: str) -> list[str]:
    """The code a markdown text shows: the lines of its fenced blocks (Python blocks aside) and
    its inline code spans (which may wrap), whitespace collapsed."""
    snippets, prose, block = [], [], []
    fence = language = None
    for line in markdown.splitlines():
        opening = FENCE.match(line)
        if fence is None and opening:
            fence, language, block = opening.group(1), opening.group(2).lower(), []
        elif fence is not None and line.strip().startswith(fence):
            if language not in ("python", "py", "pycon"):
                snippets += fenced_lines(block)
            fence = None
        elif fence is not None:
            block.append(line)
        else:
            prose.append(line)
            continue
        prose.append("")  # fenced lines are no prose: spans never reach into a block
    snippets += SPAN.findall("\n".join(prose))
    return [" ".join(snippet.split()) for snippet in snippets]


def cli_modules() -> list[str]:
    import shuffle_model.cli

    return sorted(m.name for m in pkgutil.iter_modules(shuffle_model.cli.__path__))


def documented_commands() -> dict[str, str]:
    """Each `python -m` (or `accelerate launch -m`) command of the documents, as shown (comments
    cut, whitespace collapsed) -> the document showing it first. `shuffle_model.cli.<name>`
    stands for every module of shuffle_model/cli."""
    found: dict[str, str] = {}
    for document in DOCUMENTS:
        for snippet in code_snippets(document.read_text()):
            launch = LAUNCH.search(snippet)
            if launch is None:
                continue
            command = COMMENT.sub("", snippet[launch.start() :]).strip()
            commands = [command]
            if TEMPLATE.search(command):
                commands = [TEMPLATE.sub(name, command) for name in cli_modules()]
            for command in commands:
                found.setdefault(command, document.name)
    return found


@dataclass(frozen=True)
class Command:
    module: str  # what `python -m` runs
    argv: tuple[str, ...]  # its arguments, [optional] brackets dropped
    optional: tuple[str, ...] = ()  # the arguments shown in [brackets]


def parse_command(command: str) -> Command:
    tokens = shlex.split(command)
    at = tokens.index("-m")
    argv, optional = [], []
    for token in tokens[at + 2 :]:
        if token.startswith("[") and token.endswith("]"):
            optional.append(token[1:-1])
        argv.append(token.strip("[]"))
    return Command(tokens[at + 1], tuple(argv), tuple(optional))


# --- how each documented command runs small -------------------------------------------------------

# Paths the documents show -> where the same thing lies in the tiny world (inputs made by an
# earlier run, or outputs kept in the temporary folder). The rest (the example traces) are read.
PATHS = {
    "DIR": "{head_copy}",  # calibrate --head DIR: calibration.json lands beside this copy
    "data/distill": "{data}",
    "runs/head": "{runs}/head",
    "runs/head/final": "{runs}/head/final",
    "assets/default_head": "{head}",
    "out.gif": "{tmp}/out.gif",
    "bench/results/2026-11-28-cpu.json": "{bench}/tiny.json",  # answers of the tiny backbone
}

TINY_DISTILL = {"--out": "{data}", "--backbone": "{backbone}", "--rows": "3", "--shard-size": "3"}
TINY_DISTILL |= {"--max-new-tokens": "12", "--magpie-tokens": "8", "--exclude": "{questions}"}
TINY_TRAIN = {"--data": "{data}", "--backbone": "{backbone}", "--slots": "4", "--draft-vocab": "16"}
TINY_TRAIN |= {"--batch-size": "8", "--heldout-every": "3", "--warmup": "1", "--eval-every": "2"}
TINY_BENCH = {"--limit": "1", "--categories": ["qa"], "--max-new-tokens": "4", "--out": "{bench}"}

# Every documented command -> the options that make it small (replacing the documented value, or
# added; a list for several values, None for a flag). None: a module (or one of its subcommands)
# named without arguments, whose runs are the others. A command the documents show must have an
# entry here.
SMALL: dict[str, dict | None] = {
    "python -m shuffle_model": None,
    "python -m shuffle_model generate": None,
    "python -m shuffle_model cost": None,
    "python -m shuffle_model cost [--remeasure]": {},  # the default head: a tiny one
    "python -m shuffle_model cost --remeasure": {},
    "python -m shuffle_model.cli.generate": None,
    "python -m shuffle_model.cli.distill": None,
    "python -m shuffle_model.cli.distill --answers 8000 --seed 2": {
        **TINY_DISTILL,
        "--answers": "6",
    },
    "python -m shuffle_model.cli.corpus": {
        "--data": "{data}",
        "--out": "{tmp}/corpus",
        "--heldout-every": "2",
        "--calibration-answers": "3",
    },
    "python -m shuffle_model.cli.train": None,
    "python -m shuffle_model.cli.train --out runs/head --steps 3000 --lambda-prior 0": {
        **TINY_TRAIN,
        "--steps": "2",
    },
    # accelerate runs the same main in each process; here one process continues the run above
    "accelerate launch -m shuffle_model.cli.train --out runs/head": {
        **TINY_TRAIN,
        "--steps": "3",
        "--resume": None,
    },
    "python -m shuffle_model.bench": None,
    "python -m shuffle_model.bench --limit 10": {**TINY_BENCH, "--name": "tiny"},
    "python -m shuffle_model.bench --limit 2 --methods shuffle-rotary prompt_lookup "
    "--device cuda": {
        **TINY_BENCH,
        "--device": "cuda" if torch.cuda.is_available() else "cpu",
        "--dtype": "float32",
        "--questions": "{questions}",
        "--categories": ["qa", "math"],
        "--head": "{head}",
        "--fixed-head": "{fixed_head}",
        "--tag": "doc",
        "--threads": "1",
        "--max-minutes": "10",
    },
    "python -m shuffle_model.bench.curves --dtype bfloat16": {
        "--dtype": "float32",
        "--rounds": "1",
    },
    "python -m shuffle_model.bench.dtypes bench/results/2026-12-05-cpu-bf16.json "
    "bench/results/2026-12-05-cpu-fp32.json": {
        "--method": "ordinary",
        "--out": "{tmp}/dtypes.json",
    },
    "python -m shuffle_model.cli.calibrate": None,
    "python -m shuffle_model.cli.calibrate --head DIR --data data/distill": {
        "--heldout-every": "1",
        "--limit": "10",
        # one slot per offset: a random head's rotary map may leave offset 1 to no slot
        "--strategy": "hungarian",
    },
    "python -m shuffle_model.cli.evaluate": None,
    "python -m shuffle_model.cli.evaluate runs/head/final assets/default_head --handwritten": {
        "--prompts": "1",
        "--max-new-tokens": "4",
        "--strategies": ["rotary"],
        "--json": "{tmp}/evaluate.json",
    },
    "python -m shuffle_model.cli.evaluate runs/head/final --prompts 0 --strategies rotary "
    "--teacher-forced bench/results/2026-11-28-cpu.json": {"--json": "{tmp}/replay.json"},
    "python -m shuffle_model.cli.lossless": None,
    "python -m shuffle_model.cli.lossless --dtype bfloat16 --prompts 12 --handwritten "
    "--blocks 2 7 16": {
        "--prompts": "1",
        "--max-new-tokens": "4",
        "--blocks": ["2"],
        "--device": "cpu",
        "--json": "{tmp}/lossless.json",
    },
    "python -m viz assets/examples/01-rotary-verified-greedy.json --gif out.gif": {
        "--max-frames": "4",
        "--width": "320",
        "--fps": "2",
        "--html": "{tmp}/overview.html",
    },
    'python -m viz --prompt "..." --gif out.gif': {
        "--max-new-tokens": "4",
        "--strategy": "identity",
        "--no-verify": None,
        "--max-frames": "3",
        "--width": "240",
    },
}

# More runs, so that every option of every documented command runs at least once.
MORE: dict[str, list[list[str]]] = {
    "shuffle_model.cli.distill": [
        ["--out", "{data}", "--backbone", "{backbone}", "--answers", "9", "--seed", "3"]
        + ["--tag", "more", "--mix", "templates=0.5,passages=0.5", "--shard-size", "3"]
        + ["--max-new-tokens", "12", "--max-prompt-tokens", "400", "--sampled-fraction", "0.5"]
        + ["--temperature", "0.8", "--top-p", "0.8", "--magpie-temperature", "0.9"]
        + ["--magpie-top-p", "0.9", "--magpie-tokens", "8", "--rows", "3", "--refill-at", "1"]
        + ["--threads", "1", "--exclude", "{questions}", "--device", "cpu", "--dtype", "float32"],
        ["--out", "{data}", "--backbone", "{backbone}", "--answers", "10", "--seed", "4"]
        + ["--mix", "templates=1", "--max-new-tokens", "8", "--rows", "2", "--no-exclude"],
    ],
    "shuffle_model.cli.train": [
        ["--data", "{data}", "--backbone", "{backbone}", "--out", "{runs}/warm"]
        + ["--init-from", "{runs}/head/final", "--early-layer", "1", "--name", "warm start"]
        + ["--assignment", "fixed", "--slots", "4", "--draft-vocab", "16", "--head-width", "48"]
        + ["--mixer-depth", "2", "--rotary-dim", "2", "--lambda-pos", "1", "--lambda-keep", "0.5"]
        + ["--lambda-prior", "0.1", "--keep-threshold", "0.4", "--batch-size", "8", "--lr", "0.01"]
        + ["--weight-decay", "0", "--warmup", "1", "--steps", "2", "--max-minutes", "5"]
        + ["--eval-every", "1", "--heldout-every", "3", "--seed", "1"],
        ["--data", "{data}", "--backbone", "{backbone}"]
        + ["--draft-vocab", "0", "--features-only", "--features-dtype", "bfloat16"],
        ["--data", "{data}", "--backbone", "{backbone}", "--out", "{runs}/sequence"]
        + ["--slots", "4", "--draft-vocab", "16", "--sequence-width", "8", "--sequence-heads", "2"]
        + ["--examples-per-batch", "2", "--distill-weight", "0.5", "--batch-size", "8"]
        + ["--steps", "2", "--eval-every", "2", "--warmup", "1", "--heldout-every", "3"],
    ],
    "shuffle_model.cli.corpus": [
        ["--data", "{data}", "--out", "{tmp}/corpus2", "--backbone", "tiny", "--vocab-size", "64"],
    ],
    "shuffle_model.cli.calibrate": [
        ["--prompts", "2", "--max-new-tokens", "8", "--strategy", "identity"]
        + ["--out", "{tmp}/calibration.json"],  # the default head: a tiny one
    ],
    "shuffle_model.cli.evaluate": [
        ["{head}", "--prompts", "0", "--spec-bench", "1", "--max-new-tokens", "3"]
        + ["--strategies", "identity"],
    ],
    "shuffle_model.cli.lossless": [
        ["--dtype", "float32", "--plain-passes", "--prompts", "1", "--max-new-tokens", "4"]
        + ["--blocks", "2"],
    ],
    "shuffle_model.bench": [
        [*["--resume", "--name", "tiny", "--limit", "2", "--categories", "qa"]]
        + ["--max-new-tokens", "4", "--out", "{bench}"],
    ],
    "shuffle_model": [
        ["generate", "Hello there", "--chat", "--max-new-tokens", "6"]
        + ["--max-parallel-tokens", "3", "--strategy", "hungarian", "--temperature", "0.7"]
        + ["--top-p", "0.9", "--seed", "1", "--keep-threshold", "0.2", "--block-length", "fixed"]
        + ["--draft-source", "head", "--trace", "{tmp}/trace.json", "--head", "{head}"]
        + ["--backbone", "{backbone}", "--device", "cpu", "--trust-remote-code"],
        ["generate", "Hello", "--no-verify", "--max-new-tokens", "4"],
        ["cost", "--head", "{head}", "--device", "cpu", "--dtype", "float32"],
    ],
}

# The order the modules run in: later runs read what earlier ones wrote (shards, heads, results).
ORDER = [
    "shuffle_model.cli.distill",
    "shuffle_model.cli.corpus",
    "shuffle_model.cli.train",
    "shuffle_model",
    "shuffle_model.cli.calibrate",
    "shuffle_model.bench",
    "shuffle_model.bench.curves",
    "shuffle_model.bench.dtypes",
    "shuffle_model.cli.evaluate",
    "shuffle_model.cli.lossless",
    "viz",
]
# The function `python -m` ends up in, where it is not the module's own main.
MAINS = {
    "shuffle_model": "shuffle_model.cli.generate",
    "shuffle_model.bench": "shuffle_model.bench.run",
    "viz": "viz.__main__",
    "shuffle_model.cli.generate": "shuffle_model.cli.generate",
}
OUTPUTS = ("--out", "--json", "--gif", "--html", "--trace")  # options naming what a run writes


def main_of(module: str):
    return importlib.import_module(MAINS.get(module, module)).main


def with_options(argv: list[str], options: dict) -> list[str]:
    """argv with each option set to the given value(s): replacing what follows it, or added."""
    argv = list(argv)
    for option, value in options.items():
        values = [] if value is None else [value] if isinstance(value, str) else list(value)
        if option in argv:
            at = argv.index(option) + 1
            end = at
            while end < len(argv) and not argv[end].startswith("-"):
                end += 1
            argv[at:end] = values
        else:
            argv += [option, *values]
    return argv


def world_path(argument: str) -> str:
    """A documented argument, with its path in the tiny world (PATHS), or made absolute where it
    names a file of the repository (the runs work in a temporary directory)."""
    if argument in PATHS:
        return PATHS[argument]
    if "/" in argument and not argument.startswith("-") and (ROOT / argument).exists():
        return str(ROOT / argument)
    return argument


def planned_runs() -> list[tuple[str, str, list[str]]]:
    """(what, module, argv with {placeholders}) for every run, in ORDER: each documented command
    (each [optional] part left out and given), then the module's MORE runs."""
    runs = []
    documented = [(c, parse_command(c)) for c in SMALL if SMALL[c] is not None]
    for module in ORDER:
        seen = set()
        for command, parsed in documented:
            if parsed.module != module:
                continue
            variants = [list(parsed.argv)]
            if parsed.optional:
                variants.insert(0, [a for a in parsed.argv if a not in parsed.optional])
            for argv in variants:
                argv = with_options([world_path(a) for a in argv], SMALL[command])
                if tuple(argv) not in seen:
                    seen.add(tuple(argv))
                    runs.append((command, module, argv))
        runs += [(f"{module} (more)", module, argv) for argv in MORE.get(module, [])]
    return runs


# --- the commands' parsers ------------------------------------------------------------------------


class _Parsed(Exception):
    pass


def parser_of(module: str) -> argparse.ArgumentParser:
    """The parser a command's main builds (caught as it parses, before anything runs)."""
    built = []

    def catch(self, args=None, namespace=None):
        built.append(self)
        raise _Parsed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", catch)
        with contextlib.suppress(_Parsed):
            main_of(module)([])
    assert built, f"{module}'s main(argv) parses no arguments"
    return built[0]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options_of(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """Each optional argument (but --help) as the tuple of its spellings."""
    return [
        tuple(a.option_strings)
        for a in parser._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]


def check_parses(parser: argparse.ArgumentParser, argv: list[str], what: str) -> None:
    """argv parses, every option spelled in full (no abbreviation of a renamed option)."""
    errors = io.StringIO()
    for each in [parser, *subcommands(parser).values()]:
        each.allow_abbrev = False  # a parser of its own: main builds a new one per call
    with contextlib.redirect_stderr(errors):
        try:
            parser.parse_args(argv)
        except SystemExit:
            error = errors.getvalue().strip().splitlines()[-1]
            pytest.fail(f"{what}: {' '.join(argv)!r} does not parse: {error}")


def test_every_documented_command_has_a_small_run_and_parses():
    """The commands the documents show are exactly the table's, and each one's arguments (as
    documented and as run) parse with its module's own parser: a renamed module or option, or a
    new command without a run, fails here."""
    documented = documented_commands()
    assert len(documented) >= 10, documented  # the parser still finds the documents' commands
    missing = sorted(set(documented) - set(SMALL))
    assert not missing, (
        f"commands shown in the documents with no entry in SMALL (add the arguments that make "
        f"them small): {missing}"
    )
    stale = sorted(set(SMALL) - set(documented))
    assert not stale, f"SMALL holds commands the documents no longer show: {stale}"
    for command in documented:
        parsed = parse_command(command)
        parser = parser_of(parsed.module)
        if SMALL[command] is None:  # a name: the module, or one of its subcommands
            named = list(parsed.argv)
            assert named in ([], *([name] for name in subcommands(parser))), (
                f"{command}: arguments shown, but no small run in SMALL"
            )
            runs = [argv for _, m, argv in planned_runs() if main_of(m) is main_of(parsed.module)]
            assert any(argv[: len(named)] == named for argv in runs), f"{command}: no runs"
            continue
        check_parses(parser, list(parsed.argv), f"{command} (as documented)")
    for what, module, argv in planned_runs():
        check_parses(parser_of(module), argv, what)


def test_every_option_of_a_documented_command_runs():
    """Every option that a documented command's --help offers appears in at least one run."""
    runs = planned_runs()
    for module in ORDER:
        parser = parser_of(module)
        argvs = [argv for _, m, argv in runs if m == module]
        assert argvs, f"no run of {module}"
        parsers = {"": parser}
        if subcommands(parser):
            parsers = subcommands(parser)
            assert {argv[0] for argv in argvs} == set(parsers), f"{module}: subcommands run"
        for name, sub in parsers.items():
            given = {a for argv in argvs if not name or argv[0] == name for a in argv}
            unused = [o[-1] for o in options_of(sub) if not given & set(o)]
            assert not unused, (
                f"python -m {module} {name}: no run gives {unused}; add them to a run in MORE"
            )


# --- running them ---------------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def tiny_world(tmp: Path) -> dict[str, str]:
    """A saved tiny backbone (with a chat template; positions for Spec-Bench's longest prompts),
    two tiny heads on it (the shuffle one stands in for the default head, the fixed one for the
    fixed head), and a few questions: the paths the runs' {placeholders} name."""
    from transformers import LlamaForCausalLM

    from shuffle_model import FasterDecodeMixer
    from shuffle_model.model.tiny import char_tokenizer, tiny_llama_config

    world = {name: tmp / name for name in ("backbone", "head", "fixed_head", "head_copy")}
    world |= {name: tmp / name for name in ("data", "runs", "bench", "cache", "cwd")}
    world["questions"] = tmp / "questions.jsonl"
    torch.manual_seed(0)
    backbone = LlamaForCausalLM(tiny_llama_config(context=4096)).eval()
    backbone.save_pretrained(world["backbone"])
    tokenizer = char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(world["backbone"])
    for name, assignment in (("head", "hungarian"), ("fixed_head", "fixed")):
        torch.manual_seed(1)
        head = FasterDecodeMixer.from_backbone(
            backbone, tokenizer=tokenizer, num_slots=4, mixer_token_hidden=16, assignment=assignment
        )
        head.config.backbone = str(world["backbone"])
        head.save_pretrained(world[name])
    shutil.copytree(world["head"], world["head_copy"])
    world["cwd"].mkdir()
    world["questions"].write_text(
        "".join(
            json.dumps({"question_id": i, "category": c, "turns": [t]}) + "\n"
            for i, c, t in [(1, "qa", "What is a cat?"), (2, "math", "Add 2 and 3.")]
        )
    )
    return {name: str(path) for name, path in world.items()} | {"tmp": str(tmp)}


PROTECTED = [ROOT / "data" / "distill", ROOT / "bench" / "results"]


def protected_files() -> dict[str, tuple[int, int]]:
    """What the commands write by default: shards and features, benchmark results, and the
    shipped heads' files (calibration.json lands beside a head)."""
    files = [p for folder in PROTECTED if folder.is_dir() for p in folder.rglob("*")]
    files += [
        p for p in (ROOT / "assets").glob("*_head/*") if p.suffix in (".json", ".safetensors")
    ]
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """The tiny world, with the shipped heads, the caches and the working directory in it."""
    from shuffle_model.decoding import cost
    from shuffle_model.model import faster_decode_mixer
    from shuffle_model.training import sources

    paths = tiny_world(tmp_path)
    monkeypatch.setattr(faster_decode_mixer, "DEFAULT_HEAD_DIR", Path(paths["head"]))
    monkeypatch.setattr(faster_decode_mixer, "DEFAULT_FIXED_HEAD_DIR", Path(paths["fixed_head"]))
    monkeypatch.setenv("SHUFFLELM_CACHE", paths["cache"])
    monkeypatch.chdir(paths["cwd"])
    monkeypatch.setattr(cost, "machine_is_busy", lambda: False)  # measured once, then cached
    # the docs source reads every installed package: a few items stand in for them
    items = [
        sources.DocItem("pkg", "MIT", f"pkg.f{i}", "function", "Returns the input. " * 4, "")
        for i in range(3)
    ]
    monkeypatch.setattr(sources, "collect_items", lambda seed: items)
    handler = signal.getsignal(signal.SIGTERM)  # distill turns SIGTERM into Ctrl-C
    yield paths
    signal.signal(signal.SIGTERM, handler)


def test_every_documented_command_runs_small(world, capsys):
    """Each documented command, and the runs that give every other option, exits 0 on the tiny
    world and writes what its output options name, and nothing lands in data/distill,
    bench/results or the shipped heads."""
    from shuffle_model.training.distill import load_examples

    before = protected_files()
    for what, module, argv in planned_runs():
        argv = [a.format(**world) for a in argv]
        status = main_of(module)(argv)
        captured = capsys.readouterr()
        assert status in (0, None), f"{what}: {argv} exited {status}: {captured.err[-2000:]}"
        for option in OUTPUTS:
            if option in argv:
                written = Path(argv[argv.index(option) + 1])
                assert str(written).startswith(world["tmp"]), f"{what} writes outside: {written}"
                assert written.exists(), f"{what}: {option} {written} was not written"
    assert len(load_examples(Path(world["data"]))) == 10  # distill --answers counts the folder
    assert (Path(world["head_copy"]) / "calibration.json").is_file()  # calibrate --head DIR
    assert json.loads((Path(world["bench"]) / "tiny.json").read_text())["prompts"] == 2  # resumed
    assert protected_files() == before, "a command wrote into the repository's data folders"


def test_python_dash_m_spellings_import_their_commands():
    """`python -m MODULE --help` (run as python -m runs it, in a fresh interpreter) prints the
    usage of the same command that main_of runs in-process: every option of that parser."""
    modules = sorted({parse_command(c).module for c in documented_commands()})
    script = (
        "import contextlib, io, json, runpy, sys\n"
        "helps = {}\n"
        "for module in sys.argv[1:]:\n"
        "    sys.argv = [module, '--help']\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
        "        except SystemExit as exit:\n"
        "            assert exit.code in (0, None), (module, exit.code)\n"
        "    helps[module] = out.getvalue()\n"
        "print(json.dumps(helps))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    helps = json.loads(done.stdout.strip().splitlines()[-1])
    for module in modules:
        assert helps[module].startswith("usage:"), (module, helps[module][:200])
        parser = parser_of(module)
        for name in subcommands(parser) or [""]:
            assert name in helps[module]
        if not subcommands(parser):
            for spellings in options_of(parser):
                assert any(s in helps[module] for s in spellings), (module, spellings)


# --- every import resolves ------------------------------------------------------------------------


def package_files() -> list[Path]:
    files = [
        p
        for package in ("shuffle_model", "viz", "shufflers")
        for p in (ROOT / package).rglob("*.py")
    ]
    return sorted(files + [p for p in [ROOT / "app.py"] if p.is_file()])


def guarded(node: ast.AST, parents: dict) -> bool:
    """Inside a try whose handlers catch ImportError (an optional dependency)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                names = ast.unparse(handler.type) if handler.type else "BaseException"
                if "ImportError" in names or "ModuleNotFoundError" in names:
                    return True
    return False


def imports_in(path: Path) -> list[tuple[int, str, str | None, bool]]:
    """(line, module, name or None, guarded) for each import in a file, in function bodies too;
    relative imports resolved against the file's package."""
    package = list(path.relative_to(ROOT).with_suffix("").parts)[:-1]
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None, guarded(node, parents)) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            for alias in node.names:
                found.append((node.lineno, module, alias.name, guarded(node, parents)))
    return found


def resolves(module: str, name: str | None) -> str | None:
    """None when `import module` / `from module import name` works, else what is wrong."""
    try:
        if name is None:
            return None if importlib.util.find_spec(module) else f"no module {module}"
        imported = importlib.import_module(module)
    except ImportError as error:
        return f"{module}: {error}"
    if name == "*" or hasattr(imported, name):
        return None
    if hasattr(imported, "__path__") and importlib.util.find_spec(f"{module}.{name}"):
        return None
    return f"{module} has no {name}"


def test_every_import_in_the_packages_resolves():
    """Each import of shuffle_model, viz, shufflers and app.py (function bodies included) finds
    its module and, for `from X import name`, the name in it: a module moved by a regrouping
    fails here even where no test runs the function that imports it."""
    files = package_files()
    assert len(files) > 40 and ROOT / "shuffle_model" / "cli" / "calibrate.py" in files
    broken = []
    for path in files:
        for line, module, name, optional in imports_in(path):
            problem = resolves(module, name)
            if problem and not (optional and not module.startswith(("shuffle_model", "viz"))):
                broken.append(f"{path.relative_to(ROOT)}:{line}: {problem}")
    assert not broken, "\n".join(broken)
