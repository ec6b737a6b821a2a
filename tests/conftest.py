"""Session fixtures: a tiny tokenizer pair, token shards and a tiny random surrogate.

Built once per test session in a temp dir (a few seconds), offline.

Also, for the whole suite:
- its own cache root: `LSAP_CACHE` = REPO/.pytest_cache/lsap (git-ignored, kept across
  sessions so converted tokenizers / dequantised GGUFs are built once), or
  `$LSAP_TEST_CACHE`; the suite never writes to ~/.cache/lsap.
- no silent skips in CI: with `CI=true` (or `LSAP_STRICT_SKIPS=1`; .ci/run sets both)
  a skip whose reason is not listed in tests/expected_skips.txt fails the session, so
  a missing extra cannot turn tests into green skips.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest

EXPECTED_SKIPS = Path(__file__).with_name("expected_skips.txt")


def pytest_configure(config):
    cache = os.environ.get("LSAP_TEST_CACHE") or str(
        Path(config.rootpath) / ".pytest_cache" / "lsap"
    )
    os.environ["LSAP_CACHE"] = cache  # subprocesses (lsap CLI runs) inherit it
    Path(cache).mkdir(parents=True, exist_ok=True)


def strict_skips() -> bool:
    return (
        os.environ.get("CI", "").lower() in ("1", "true")
        or os.environ.get("LSAP_STRICT_SKIPS") == "1"
    )


def expected_skips(path: Path = EXPECTED_SKIPS) -> list[str]:
    """Glob patterns matched against `nodeid: reason`, one per line ('#' comments)."""
    if not path.is_file():
        return []
    return [
        ln.strip()
        for ln in path.read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]


_SKIPS: list[str] = []  # "nodeid: reason" of every skip this session


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPS.append(f"{report.nodeid}: {reason.removeprefix('Skipped: ')}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if not strict_skips():
        return
    allowed = expected_skips()
    unexpected = [s for s in _SKIPS if not any(fnmatch.fnmatch(s, a) for a in allowed)]
    if unexpected:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [
            "",
            f"{len(unexpected)} unexpected skip(s) (CI=true; allowed patterns: {EXPECTED_SKIPS}):",
            *(f"  {s}" for s in unexpected),
        ]
        for ln in lines:
            tr.write_line(ln, red=True) if tr is not None else print(ln)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """dict(base_tok=dir, surrogate=dir (random Llama + its tokenizer), data=shards dir)."""
    from pydoc_data.topics import topics

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lsap.data.shards import prepare
    from lsap.data.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("world")
    texts = list(topics.values())
    train_bpe(texts, 600, root / "base_tok")
    # another text and pre-tokenizer (digits split), so the vocabularies are not nested
    surr = train_bpe([t.lower() for t in texts], 700, root / "surrogate", split_digits=True)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(surr),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=0.5,
    )  # peaked outputs: aux targets at α=0.05
    LlamaForCausalLM(cfg).save_pretrained(root / "surrogate")
    prepare(str(root / "base_tok"), "pydoc-topics", root / "data", val_fraction=0.1, progress=False)
    return {
        "base_tok": str(root / "base_tok"),
        "surrogate": str(root / "surrogate"),
        "data": str(root / "data"),
        "root": root,
    }
