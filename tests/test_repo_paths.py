"""Every repository path and every ``fts_core`` name that the repository mentions exists.

Read, in the files git tracks (or would: new ones not ignored): every Markdown file; the docstrings
and comments of every ``.py`` file; the comments of the shell scripts (``scripts/*.sh``,
``.ci/run``, the Makefile); the markdown and code cells of ``notebooks/*.ipynb``;
``params/**/*.yaml`` and ``sweeps/*.yaml`` whole.

Found there and checked:

* paths: a token that starts with a top-level folder of the repository and a slash (``tests/...``,
  ``fts_core/...``), a ``../`` path (resolved against the mentioning file's folder; files in
  ``params/`` also against ``notebooks/``, where papermill runs the notebooks they configure; one
  that leaves the repository is not checked), a MyST ``{doc}`` target, a Markdown link, and a bare
  file name such as ``taylor.py`` (``.py``, ``.ipynb``, ``.md``, ...): some file of the repository
  must have that name.
  It must exist; a glob must match something; a path with a placeholder segment (``<name>``,
  ``{field}``, ``$VAR``, an ellipsis) is checked up to that segment;
* names: ``fts_core.<module>``, ``fts_core.<module>:<name>``, ``fts_core.<module>.<Name>``: found
  where the module's source defines them (quick: importing torch and the rest takes seconds),
  or else the longest importable module prefix is imported and the rest looked up with ``getattr``.

What the code writes at run time is git-ignored and absent from a fresh clone: ``RUNTIME`` lists
those folders, each with its reason, and a test checks that git does ignore them.
"""
from __future__ import annotations

import ast
import functools
import fnmatch
import importlib
import io
import json
import posixpath
import re
import subprocess
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# folders the code writes at run time (git-ignored): mentioned by the docs, absent from a clone
RUNTIME = {
    "_build": "the built book (make book)",
    ".venv": "the environment scripts/setup.sh creates",
    "runs": "fts_core.run's default output folder",
    "test-artifacts": "the browser tests' screenshots",
    "notebooks/summaries": "the summaries the notebooks write when they run",
    "notebooks/.ipynb_checkpoints": "JupyterLab's checkpoints of the notebooks it opens",
    "notebooks/.virtual_documents": "jupyter-lsp's copies of the notebooks JupyterLab opens",
    "results/sweeps": "the out_dir of sweeps/*.yaml other than the two committed ones",
    "results/paper": "the paper-scale cells notebook 04 reads with params/paper/*.yaml",
    "results/03_layer_collapse": "notebook 03's training runs (runs_dir), kept for a re-execution",
    "results/04_experiments": "notebook 04's own cells when it trains (results_dirs empty)",
}
# bare file names the docs use for a file the reader creates (papermill's output notebook)
RUNTIME_NAMES = {"out.ipynb"}

BARE_SUFFIXES = ("py", "ipynb", "md", "yml", "toml", "sh", "env", "bib")
PLACEHOLDER = re.compile(r"[<>{}$]|^(\.\.\.|…)$")
GLOB = re.compile(r"[*?\[]")
NAME = re.compile(r"(?<![\w./-])fts_core(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)?")
DOC_ROLE = re.compile(r"\{doc\}`(?:[^`<]*<([^>`]+)>|([^`<]+))`")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
BARE = re.compile(r"(?<![\w./-])[\w-]+\.(?:%s)(?![\w/-])" % "|".join(BARE_SUFFIXES))


def repository_files() -> list[str]:
    """Tracked files and new ones git does not ignore (a change under review counts), that exist."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return sorted({f for f in out if (ROOT / f).is_file()})


FILES = repository_files()
TOP_DIRS = sorted({f.split("/")[0] for f in FILES if "/" in f} | {r.split("/")[0] for r in RUNTIME})
BASENAMES = {posixpath.basename(f) for f in FILES}
PATH = re.compile(r"(?<![\w./~$-])(?:\./|(?:\.\./)*)(?:%s)/[\w.*?\[\]<>{}$/-]*|(?<![\w./~$-])(?:\.\./)+[\w.*?\[\]<>{}$/-]+"
                  % "|".join(re.escape(d) for d in TOP_DIRS))


@dataclass(frozen=True)
class Ref:
    where: str  # "file:line"
    text: str  # as written
    kind: str  # "path" (repository-relative or ../) | "doc" | "link" | "bare" | "name"
    bases: tuple[str, ...] = ("",)  # folders a relative path is resolved against


# ----------------------------------------------------------------------------- reading
def _clean(token: str) -> str:
    token = token.removeprefix("./").rstrip(".,:;!?'\"`")
    while token.endswith("]") and token.count("]") > token.count("["):
        token = token[:-1].rstrip(".,:;")
    return token


def refs_in_text(where: str, text: str, folder: str = "", first_line: int = 1) -> list[Ref]:
    """The references in ``text`` of a file in ``folder``; ``where`` is the file's name in reports
    (``first_line`` is the file's line of the text's first line)."""
    bases = (folder, "notebooks") if folder.split("/")[0] == "params" else (folder,)
    refs = []
    for n, line in enumerate(text.splitlines(), first_line):
        at = f"{where}:{n}"
        for m in PATH.finditer(line):
            token = _clean(m.group(0))
            if token.startswith("../"):
                refs.append(Ref(at, token, "path", bases))
            else:
                refs.append(Ref(at, token, "path"))
        for m in DOC_ROLE.finditer(line):
            refs.append(Ref(at, (m.group(1) or m.group(2)).strip(), "doc", (folder,)))
        for m in MD_LINK.finditer(line):
            refs.append(Ref(at, m.group(1), "link", (folder,)))
        for m in BARE.finditer(line):
            refs.append(Ref(at, m.group(0), "bare"))
        for m in NAME.finditer(line):
            if line[m.end():m.end() + 1] not in ("-", "/"):  # fts_core.egg-info, fts_core/ (a path)
                refs.append(Ref(at, m.group(0), "name"))
    return refs


def refs_in_python(path: str, source: str) -> list[Ref]:
    """The references in the comments and docstrings of a Python file (a docstring: a string that
    starts a statement, which is what the tokenizer can tell without building the syntax tree)."""
    folder = posixpath.dirname(path)
    refs, previous = [], tokenize.NEWLINE
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            refs += refs_in_text(path, tok.string, folder, tok.start[0])
        elif tok.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            refs += refs_in_text(path, tok.string, folder, tok.start[0])
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            previous = tok.type
    return refs


def refs_in_shell(path: str, source: str) -> list[Ref]:
    """The references in a shell script's (or Makefile's) comments: from a ``#`` at a line's start
    or after a blank (``$#``, ``${#x}`` are not comments)."""
    refs = []
    for n, line in enumerate(source.splitlines(), 1):
        m = re.search(r"(?:^|\s)#(.*)", line)
        if m:
            refs += refs_in_text(path, m.group(1), posixpath.dirname(path), n)
    return refs


def refs_in_notebook(path: str, source: str) -> list[Ref]:
    refs = []
    for i, cell in enumerate(json.loads(source)["cells"]):
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for ref in refs_in_text(f"{path}:cell {i}", text, posixpath.dirname(path)):
            refs.append(Ref(ref.where.replace(f"cell {i}:", f"cell {i}, line "), ref.text, ref.kind, ref.bases))
    return refs


def repository_refs() -> list[Ref]:
    refs = []
    for f in FILES:
        source = (ROOT / f).read_text(encoding="utf-8", errors="replace") if not f.startswith("results/") else ""
        if f.endswith(".md"):
            refs += refs_in_text(f, source, posixpath.dirname(f))
        elif f.endswith(".py"):
            refs += refs_in_python(f, source)
        elif f.endswith(".sh") or f in (".ci/run", "Makefile"):
            refs += refs_in_shell(f, source)
        elif f.startswith("notebooks/") and f.endswith(".ipynb"):
            refs += refs_in_notebook(f, source)
        elif f.startswith(("params/", "sweeps/")) and f.endswith(".yaml"):
            refs += refs_in_text(f, source, posixpath.dirname(f))
    return refs


# ----------------------------------------------------------------------------- checking
def _runtime(rel: str) -> bool:
    parts = rel.split("/")
    for entry in RUNTIME:
        pattern = entry.split("/")
        if len(parts) >= len(pattern) and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern)):
            return True
    return False


def _exists(rel: str) -> bool:
    """``rel`` (repository-relative, normalised) exists, matches as a glob, or is runtime output;
    checked up to its first placeholder segment."""
    parts = [p for p in rel.split("/") if p]
    for i, p in enumerate(parts):
        if PLACEHOLDER.search(p):
            parts = parts[:i]
            break
    rel = "/".join(parts)
    if not rel or _runtime(rel):
        return True
    if GLOB.search(rel):
        return next(ROOT.glob(rel), None) is not None
    return (ROOT / rel).exists()


def _resolve_path(ref: Ref) -> bool:
    text = ref.text.split("#")[0]
    ok, inside = False, False
    for base in ref.bases:
        rel = posixpath.normpath(posixpath.join(base, text)) if text.startswith("../") else text
        if rel == ".." or rel.startswith("../"):
            continue  # outside the repository (a sibling worktree, ...): not ours to check
        inside = True
        ok = ok or _exists(rel)
    return ok or not inside


def _resolve_doc(ref: Ref) -> bool:
    target = ref.text.lstrip("/") if ref.text.startswith("/") else posixpath.join(ref.bases[0], ref.text)
    target = posixpath.normpath(target)
    return any((ROOT / (target + suffix)).is_file() for suffix in ("", ".md", ".ipynb"))


def _resolve_link(ref: Ref) -> bool:
    target = ref.text.split("#")[0]
    if not target or re.match(r"[a-z][a-z0-9+.-]*:", target) or PLACEHOLDER.search(target):
        return True  # an anchor, a URL, mailto:, a placeholder
    if target.startswith("/"):
        return _exists(target.lstrip("/"))
    if not target.startswith("../"):
        target = posixpath.normpath(posixpath.join(ref.bases[0], target))
    return _resolve_path(Ref(ref.where, target, "path", ref.bases))


@functools.lru_cache(maxsize=None)
def _module_tree(module: str) -> ast.Module | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return ast.parse(path.read_text(encoding="utf-8"))
    return None


def _names_in(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """What a module or class body defines: functions, classes, assigned and imported names, and the
    keys of a module's lazy ``_EXPORTS`` table (``fts_core``'s ``__getattr__``)."""
    found: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update({(a.asname or a.name).split(".")[0]: node for a in node.names})
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    found[target.id] = node
                    if target.id == "_EXPORTS" and isinstance(node.value, ast.Dict):
                        found.update({k.value: node for k in node.value.keys if isinstance(k, ast.Constant)})
    return found


def _statically_defined(module: str, attrs: list[str]) -> bool:
    """The quick answer, read from the source without importing: ``module`` is a file of the
    repository that defines ``attrs`` (a class's attributes followed into its body). False means
    "cannot tell" (a name imported from elsewhere, set at run time): then the import decides."""
    tree = _module_tree(module)
    if tree is None:
        return False
    node: ast.AST = tree
    for attr in attrs:
        if not isinstance(node, (ast.Module, ast.ClassDef)):
            return False
        node = _names_in(node.body).get(attr)
        if node is None:
            return False
    return True


def _resolve_name(ref: Ref) -> bool:
    module, _, attrs = ref.text.partition(":")
    parts = module.split(".")
    rest = attrs.split(".") if attrs else []
    for i in range(len(parts), 0, -1):  # the quick way first: the longest module prefix that is a file
        if _module_tree(".".join(parts[:i])) is not None:
            if _statically_defined(".".join(parts[:i]), parts[i:] + rest):
                return True
            break
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if not (name == err.name or name.startswith(f"{err.name}.")):  # an import error inside it
                raise
            continue
        break
    for attr in parts[i:] + rest:
        if not hasattr(obj, attr):
            return False
        obj = getattr(obj, attr)
    return True


def _resolves(ref: Ref) -> bool:
    if ref.kind == "name":
        return _resolve_name(ref)
    if ref.kind == "doc":
        return _resolve_doc(ref)
    if ref.kind == "link":
        return _resolve_link(ref)
    if ref.kind == "bare":
        return ref.text in BASENAMES or ref.text in RUNTIME_NAMES
    return _resolve_path(ref)


def problems(refs: list[Ref]) -> list[str]:
    """``file:line: reference`` for each reference that does not resolve."""
    return list(dict.fromkeys(f"{r.where}: {r.text}" for r in refs if not _resolves(r)))


# ----------------------------------------------------------------------------- tests
def test_the_extractor_finds_a_planted_bad_path_and_a_bad_name():
    text = ("Run tests/README.md, then notebooks/*.ipynb; see fts_core.experiments.runner:run\n"
            "and tests/<subpackage>/test_<module>.py, out_dir: ../results/...\n"
            "stale: tests/test_nothing_here.py and fts_core.no_such_module.Thing.\n"
            "also [the guide](guide.md), {doc}`chapter 1 </notebooks/01_fisher_derivation>`, ../../elsewhere\n"
            "and [gone](missing.md), nowhere_at_all.py, fts_core.egg-info, `fts_core.setup.models.MLP`.")
    refs = refs_in_text("book/x.md", text, "book")
    assert {r.text for r in refs} >= {"tests/README.md", "notebooks/*.ipynb", "fts_core.experiments.runner:run",
                                      "tests/test_nothing_here.py", "fts_core.no_such_module.Thing",
                                      "guide.md", "/notebooks/01_fisher_derivation", "fts_core.setup.models.MLP"}
    assert problems(refs) == ["book/x.md:3: tests/test_nothing_here.py", "book/x.md:3: fts_core.no_such_module.Thing",
                              "book/x.md:5: missing.md", "book/x.md:5: nowhere_at_all.py"]


def test_python_docstrings_and_comments_are_read_and_code_strings_are_not():
    source = ('"""See tests/not_a_file.py."""\nX = "tests/also_not_a_file.py"\n\n\n'
              "def f():\n    '''fts_core.nowhere'''\n    return 1  # tests/nor_this.py\n")
    assert problems(refs_in_python("fts_core/x.py", source)) == [
        "fts_core/x.py:1: tests/not_a_file.py", "fts_core/x.py:6: fts_core.nowhere", "fts_core/x.py:7: tests/nor_this.py"]


def test_notebook_cells_and_params_files_resolve_from_notebooks():
    cell = {"cell_type": "code", "source": ["x = 1\n", "# reads ../results/claims/ and ../results/no_such_folder/a.json\n"]}
    notebook = json.dumps({"cells": [{"cell_type": "markdown", "source": "./sweeps/no_such.yaml"}, cell]})
    assert problems(refs_in_notebook("notebooks/x.ipynb", notebook)) == [
        "notebooks/x.ipynb:cell 0, line 1: sweeps/no_such.yaml",
        "notebooks/x.ipynb:cell 1, line 2: ../results/no_such_folder/a.json"]
    params = "results_dirs: [../results/paper/vgg19_cifar10]   # relative to notebooks/\nalso: ../results/nothing\n"
    assert problems(refs_in_text("params/paper/x.yaml", params, "params/paper")) == ["params/paper/x.yaml:2: ../results/nothing"]


def test_the_runtime_folders_are_git_ignored():
    out = subprocess.run(["git", "check-ignore", "--no-index", *(f"{r}/x" for r in RUNTIME)], cwd=ROOT,
                         capture_output=True, text=True).stdout.split()
    assert sorted(out) == sorted(f"{r}/x" for r in RUNTIME), "RUNTIME lists a folder git does not ignore"


def test_every_path_and_name_the_repository_mentions_exists():
    refs = repository_refs()
    assert len(refs) > 300  # the walk did find the references (a broken reader finds none)
    bad = problems(refs)
    assert not bad, "references to nothing:\n" + "\n".join(bad)


if __name__ == "__main__":  # python tests/test_repo_paths.py: the list, without pytest
    print("\n".join(problems(repository_refs())) or "all references resolve")
