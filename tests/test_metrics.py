"""Held-out metrics that show what LSAP's objective does (issue: top-1/top-5 accuracy, the
split by the number m of auxiliary targets, the mass on targets) against naive loops, and
the minimal-pair suite: deterministic, well-formed, chance-level for a model that cannot
tell the variants apart."""

from __future__ import annotations

import math

import pytest
import torch

from lsap.eval import metrics, tasks
from lsap.eval import run as ev


class _FixedLM(torch.nn.Module):
    """A 'model' whose logits are a fixed function of the input ids (so a naive loop can
    recompute them): logits[b, t] = table[input_ids[b, t]]."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g) * 2)
        self.emb = torch.nn.Embedding(vocab, 1)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[input_ids])


def _fake_targets(vocab, seed=1, k=3):
    """targets(inp, lab): a deterministic pseudo-random aux set per position (never the gold)."""

    def fn(inp, lab):
        g = torch.Generator().manual_seed(seed + int(inp.sum()))
        ids = torch.randint(0, vocab, lab.shape + (k,), generator=g)
        mask = torch.rand(lab.shape + (k,), generator=g) < 0.4
        mask &= ids != lab.unsqueeze(-1)
        return torch.where(mask, ids, -1), mask

    return fn


def test_heldout_metrics_match_naive_loop(tiny_world):
    from lsap.data.shards import TokenShards

    data = tiny_world["data"]
    vocab = 640  # ≥ the base tokenizer's 600 ids
    model = _FixedLM(vocab).eval()
    targets = _fake_targets(vocab)
    seq_len, bs, nb = 16, 3, 4
    got = metrics.heldout_metrics(
        model, data, seq_len=seq_len, batch_size=bs, max_batches=nb, targets=targets
    )

    # naive: one position at a time, in float64
    shards = TokenShards(data, "val")
    nll_sum = top1 = top5 = n = 0
    buckets = {"0": [0, 0.0, 0], "1": [0, 0.0, 0], "2+": [0, 0.0, 0]}
    mass, n_mass = 0.0, 0
    for inp, lab in shards.iter_eval_batches(seq_len, bs, nb):
        ids, mask = targets(inp, lab)
        for b in range(inp.shape[0]):
            for t in range(inp.shape[1]):
                z = model.table[int(inp[b, t])].detach().double()
                logp = z - torch.logsumexp(z, 0)
                gold = int(lab[b, t])
                nll = -float(logp[gold])
                better = int((logp > logp[gold]).sum())  # tokens strictly more likely than the gold
                nll_sum += nll
                top1 += better < 1
                top5 += better < 5
                n += 1
                m = int(mask[b, t].sum())
                key = "0" if m == 0 else "1" if m == 1 else "2+"
                buckets[key][0] += 1
                buckets[key][1] += nll
                buckets[key][2] += better < 1
                if m:
                    mass += sum(
                        math.exp(float(logp[int(i)])) for i, on in zip(ids[b, t], mask[b, t]) if on
                    )
                    n_mass += 1
    assert got["val_tokens"] == n
    assert got["val_loss"] == pytest.approx(nll_sum / n, rel=1e-5)
    assert got["val_top1"] == pytest.approx(top1 / n)
    assert got["val_top5"] == pytest.approx(top5 / n)
    assert got["target_mass"] == pytest.approx(mass / n_mass, rel=1e-5)
    for key, (c, s, t1) in buckets.items():
        assert got["by_m"][key]["share"] == pytest.approx(c / n)
        if c:
            assert got["by_m"][key]["loss"] == pytest.approx(s / c, rel=1e-5)
            assert got["by_m"][key]["top1"] == pytest.approx(t1 / c)
    assert sum(1 for c, _, _ in buckets.values() if c) >= 2  # the split is exercised
    # without targets: the same loss and accuracies, no split
    plain = metrics.heldout_metrics(model, data, seq_len=seq_len, batch_size=bs, max_batches=nb)
    assert plain["val_loss"] == pytest.approx(got["val_loss"]) and "by_m" not in plain
    assert metrics.heldout_loss(model, data, seq_len=seq_len, batch_size=bs, max_batches=nb)[
        "val_loss"
    ] == pytest.approx(got["val_loss"])


def test_source_targets_are_the_trainers_targets(tiny_world):
    """The eval split uses exactly the trainer's target selection (lsap.method.targets.propose_targets)."""
    from transformers import AutoModelForCausalLM

    from lsap.data.tokenizer import load_tokenizer
    from lsap.method.targets import propose_targets
    from lsap.method.vocab import VocabMap

    sur = AutoModelForCausalLM.from_pretrained(tiny_world["surrogate"]).eval()
    vmap = VocabMap.from_tokenizers(
        load_tokenizer(tiny_world["base_tok"]),
        load_tokenizer(tiny_world["surrogate"]),
        base_vocab_size=640,
        surrogate_vocab_size=sur.config.vocab_size,
    )
    from lsap.surrogate.sources import OnlineTargets

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 600, (2, 12), generator=g)
    y = torch.randint(0, 600, (2, 12), generator=g)
    ids, mask = metrics.source_targets(OnlineTargets(sur, vmap, 5, 0.02))(x, y)
    ref = propose_targets(sur, x, y, vmap, 5, 0.02)
    assert torch.equal(ids, ref[0]) and torch.equal(mask, ref[1])
    assert mask.any()
    # gold_outside=skip: the trainer's rule (no targets where the gold is outside the intersection)
    ids, mask = metrics.source_targets(OnlineTargets(sur, vmap, 5, 0.02, gold_outside="skip"))(x, y)
    skip = ref.drop_gold_outside(y, vmap)
    assert torch.equal(mask, skip.mask) and not torch.equal(mask, ref[1])


DOCS = [
    "The quick brown fox jumps over the lazy dog near the river bank today. It was a very sunny day "
    "in the small town of Springfield. Many people walked along the quiet streets after lunch.",
    "Python is a programming language that lets you work quickly and integrate systems. The standard "
    "library provides many modules for common tasks. You can read the documentation to learn more about it.",
    "A function returns a value when the body finishes without errors. The caller receives that value "
    "and may store it in a variable. Errors raise exceptions that the caller can handle with care.",
]


def test_minimal_pairs_deterministic_and_well_formed():
    a = tasks.minimal_pair_examples(DOCS, seed=7)
    b = tasks.minimal_pair_examples(DOCS, seed=7)
    assert a == b
    assert set(a) == set(tasks.PAIR_TASKS)
    assert all(len(v) > 0 for v in a.values())
    for ex in a["lsap_pairs_swap"]:
        good, bad = ex["choices"]
        assert ex["label"] == 0 and good != bad and ex["context"] == ""
        gw, bw = good.split(" "), bad.split(" ")
        diff = [i for i, (x, y) in enumerate(zip(gw, bw)) if x != y]
        assert (
            len(gw) == len(bw) and len(diff) == 2 and diff[1] == diff[0] + 1
        )  # two adjacent words swapped
        assert (gw[diff[0]], gw[diff[1]]) == (bw[diff[1]], bw[diff[0]]) and diff[0] >= 1
        assert sorted(good) == sorted(bad)
    for ex in a["lsap_pairs_replace"]:
        good, bad = ex["choices"]
        gw, bw = good.split(" "), bad.split(" ")
        diff = [i for i, (x, y) in enumerate(zip(gw, bw)) if x != y]
        assert (
            len(gw) == len(bw) and len(diff) == 1 and diff[0] >= 1
        )  # one word replaced, not the first
        assert bw[diff[0]].isalpha() and bw[diff[0]].lower() != gw[diff[0]].lower()
    docs_text = [" ".join(d.split()) for d in DOCS]
    for ex in a["lsap_pairs_nextsent"]:
        good, bad = ex["choices"]
        own = next(d for d in docs_text if ex["context"] in d)
        assert (ex["context"] + " " + good) in own  # the real next sentence
        assert bad not in own  # the distractor comes from another document
    assert tasks.minimal_pair_examples(DOCS, seed=8) != a  # the seed matters


def test_minimal_pairs_replace_is_frequency_matched():
    """The replacement word lies within `band` ranks of the original in the held-out frequency ranking."""
    from collections import Counter

    band = 3
    ex = tasks.minimal_pair_examples(DOCS, seed=1, band=band)["lsap_pairs_replace"]
    sents = [s for d in tasks._pair_sentences(DOCS, 6, 30, 220) for s in d]
    freq = Counter(w.lower() for s in sents for w in s.split(" ") if w.isalpha())
    ranked = [w for w, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))]
    for e in ex:
        gw, bw = e["choices"][0].split(" "), e["choices"][1].split(" ")
        i = next(i for i, (x, y) in enumerate(zip(gw, bw)) if x != y)
        assert abs(ranked.index(gw[i].lower()) - ranked.index(bw[i].lower())) <= band


def test_pair_tasks_in_offline_build(tiny_world, tmp_path):
    info = tasks.build_offline_tasks(tiny_world["data"], tmp_path / "t", max_examples=50)
    for name in tasks.PAIR_TASKS:
        assert info["counts"][name] > 0
        assert (tmp_path / "t" / f"{name}.yaml").is_file()
    assert ev.resolve_tasks("pairs") == tasks.PAIR_TASKS


@pytest.mark.slow  # lm-eval itself takes ~2-3 min here
def test_score_choices_equals_lm_eval(tiny_world, tmp_path):
    """The native minimal-pair scorer gives lm-evaluation-harness's acc / acc_norm on the same
    examples (lm-eval is the reference; the native path is ~100× faster on tiny models)."""
    pytest.importorskip("lm_eval")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    info = tasks.build_offline_tasks(tiny_world["data"], tmp_path / "t", max_examples=40)
    tok = AutoTokenizer.from_pretrained(tiny_world["base_tok"])
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=640,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=0.3,
        )
    ).eval()
    ref = ev.run_lm_eval(
        model,
        tok,
        tasks.PAIR_TASKS,
        include_path=info["dir"],
        batch_size=16,
        max_length=512,
        bootstrap_iters=0,
        log_file=tmp_path / "lm_eval.log",
    )
    import json

    for task in tasks.PAIR_TASKS:
        rows = [
            json.loads(x) for x in (tmp_path / "t" / f"{task}.jsonl").read_text().splitlines() if x
        ]
        got = tasks.score_choices(
            model, tok, rows, batch_size=7
        )  # odd batch: padding must not matter
        assert got["n"] == len(rows) > 0
        assert got["acc"] == pytest.approx(ref[task]["metrics"]["acc"], abs=1e-9), task
        assert got["acc_norm"] == pytest.approx(ref[task]["metrics"]["acc_norm"], abs=1e-9), task


# --------------------------------------------------------------------------- contamination, equal length
def test_drop_seen_removes_pairs_whose_text_occurs_in_training():
    """Hand-built: a held-out sentence that also occurs (whitespace differing, glued to other text)
    inside a training document loses its swap and replace pairs, and a next-sentence pair whose
    context + answer occurs in training is dropped; a sentence found only in part is kept."""
    held = [
        "The quick brown fox jumps over the lazy dog near the river bank. Many small birds sang "
        "loudly in the tall green trees that morning. Every child in the village knew the old song by heart.",
        "A careful reader checks every claim against the original source text. Nobody trusts a number "
        "that nobody can reproduce from the raw data.",
    ]
    train = [
        "Something else first.XThe quick   brown fox jumps over\nthe lazy dog near the river bank. Then more.",
        "Every child in the village knew the old song",  # only a part: kept
        "A careful reader checks every claim against the original source text. Nobody trusts a number "
        "that nobody can reproduce from the raw data.",
    ]
    ex = tasks.minimal_pair_examples(held, seed=3)
    fox = "The quick brown fox jumps over the lazy dog near the river bank."
    child = "Every child in the village knew the old song by heart."
    assert any(e["choices"][0] == fox for e in ex["lsap_pairs_swap"])
    kept, removed = tasks.drop_seen(ex, train)
    for name in ("lsap_pairs_swap", "lsap_pairs_replace"):
        orig = [e["choices"][0] for e in ex[name]]
        left = [e["choices"][0] for e in kept[name]]
        assert fox not in left and child in left
        gone = {
            "The quick brown fox jumps over the lazy dog near the river bank.",
            "A careful reader checks every claim against the original source text.",
            "Nobody trusts a number that nobody can reproduce from the raw data.",
        }
        assert left == [s for s in orig if s not in gone]
        assert removed[name] == len(orig) - len(left) == sum(s in gone for s in orig)
    nxt = [e for e in ex["lsap_pairs_nextsent"] if e["context"].startswith("A careful reader")]
    assert nxt and not any(
        e["context"].startswith("A careful reader") for e in kept["lsap_pairs_nextsent"]
    )
    assert tasks.occurs_in(["tiny text", "not there at all"], ["a tiny text here"]) == {0}


def test_score_choices_equal_length_subset(tiny_world):
    """The equal-length subset is exactly the examples whose two choices encode to the same number
    of tokens, and its accuracy is the naive accuracy over them (log-likelihoods recomputed naively)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_world["base_tok"])
    torch.manual_seed(1)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=640,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=0.3,
        )
    ).eval()
    examples = tasks.minimal_pair_examples(DOCS, seed=5)["lsap_pairs_replace"]
    examples += [
        {
            "context": "",
            "choices": ["The value is returned.", "The value is returnedxyzzy."],
            "label": 0,
        },
        {"context": "", "choices": ["A module.", "A statement."], "label": 0},
    ]
    got = tasks.score_choices(model, tok, examples, batch_size=3)
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    naive_eq, naive_ok = [], []
    for ex in examples:
        ids = [tok(" " + c, add_special_tokens=False)["input_ids"] for c in ex["choices"]]
        lls = []
        for x in ids:
            seq = torch.tensor([[prefix] + x])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=seq[:, :-1]).logits.double(), -1)[0]
            lls.append(float(logp[torch.arange(len(x)), torch.tensor(x)].sum()))
        naive_eq.append(len({len(x) for x in ids}) == 1)
        naive_ok.append(lls.index(max(lls)) == ex["label"])
    assert got["same_tokens"] == naive_eq and 0 < sum(naive_eq) < len(examples)
    assert got["correct"] == naive_ok
    eq = [ok for ok, e in zip(naive_ok, naive_eq) if e]
    assert got["equal_length"]["n"] == len(eq)
    assert got["equal_length"]["acc"] == pytest.approx(sum(eq) / len(eq))
    back = tasks.unpack_scores(tasks.pack_scores(got))
    assert back["acc"].tolist() == got["correct"] and back["same_tokens"].tolist() == naive_eq
    assert back["acc_norm"].tolist() == got["correct_norm"]
    import numpy as np

    assert np.allclose(back["ll"], np.asarray(got["ll"]), rtol=1e-6)
