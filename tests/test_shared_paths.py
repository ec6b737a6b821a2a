"""One place per concept (issue 11): the run builder, the held-out loss loop, the window rule,
the matched-FLOPs arithmetic and the corpus ids each serve every caller."""

import pytest
import torch

from lsap.config import load_config


def _cfg(world, out, *extra):
    return load_config(
        None,
        [
            f"data.dir={world['data']}",
            f"out_dir={out}",
            "data.seq_len=32",
            "train.batch_size=4",
            "train.micro_batch_size=2",
            "train.max_steps=2",
            "train.eval_batches=2",
            *extra,
        ],
    )


def test_trainer_holds_what_the_builder_built_and_its_val_loss_is_evals(tiny_world, tmp_path):
    from lsap.eval.metrics import heldout_loss
    from lsap.train.loop import Components, Trainer

    t = Trainer.from_config(_cfg(tiny_world, tmp_path / "r"))
    try:
        assert isinstance(t.c, Components)  # held once, not copied field by field
        got = t.evaluate()
        want = heldout_loss(
            t.c.lm,
            tiny_world["data"],
            seq_len=32,
            batch_size=2,
            max_batches=2,
            tokenizer=t.c.tokenizer,
        )
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
        assert got["val_bpb"] == pytest.approx(
            want["val_bpb"], rel=1e-5
        )  # bytes of the same labels
    finally:
        t.close()


def test_one_window_rule(tiny_world):
    from lsap.data.shards import SequenceLoader, TokenShards

    T = 16
    train, val = TokenShards(tiny_world["data"], "train"), TokenShards(tiny_world["data"], "val")
    assert val.n_windows(T) == (len(val) - 1) // T
    assert val.window(3, T).tolist() == val.tokens(3 * T, T + 1).tolist()
    x, y = next(val.iter_eval_batches(T, 4))
    for j in range(4):
        w = torch.from_numpy(val.window(j, T))
        assert (x[j] == w[:-1]).all() and (y[j] == w[1:]).all()
    batch = SequenceLoader(train, T, 4, seed=1).next_batch()
    for row, j in enumerate(batch.window_ids.tolist()):
        assert (batch.input_ids[row] == torch.from_numpy(train.window(j, T))[:-1]).all()


def test_matched_flops_is_the_command_and_tokens_at_matched_flops():
    import argparse

    from lsap.cli.flops import add_arguments, compute
    from lsap.method.flops import matched_flops, tokens_at_matched_flops
    from lsap.model import model_config

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = [
        "--base",
        "olmo2-tiny",
        "--base-vocab-size",
        "512",
        "--surrogate",
        "olmo2-tiny",
        "--flops",
        "1e12",
    ]
    r = matched_flops("olmo2-tiny", "olmo2-tiny", flops=1e12, base_vocab_size=512)
    assert compute(p.parse_args(args)) == r
    b, s = model_config("olmo2-tiny", vocab_size=512), model_config("olmo2-tiny")
    assert r["lsap_tokens_at_matched_flops"] == tokens_at_matched_flops(1e12, b, s)
    assert r["ce_tokens"] == tokens_at_matched_flops(1e12, b)
    with pytest.raises(ValueError):
        matched_flops(tokens=1.0, flops=1.0)


def test_encode_documents_batches_do_not_change_ids(tiny_world):
    from lsap.data.tokenizer import encode_documents, load_tokenizer

    tok = load_tokenizer(tiny_world["base_tok"])
    docs = [f"document {i} " * (i % 5 + 1) for i in range(11)]
    one = [a.tolist() for a in encode_documents(docs, tok, batch_docs=1)]
    many = [a.tolist() for a in encode_documents(iter(docs), tok, batch_docs=4)]
    assert one == many and len(one) == 11 and all(isinstance(a, list) for a in one)
    assert len({ids[-1] for ids in one}) == 1  # every document ends with the one separator
