"""docs/cluster.md's recipe table (the cluster commands the README points to) parses: each
`torchrun` launch with torch's own launcher parser, each `lsap ...` with lsap's parser, each
`examples/olmo_core/train.py ...` with the example's parser and its config + overrides with
`lsap.config.load_config`; the `dolma tokens` command's dtype and ids fit the dolma2 tokenizer
(issue 29 "Must show": the README's cluster commands parse). Nothing runs. Commands are the
inline-code spans of the table's rows that start with a program and have arguments ("one `lsap
eval` per run" names a command, it is not one); a span ending in "…" stands
for "the same arguments" and is checked with the 1-node row's arguments."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.test_docs_commands import _lsap_argvs

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cluster.md"
EXAMPLE = "examples/olmo_core/train.py"
# the table's placeholders, as a user fills them in
PLACEHOLDERS = {"$NODE_RANK": "1", "$MASTER": "10.0.0.1"}


def _recipe_spans() -> list[str]:
    text = DOC.read_text()
    table = text.split("## The recipe", 1)[1].split("\n## ", 1)[0]
    spans = []
    for row in (r for r in table.splitlines() if r.startswith("|")):
        for s in re.findall(r"`([^`]+)`", row):
            if s.split()[0] in ("lsap", "torchrun", "python", "dolma") and len(s.split()) > 2:
                spans.append(s)
    return spans


SPANS = _recipe_spans()


def _fill(span: str) -> list[str]:
    for k, v in PLACEHOLDERS.items():
        span = span.replace(k, v)
    return shlex.split(span)


def _same_args(span: str) -> str:
    """ "… -m lsap store build …" → the 1-node row's arguments of that command."""
    head = span.rstrip("… ").strip()
    tail = head.split(" -m ", 1)[1] if " -m " in head else head
    full = next(s for s in SPANS if tail in s and not s.endswith("…") and s != span)
    return head + full.split(tail, 1)[1]


def _example_parser():
    sys.path.insert(0, str(ROOT / "examples" / "olmo_core"))
    try:
        import train
    finally:
        sys.path.pop(0)
    return train.build_parser()


def test_the_recipe_has_its_commands():
    kinds = {s.split()[0] for s in SPANS}
    assert {"lsap", "torchrun", "python", "dolma"} <= kinds, SPANS
    assert sum(EXAMPLE in s for s in SPANS) >= 3  # 1 node, N nodes, export


@pytest.mark.parametrize("span", SPANS, ids=[s[:60] for s in SPANS])
def test_recipe_command_parses(span, capsys):
    if span.endswith("…"):
        span = _same_args(span)
    argv = _fill(span)
    if argv[0] == "dolma":
        return  # test_dolma_command_fits_the_tokenizer
    if argv[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        a = get_args_parser().parse_args(argv[1:])
        if a.module:
            assert a.training_script == "lsap", span
    if EXAMPLE in span:
        args = _example_parser().parse_args(argv[argv.index(EXAMPLE) + 1 :])
        from lsap.config import load_config

        load_config(str(ROOT / args.config), args.overrides)
        return
    import importlib

    cli = importlib.import_module("lsap.cli.main")
    found = _lsap_argvs(" ".join(shlex.quote(w) for w in argv))
    assert found, f"no lsap command in {span!r}"
    try:
        parsed = cli.build_parser().parse_args(found[0])
    except SystemExit:
        pytest.fail(f"`{span}` does not parse: {capsys.readouterr().err}")
    assert parsed.command


def test_store_overrides_and_z_loss_of_the_train_row_parse():
    """Step 3's "(+ `surrogate.source=store surrogate.store_dir=stores/qwen3`; `--z-loss 1e-5`)"."""
    from lsap.config import load_config

    row = next(s for s in SPANS if s.startswith("torchrun --nproc_per_node=8 " + EXAMPLE))
    extra = ["surrogate.source=store", "surrogate.store_dir=stores/qwen3", "--z-loss", "1e-5"]
    argv = _fill(row)
    args = _example_parser().parse_args(argv[argv.index(EXAMPLE) + 1 :] + extra)
    cfg = load_config(str(ROOT / args.config), args.overrides)
    assert cfg.surrogate.source == "store" and args.z_loss == 1e-5


def test_dolma_command_fits_the_tokenizer():
    """uint32 for dolma2's 100,278 ids, its EOS and pad ids, specials encoded as text."""
    from lsap.data.tokenizer import load_tokenizer

    (span,) = [s for s in SPANS if s.startswith("dolma ")]
    argv = _fill(span)
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert argv[1] == "tokens", span
    assert flags["--tokenizer.name_or_path"] == "allenai/dolma2-tokenizer"
    tok = load_tokenizer("dolma2")
    assert len(tok) > 2**16 and flags["--dtype"] == "uint32"
    assert int(flags["--tokenizer.eos_token_id"]) == tok.eos_token_id
    assert int(flags["--tokenizer.pad_token_id"]) == tok.pad_token_id
    assert flags["--tokenizer.encode_special_tokens"] == "true"
