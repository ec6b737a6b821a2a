"""The package's shape: every module imports alone, and imports run one way (no cycles)."""

import ast
import subprocess
import sys
from pathlib import Path

import lsap

SRC = Path(lsap.__file__).resolve().parent

# No edge may close a cycle; the set is empty (the old report -> sweep exemption is gone) and
# test_no_stale_exemptions keeps it honest if one is ever added.
EXPECTED_CYCLE_EDGES: set[tuple[str, str]] = set()

# method/ (the paper's method) imports nothing from the rest of lsap, except these edges,
# each with its reason. test_no_stale_exemptions fails when one no longer exists.
METHOD_EXCEPTIONS = {
    ("lsap.method.vocab", "lsap.utils.errors"): "VocabError must be an LsapError (exit 2); "
    "utils.errors is a stdlib-only leaf (test_utils_leaves_import_no_lsap)",
    ("lsap.method.vocab", "lsap.utils.io"): "VocabMap.save writes atomically; utils.io is a "
    "stdlib-only leaf",
    ("lsap.method.vocab", "lsap.data.tokenizer"): "VocabMap.from_tokenizers / report accept a "
    "tokenizer NAME (public API): _resolve loads it lazily, only for str/Path arguments",
    ("lsap.method.flops", "lsap.model"): "N is counted on a meta-device instance of the model "
    "lsap trains (count_params) and flops_report loads presets; lazy, inside the functions",
}

# Size rules: no module over 500 lines, no function over 100 lines. Today's offenders, with
# their line counts after `ruff format` at 100 columns (2026-12-04; debt, issue 27): the allowlist may only shrink (an entry that grew, or a new offender,
# fails; an entry that shrank under the limit must be removed).
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 100
MODULE_ALLOWLIST = {
    "lsap/experiments/sweep.py": 744,
    "lsap/train/loop.py": 726,
    "lsap/experiments/report.py": 614,
    "lsap/data/shards.py": 671,
    "lsap/eval/run.py": 586,
    "lsap/eval/tasks.py": 638,
    "lsap/surrogate/store.py": 554,
}
FUNCTION_ALLOWLIST = {
    "lsap/surrogate/store_build.py:build_store": 287,
    "lsap/data/shards.py:prepare": 218,
    "lsap/eval/run.py:evaluate_run": 185,
    "lsap/data/arrays.py:link_token_arrays": 113,
    "lsap/eval/run.py:_evaluate_one": 123,
    "lsap/experiments/sweep.py:_run_sweep": 107,
}


def _modules() -> list[str]:
    out = []
    for p in sorted(SRC.rglob("*.py")):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _imports(path: Path, module: str) -> set[str]:
    """lsap modules `module` imports anywhere in its file (top level and inside functions)."""
    known = set(_modules())
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and _is_import_module(node):
            if module == "lsap":  # the package's lazy __getattr__ (f"lsap.{...}") is not an edge
                continue
            names = _import_module_targets(node.args[0], known)
        else:
            continue
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if (
                n and n != module and n != "lsap"
            ):  # the package's lazy __getattr__ is not an import edge
                found.add(n)
    return found


def _is_import_module(node: ast.Call) -> bool:
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
    return name == "import_module" and bool(node.args)


def _import_module_targets(arg: ast.expr, known: set[str]) -> list[str]:
    """Modules an `importlib.import_module(arg)` can load: the string itself, or for an
    f-string every lsap module under its constant prefix (f"lsap.cli.{name}" → lsap.cli.*)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = arg.values[0].value
        return [m for m in known if m.startswith(prefix) and m != prefix.rstrip(".")]
    raise AssertionError(f"import_module({ast.unparse(arg)}): the test cannot follow it")


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[mod] = _imports(p, mod)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                cyc = visit(m)
                if cyc:
                    return cyc
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            cyc = visit(n)
            if cyc:
                return cyc
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_sees_function_level_imports():
    g = import_graph()
    assert "lsap.surrogate.sources" in g["lsap.train.loop"]  # imported inside build_run_targets
    assert (
        "lsap.surrogate.store" not in g["lsap.surrogate.load"]
    )  # the store ⇄ surrogate circle is gone


def test_import_graph_follows_importlib():
    g = import_graph()
    cli = {m for m in g if m.startswith("lsap.cli.") and m != "lsap.cli.main"}
    assert "lsap.cli.flops" in cli
    assert cli <= g["lsap.cli.main"]  # importlib.import_module(f"lsap.cli.{name}")
    targets = _import_module_targets(ast.parse('f"lsap.cli.{x}"').body[0].value, set(g))
    assert set(targets) == cli | {"lsap.cli.main"}


def test_method_imports_nothing_from_the_rest():
    bad = {
        (m, n)
        for m, deps in import_graph().items()
        if m.startswith("lsap.method")
        for n in deps
        if not n.startswith("lsap.method") and (m, n) not in METHOD_EXCEPTIONS
    }
    assert not bad, f"method/ must not import the rest of lsap: {sorted(bad)}"


def test_utils_leaves_import_no_lsap():
    g = import_graph()
    for leaf in ("lsap.utils.errors", "lsap.utils.io"):
        assert not g[leaf], (leaf, g[leaf])


def test_no_stale_exemptions():
    g = import_graph()
    stale = [e for e in (*EXPECTED_CYCLE_EDGES, *METHOD_EXCEPTIONS) if e[1] not in g.get(e[0], ())]
    assert not stale, f"exemptions for edges that no longer exist: {stale}"


def _sizes() -> tuple[dict[str, int], dict[str, int]]:
    mods, fns = {}, {}
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC.parent).as_posix()
        text = p.read_text()
        mods[rel] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                fns[f"{rel}:{node.name}"] = max(
                    fns.get(f"{rel}:{node.name}", 0), node.end_lineno - node.lineno + 1
                )
    return mods, fns


def _size_problems(sizes: dict[str, int], allow: dict[str, int], limit: int) -> list[str]:
    out = []
    for name, n in sorted(sizes.items()):
        if n > limit and name not in allow:
            out.append(f"{name}: {n} lines > {limit} (split it; do not add it to the allowlist)")
        elif name in allow and n > allow[name]:
            out.append(
                f"{name}: grew to {n} lines (allowlisted at {allow[name]}; it may only shrink)"
            )
    for name, n in sorted(allow.items()):
        if sizes.get(name, 0) <= limit:
            out.append(f"{name}: now within {limit} lines, remove it from the allowlist")
    return out


def test_size_rules_fail_on_a_new_offender():
    assert _size_problems({"a.py": 501}, {}, 500)
    assert _size_problems({"a.py": 600}, {"a.py": 590}, 500)  # an allowlisted one grew
    assert _size_problems({"a.py": 400}, {"a.py": 590}, 500)  # stale entry
    assert not _size_problems({"a.py": 580, "b.py": 500}, {"a.py": 590}, 500)


def test_no_module_over_500_lines_no_function_over_100():
    mods, fns = _sizes()
    problems = _size_problems(mods, MODULE_ALLOWLIST, MAX_MODULE_LINES) + _size_problems(
        fns, FUNCTION_ALLOWLIST, MAX_FUNCTION_LINES
    )
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    graph = {
        m: {n for n in deps if (m, n) not in EXPECTED_CYCLE_EDGES}
        for m, deps in import_graph().items()
    }
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


_ALONE = """
import importlib, os, sys, traceback
import numpy, torch, transformers, yaml  # third-party only, preloaded once so each fork is fast
assert not any(m == "lsap" or m.startswith("lsap.") for m in sys.modules)
bad = []
for m in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:  # a fresh process in which no lsap module has been imported yet
        try:
            importlib.import_module(m)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]):
        bad.append(m)
print(bad)
sys.exit(1 if bad else 0)
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    mods = [m for m in _modules() if m != "lsap.__main__"]
    assert len(mods) > 30
    r = subprocess.run(
        [sys.executable, "-c", _ALONE, *mods], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
