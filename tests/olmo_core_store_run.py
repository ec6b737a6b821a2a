"""The store half of tests/test_olmo_core.py: one LSAP OLMo-core run with the online
surrogate and one from a store built in the OLMo-core window layout (needs
`build_store(window_layout=...)`, `olmo_paths`)."""

from __future__ import annotations

import json
from pathlib import Path

from tests import olmo_core_worker as W


def _read(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if "train/CE loss" in r["metrics"]:
            out[r["step"]] = r["metrics"]
    return out


def run_store_vs_online(world, tmp_path, seq_len: int = 32, k: int = 4, alpha: float = 0.05):
    from lsap.data.shards import TokenShards, prepare
    from lsap.data.tokenizer import load_tokenizer
    from lsap.surrogate.load import load_surrogate_with_map
    from lsap.surrogate.sources import OnlineTargets, TargetSpec
    from lsap.surrogate.store import TargetStore
    from lsap.surrogate.store_build import build_store, olmo_paths

    data = tmp_path / "data"
    prepare(
        world["base_tok"], "pydoc-topics", data, val_fraction=0.1, max_tokens=6000, progress=False
    )
    store_dir = tmp_path / "store"
    build_store(
        world["surrogate"],
        str(data),
        seq_len,
        store_dir,
        k=k,
        min_alpha=0.01,
        batch_size=8,
        device="cpu",
        dtype="float32",
        window_layout="olmo",
        progress=False,
    )
    store = TargetStore(store_dir)
    vmap = store.load_vocab_map()
    vocab = vmap.base_vocab_size
    # through lsap's one factory: check_run (shards, seq_len, surrogate weights, OLMo-core layout) applies
    stored = TargetSpec(
        store=store,
        k=k,
        alpha=alpha,
        store_surrogate=world["surrogate"],
        dtype="float32",
        batch_size=8,
    ).build(shards=TokenShards(data, "train"), seq_len=seq_len, window_layout="olmo")
    sw = load_surrogate_with_map(
        world["surrogate"], load_tokenizer(world["base_tok"]), vocab, dtype=None, device="cpu"
    )
    online = OnlineTargets(
        sw.model, sw.vmap, k, alpha, pad_id=sw.pad_id, flops_per_token=stored.flops_per_token
    )
    paths = olmo_paths(data)
    out = {}
    for name, src in (("online", online), ("stored", stored)):
        a = W.parse(
            [
                "--data",
                str(data),
                "--out",
                str(tmp_path / f"{name}.jsonl"),
                "--save-folder",
                str(tmp_path / name),
                "--module",
                "lsap",
                "--lam",
                "1.0",
                "--steps",
                "2",
                "--seq-len",
                str(seq_len),
            ]
        )
        W.build_and_fit(a, source=src, paths=paths, vocab_size=vocab)
        out[name] = _read(tmp_path / f"{name}.jsonl")
    return out["online"], out["stored"]
