import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lsap.method.token_table import token_table
from lsap.method.vocab import VocabMap


def _text():
    from pydoc_data.topics import topics

    return list(topics.values())


def byte_level_tok(
    vocab_size=400, specials=("<|endoftext|>",), eos="<|endoftext|>", split_digits=False, texts=None
):
    tok = Tokenizer(models.BPE())
    pre = [pre_tokenizers.ByteLevel(add_prefix_space=False)]
    if split_digits:  # vary the pre-tokenizer: trained on the same text, vocabularies then differ
        pre = [pre_tokenizers.Digits(individual_digits=True)] + pre
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts or _text(), tr)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos)


def sentencepiece_tok(vocab_size=300):
    """A Llama-style tokenizer: Metaspace '▁', byte-fallback pieces <0x00>..<0xFF> in the
    model vocabulary (ids 3..258, as SentencePiece conversions lay them out)."""
    tmp = Tokenizer(models.BPE(unk_token="<unk>"))
    tmp.pre_tokenizer = pre_tokenizers.Metaspace()
    tmp.train_from_iterator(
        _text()[:200],
        trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
        ),
    )
    spec = json.loads(tmp.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{i:02X}>": 3 + i for i in range(256)})
    for key, _ in sorted(spec["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(key, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def pair():
    return byte_level_tok(400), byte_level_tok(
        520,
        specials=("<|endoftext|>", "<|im_end|>"),
        eos="<|im_end|>",
        split_digits=True,
        texts=[t.upper() for t in _text()],
    )


def test_byte_level_map_is_a_bijection_on_same_bytes(pair):
    base, surr = pair
    vm = VocabMap.from_tokenizers(
        base, surr, base_vocab_size=len(base) + 8, surrogate_vocab_size=len(surr) + 3
    )
    b2s, s2b = vm.base_to_surrogate, vm.surrogate_to_base
    assert b2s.numel() == len(base) + 8 and s2b.numel() == len(surr) + 3
    assert (b2s[len(base) :] == -1).all() and (s2b[len(surr) :] == -1).all()  # padded rows
    mapped = (b2s >= 0).nonzero().squeeze(-1)
    assert 100 < mapped.numel() < len(base)
    assert torch.equal(s2b[b2s[mapped]], mapped)
    assert int((s2b >= 0).sum()) == mapped.numel()
    for b in mapped.tolist():
        s = int(b2s[b])
        # every pair decodes to the same text (all 256 single bytes included)
        assert base.convert_tokens_to_string(
            [base.convert_ids_to_tokens(b)]
        ) == surr.convert_tokens_to_string([surr.convert_ids_to_tokens(s)])
    # eos matched by role: base <|endoftext|> ↔ surrogate's document separator, not <|im_end|>
    eb, es = (
        base.convert_tokens_to_ids("<|endoftext|>"),
        surr.convert_tokens_to_ids("<|endoftext|>"),
    )
    assert int(b2s[eb]) == es and vm.role_pairs["eos"] == (eb, es)
    assert int(s2b[surr.convert_tokens_to_ids("<|im_end|>")]) == -1


def test_strings_outside_the_intersection_are_unmapped(pair):
    base, surr = pair
    vm = VocabMap.from_tokenizers(base, surr)
    tb, ts = token_table(base), token_table(surr)
    surr_strings = set(ts.strings.values())
    for b, by in tb.strings.items():
        assert (int(vm.base_to_surrogate[b]) >= 0) == (by in surr_strings)


def test_sentencepiece_keys_canonicalise_to_bytes(pair):
    sp = sentencepiece_tok()
    t = token_table(sp)
    assert t.kind == "sentencepiece"
    vocab = sp.get_vocab()
    assert t.strings[vocab["<0x0A>"]] == b"\n"
    sp_words = [k for k in vocab if k.startswith("▁") and len(k) > 2 and k not in ("<unk>",)]
    assert sp_words
    assert t.strings[vocab[sp_words[0]]] == sp_words[0].replace("▁", " ").encode()
    # A byte-level vocabulary and a SentencePiece one meet on the same bytes.
    base = pair[0]
    vm = VocabMap.from_tokenizers(base, sp)
    nl_b = base.convert_tokens_to_ids("Ċ")
    # the piece the tokenizer itself produces wins over its byte-fallback twin
    assert int(vm.base_to_surrogate[nl_b]) == vocab.get("\n", vocab["<0x0A>"])
    assert "\x01" not in vocab  # only reachable through byte fallback
    assert int(vm.base_to_surrogate[base.convert_tokens_to_ids("ā")]) == vocab["<0x01>"]
    space_the = [k for k in vocab if k == "▁the"]
    if space_the and "Ġthe" in base.get_vocab():
        assert int(vm.base_to_surrogate[base.convert_tokens_to_ids("Ġthe")]) == vocab["▁the"]
    # bos/eos/unk matched by role only where both sides declare them
    assert "eos" not in vm.role_pairs or vm.role_pairs["eos"][1] == vocab["</s>"]


def test_save_load_and_refuse_other_tokenizers(tmp_path, pair):
    base, surr = pair
    vm = VocabMap.from_tokenizers(base, surr)
    vm.save(tmp_path)
    info = json.loads((tmp_path / "vocab_map.json").read_text())
    assert info["report"]["intersection"] == vm.size
    vm2 = VocabMap.load(tmp_path, base=base, surrogate=surr)
    assert torch.equal(vm2.base_to_surrogate, vm.base_to_surrogate)
    with pytest.raises(ValueError, match="another surrogate tokenizer"):
        VocabMap.load(tmp_path, base=base, surrogate=byte_level_tok(450))
    with pytest.raises(FileNotFoundError):
        VocabMap.load(tmp_path / "nope")


def test_report_corpus_share(pair):
    base, surr = pair
    vm = VocabMap.from_tokenizers(base, surr)
    ids = base("\n\n".join(_text()[:50]), add_special_tokens=False)["input_ids"]
    r = vm.report(ids, base_tokenizer=base)
    share = sum(int(vm.base_to_surrogate[i]) >= 0 for i in ids) / len(ids)
    assert r["corpus_share_in_intersection"] == pytest.approx(share)
    assert r["intersection"] == vm.size
    assert r["intersection_over_base"] == pytest.approx(vm.size / len(base))
    assert r["top_missing"] and all(
        int(vm.base_to_surrogate[m["id"]]) == -1 for m in r["top_missing"]
    )
    with pytest.raises(ValueError, match="corpus ids"):
        vm.report([len(base) + 100])


def test_keep_fraction_ablation(pair):
    base, surr = pair
    full = VocabMap.from_tokenizers(base, surr)
    half = VocabMap.from_tokenizers(base, surr, keep_fraction=0.5, seed=1)
    assert 0.35 * full.size < half.size < 0.65 * full.size
    kept = half.base_to_surrogate >= 0
    assert torch.equal(half.base_to_surrogate[kept], full.base_to_surrogate[kept])
    assert half.role_pairs == full.role_pairs


def test_bad_inputs(pair):
    base, surr = pair
    with pytest.raises(ValueError, match="smaller than the base tokenizer"):
        VocabMap.from_tokenizers(base, surr, base_vocab_size=10)
    with pytest.raises(TypeError, match="cannot read a vocabulary"):
        VocabMap.from_tokenizers(object(), surr)
    # disjoint vocabularies: an empty Σ∩ is an error, not a silent no-op
    tok = Tokenizer(models.WordLevel({"zzz": 0, "yyy": 1}, unk_token="yyy"))
    tok2 = Tokenizer(models.WordLevel({"aaa": 0, "bbb": 1}, unk_token="bbb"))
    with pytest.raises(ValueError, match="empty"):
        VocabMap.from_tokenizers(
            PreTrainedTokenizerFast(tokenizer_object=tok),
            PreTrainedTokenizerFast(tokenizer_object=tok2),
        )
