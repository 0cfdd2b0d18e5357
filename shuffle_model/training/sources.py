"""Real text available offline: documentation and source code of installed Python packages,
turned into summarisation, extraction, question-answering, rewriting, translation and
code-explanation prompts.

Items come from the standard library (PSF licence; module, class and function docstrings and
the language reference topics of `pydoc_data`) and from packages installed beside this project
whose licence is permissive (read from their metadata; MPL, GPL and unknown licences are
skipped). Files are parsed with `ast`, never imported. Every prompt records the package and
its licence.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import random
import re
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

STDLIB = "python-stdlib"
STDLIB_LICENCE = "PSF-2.0"
# distribution -> import folder: widely used packages with permissive licences (checked again
# against their metadata at run time)
PACKAGES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "torch": "torch",
    "transformers": "transformers",
    "sympy": "sympy",
    "networkx": "networkx",
    "pandas": "pandas",
    "nltk": "nltk",
    "requests": "requests",
    "click": "click",
    "jinja2": "jinja2",
    "pydantic": "pydantic",
    "rich": "rich",
    "pygments": "pygments",
    "httpx": "httpx",
    "fastapi": "fastapi",
    "starlette": "starlette",
    "accelerate": "accelerate",
    "huggingface_hub": "huggingface_hub",
    "joblib": "joblib",
    "mpmath": "mpmath",
    "sortedcontainers": "sortedcontainers",
    "python-dateutil": "dateutil",
    "packaging": "packaging",
    "pyyaml": "yaml",
    "tabulate": "tabulate",
    "plotly": "plotly",
    "filelock": "filelock",
    "fsspec": "fsspec",
    "gradio": "gradio",
    "safetensors": "safetensors",
}
PERMISSIVE = ("MIT", "BSD", "APACHE", "PSF", "PYTHON SOFTWARE", "ISC", "ZLIB", "CC0", "BSL-1.0")
COPYLEFT = ("GPL", "MPL", "MOZILLA", "EUPL", "CDDL", "EPL")
SKIP_PARTS = {
    "tests",
    "test",
    "testing",
    "_vendor",
    "vendor",
    "idlelib",
    "lib2to3",
    "turtledemo",
    "ensurepip",
    "site-packages",
    "__pycache__",
    "benchmarks",
    "conftest.py",
}
LICENCE_TEXT = re.compile(r"Copyright|Permission is hereby granted|licen[cs]e", re.IGNORECASE)
TARGET_LANGUAGES = ["French", "Spanish", "German", "Italian", "Portuguese"]


@dataclass
class DocItem:
    package: str  # distribution name ("python-stdlib" for the standard library)
    licence: str  # the package's licence as its metadata states it
    name: str  # dotted name of the documented object (module, class, function or topic)
    kind: str  # "module", "class", "function" or "topic"
    text: str  # the documentation text (docstring or reference topic), cleaned and cut
    code: str  # the function's source without its docstring ("" for other kinds)


def package_licence(distribution: str) -> str:
    """The licence a distribution's metadata states (SPDX expression, License or classifier)."""
    try:
        meta = importlib.metadata.metadata(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""
    if meta.get("License-Expression"):
        return meta["License-Expression"]
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []]
    classifiers = [c for c in classifiers if "License" in c or "licen" in c.lower()]
    licence = (meta.get("License") or "").strip()
    if licence and len(licence) < 80 and "\n" not in licence:
        return licence
    return classifiers[0] if classifiers else licence.splitlines()[0] if licence else ""


def is_permissive(licence: str) -> bool:
    upper = licence.upper()
    return any(p in upper for p in PERMISSIVE) and not any(c in upper for c in COPYLEFT)


def package_roots() -> list[tuple[str, str, Path]]:
    """(distribution, licence, folder) of the standard library and the permissive packages."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    roots = [(STDLIB, STDLIB_LICENCE, stdlib)]
    for distribution, folder in PACKAGES.items():
        licence = package_licence(distribution)
        path = Path(sysconfig.get_paths()["purelib"]) / folder
        if not path.is_dir():
            path = Path(sysconfig.get_paths()["platlib"]) / folder
        if path.is_dir() and is_permissive(licence):
            roots.append((distribution, licence, path))
    return roots


def clean_doc(text: str, *, limit: int = 1000) -> str:
    """A docstring without its indentation, cut at a paragraph boundary near `limit` chars."""
    text = inspect.cleandoc(text).strip()
    if len(text) <= limit:
        return text
    cut = text.rfind("\n\n", 0, limit)
    return text[: cut if cut > limit // 3 else limit].rstrip()


def _module_name(root: Path, path: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    prefix = [] if package == STDLIB else [root.name]
    return ".".join(prefix + parts)


def _without_docstring(node: ast.FunctionDef, lines: list[str]) -> str:
    """The function's source lines (from `def`, decorators left out) without its docstring,
    dedented."""
    body = lines[node.lineno - 1 : node.end_lineno]
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
        start, end = first.lineno - node.lineno, first.end_lineno - node.lineno
        body = body[:start] + body[end + 1 :]
    return textwrap.dedent("\n".join(body)).strip()


def file_items(package: str, licence: str, root: Path, path: Path) -> list[DocItem]:
    """Documented modules, classes and functions of one source file."""
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    lines = source.splitlines()
    module = _module_name(root, path, package)
    items = []
    doc = ast.get_docstring(tree)
    if doc and len(doc) >= 200 and not LICENCE_TEXT.search(doc):
        items.append(DocItem(package, licence, module, "module", clean_doc(doc), ""))
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node) or ""
        doc = "" if LICENCE_TEXT.search(doc) else doc
        name = f"{module}.{node.name}"
        code = ""
        if isinstance(node, ast.FunctionDef) and 5 <= node.end_lineno - node.lineno <= 45:
            code = _without_docstring(node, lines)
            code = code if 80 <= len(code) <= 1600 else ""
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        if len(doc) >= 200 or code:
            text = clean_doc(doc) if len(doc) >= 200 else ""
            items.append(DocItem(package, licence, name, kind, text, code))
    return items


def stdlib_topics(limit: int = 1000) -> list[DocItem]:
    """The language reference topics that `pydoc` shows (pydoc_data.topics), as paragraphs."""
    try:
        from pydoc_data.topics import topics  # here: some Python builds leave it out
    except ImportError:
        return []
    items = []
    for name, text in sorted(topics.items()):
        for number, part in enumerate(re.split(r"\n\s*\n(?=\S)", text)):
            part = part.strip()
            if 300 <= len(part) <= limit * 2:
                items.append(
                    DocItem(
                        STDLIB,
                        STDLIB_LICENCE,
                        f"topic:{name}:{number}",
                        "topic",
                        clean_doc(part, limit=limit),
                        "",
                    )
                )
    return items


def _public_file(root: Path, path: Path) -> bool:
    """Not a test or vendored file, and no private module on the way (`_x`, not `__init__`)."""
    parts = path.relative_to(root).with_suffix("").parts
    private = any(part.startswith("_") and part != "__init__" for part in parts)
    return not private and not SKIP_PARTS & set(parts)


def collect_items(*, seed: int = 0, per_package: int = 400) -> list[DocItem]:
    """Up to `per_package` documentation and code items of every package (files in a seeded
    random order), plus the standard library's reference topics."""
    rng = random.Random(seed)
    items = stdlib_topics()
    for package, licence, root in package_roots():
        files = sorted(p for p in root.rglob("*.py") if _public_file(root, p))
        rng.shuffle(files)
        found: list[DocItem] = []
        for path in files:
            found += file_items(package, licence, root, path)
            if len(found) >= per_package:
                break
        items += found[:per_package]
    return items


TEXT_TASKS = [  # (category, template over {text}, {name}) for documentation text
    ("summarization", "Summarize the following documentation in two sentences:\n\n{text}"),
    ("summarization", "Explain this documentation to a beginner in a short paragraph:\n\n{text}"),
    ("summarization", "Give three bullet points with the key ideas of this text:\n\n{text}"),
    (
        "extraction",
        "List every parameter, option or argument mentioned in this text, with a short "
        "description of each:\n\n{text}",
    ),
    ("extraction", "Extract all function, class and module names in this text:\n\n{text}"),
    (
        "extraction",
        "What does this documentation say is returned or produced? Quote the relevant part."
        "\n\n{text}",
    ),
    (
        "qa",
        "Read the documentation of `{name}` below and answer: what is it for, and when would you "
        "use it?\n\n{text}",
    ),
    (
        "qa",
        "Answer the question using only the information below.\n\nInformation: {text}\n\n"
        "Question: What are the main things to keep in mind when using `{name}`?",
    ),
    ("rewriting", "Rewrite this documentation in plain, simple English:\n\n{text}"),
    ("rewriting", "Rewrite the following text to be more concise, keeping every fact:\n\n{text}"),
    (
        "writing",
        "Using the documentation below, write a short tutorial that shows how to use `{name}`."
        "\n\n{text}",
    ),
]
TRANSLATION_TASKS = [  # over {first}, the first paragraph, and {language}
    "Translate the following text into {language}:\n\n{first}",
    "Translate this sentence from a software manual into {language}: {first}",
]
CODE_TASKS = [  # (category, template over {code})
    ("code_explanation", "Explain what this Python function does:\n\n{code}"),
    ("code_explanation", "Walk me through this code step by step:\n\n{code}"),
    ("code_explanation", "Write a docstring for this function:\n\n{code}"),
    (
        "code_explanation",
        "What are the inputs and the output of this function? Give an example call.\n\n{code}",
    ),
    (
        "code_explanation",
        "Review this code: is there anything that could go wrong, and how would you improve "
        "it?\n\n{code}",
    ),
    ("coding", "Write unit tests for this function:\n\n{code}"),
    (
        "coding",
        "Rewrite this function so that it is easier to read, and explain the changes:\n\n{code}",
    ),
]


def text_prompt(item: DocItem, rng: random.Random) -> tuple[str, str]:
    """(category, prompt) over an item's documentation text; short first paragraphs may also
    become translation prompts."""
    name = item.name.split(":")[1] if item.name.startswith("topic:") else item.name
    first = item.text.split("\n\n")[0].strip()
    options = [(c, t.format(text=item.text, name=name)) for c, t in TEXT_TASKS]
    if len(first) <= 500:
        language = rng.choice(TARGET_LANGUAGES)
        options += [
            ("translation", t.format(first=first, language=language)) for t in TRANSLATION_TASKS
        ]
    return rng.choice(options)


def code_prompt(item: DocItem, rng: random.Random) -> tuple[str, str]:
    """(category, prompt) over an item's source code."""
    code = f"```python\n{item.code}\n```"
    category, template = rng.choice(CODE_TASKS)
    return category, template.format(code=code)


def doc_prompts(items: list[DocItem], count: int, *, seed: int = 0) -> list[dict]:
    """`count` prompts {key, source, category, text, package, licence} over `items`: a package
    is drawn first (so that large packages do not crowd out small ones), then an item, then a
    task; code items give code prompts ("code"), text items text prompts ("docs")."""
    rng = random.Random(seed)
    by_package: dict[str, list[DocItem]] = {}
    for item in items:
        by_package.setdefault(item.package, []).append(item)
    packages = sorted(by_package)
    prompts, seen = [], set()
    attempts = 0
    while len(prompts) < count and attempts < 50 * count:
        attempts += 1
        item = rng.choice(by_package[rng.choice(packages)])
        use_code = bool(item.code) and (not item.text or rng.random() < 0.5)
        category, text = code_prompt(item, rng) if use_code else text_prompt(item, rng)
        source = "code" if use_code else "docs"
        key = f"{source}:{item.package}:{item.name}:{category}"
        if key in seen:
            continue
        seen.add(key)
        prompts.append(
            {
                "key": key,
                "source": source,
                "category": category,
                "text": text,
                "package": item.package,
                "licence": item.licence,
            }
        )
    return prompts
