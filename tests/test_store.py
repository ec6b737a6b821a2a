"""The offline target store: lookups equal online selection, training from it equals
online training, resume is byte-identical, mismatched or damaged stores are refused."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lsap.cli.main import main as cli
from lsap.data.shards import SequenceLoader, TokenShards, prepare
from lsap.method.targets import propose_targets
from lsap.surrogate.load import load_surrogate
from lsap.surrogate.store import EXACT_ALPHAS, StoreError, TargetStore, quantise_probs
from lsap.surrogate.store_build import build_store

T = 32


@pytest.fixture(scope="module")
def small(tiny_world, tmp_path_factory):
    """A small corpus (~90 windows of 32) and its cache, built through the CLI."""
    root = tmp_path_factory.mktemp("cache")
    prepare(
        tiny_world["base_tok"],
        "pydoc-topics",
        root / "data",
        val_fraction=0.1,
        max_tokens=3000,
        progress=False,
    )
    rc = cli(
        [
            "store",
            "build",
            "--surrogate",
            tiny_world["surrogate"],
            "--data",
            str(root / "data"),
            "--seq-len",
            str(T),
            "--k",
            "4",
            "--min-alpha",
            "0.01",
            "--out",
            str(root / "c"),
            "--batch-size",
            "8",
            "--chunk-windows",
            "24",
            "--no-progress",
        ]
    )
    assert rc == 0
    return {"data": str(root / "data"), "cache": str(root / "c"), "root": root}


def test_lookup_equals_online_selection(tiny_world, small):
    cache = TargetStore(small["cache"], verify=True)
    shards = TokenShards(small["data"])
    vmap = cache.load_vocab_map()
    model, stok = load_surrogate(tiny_world["surrogate"])
    assert cache.n_windows == (len(shards) - 1) // T
    loader = SequenceLoader(shards, T, batch_size=3, seed=1)
    total = 0
    for _ in range(6):  # the windows and batch composition training would see
        batch = loader.next_batch()
        x, y = batch
        for k, alpha in ((4, 0.01), (4, 0.05), (2, 0.2), (3, 0.02), (1, 0.1)):
            ids, mask, probs = propose_targets(
                model, x, y, vmap, k, alpha, pad_id=stok.pad_token_id or 0
            )
            cids, cmask, cprobs = cache.lookup(batch.window_ids, k, alpha)
            assert torch.equal(cmask, mask) and torch.equal(cids, ids), (k, alpha)
            torch.testing.assert_close(cprobs, probs, rtol=2**-9, atol=0)
            total += int(mask.sum())
    assert total > 100  # the surrogate is peaked: the comparison is not vacuous
    # the whole store: counts above α recorded at build time agree with the lookups
    m = cache.manifest
    all_mask = cache.lookup(np.arange(cache.n_windows), 4, 0.05)[1]
    assert int(all_mask.sum()) == m["candidates_above"]["0.05"]
    with pytest.raises(StoreError, match="min_alpha"):
        cache.lookup([0], 4, 0.005)
    with pytest.raises(StoreError, match="k=5"):
        cache.lookup([0], 5, 0.05)


@pytest.mark.parametrize("gold_outside", ["keep", "skip"])
def test_online_and_stored_sources_agree(tiny_world, small, gold_outside):
    """Both TargetSource implementations return the same AuxTargets, each applying gold_outside."""
    from lsap.method.targets import AuxTargets, drop_gold_outside
    from lsap.surrogate.sources import OnlineTargets, StoredTargets

    cache = TargetStore(small["cache"])
    vmap = cache.load_vocab_map()
    model, stok = load_surrogate(tiny_world["surrogate"])
    online = OnlineTargets(
        model, vmap, 4, 0.02, pad_id=stok.pad_token_id or 0, batch_size=2, gold_outside=gold_outside
    )
    stored = StoredTargets(cache, vmap, 4, 0.02, gold_outside=gold_outside)
    loader = SequenceLoader(TokenShards(small["data"]), T, batch_size=5, seed=2)
    dropped = 0
    for _ in range(3):
        batch = loader.next_batch()
        a, b = online(batch), stored(batch)
        assert isinstance(a, AuxTargets) and isinstance(b, AuxTargets)
        assert (
            torch.equal(a.mask, b.mask)
            and torch.equal(a.ids, b.ids)
            and int(a.count) == int(b.count)
        )
        full = propose_targets(
            model, batch.input_ids, batch.labels, vmap, 4, 0.02, pad_id=stok.pad_token_id or 0
        )
        want = (
            drop_gold_outside(full.mask, batch.labels, vmap)
            if gold_outside == "skip"
            else full.mask
        )
        assert torch.equal(a.mask, want)
        assert (a.ids[~a.mask] == -1).all()
        dropped += int(full.count - a.count)
    assert (dropped > 0) == (gold_outside == "skip")


def test_float16_probs_compare_exactly_at_exact_alphas():
    rng = np.random.default_rng(0)
    for a in EXACT_ALPHAS:
        a32 = np.float32(a)
        # float32 values densely around α, including α itself and its float16 rounding cell
        steps = rng.integers(-3000, 3000, 4000)
        p = (a32.view(np.int32) + steps).astype(np.int32).view(np.float32)
        p = np.concatenate([p, [a32, np.float32(np.float16(a32))]])
        q = quantise_probs(p, EXACT_ALPHAS)
        assert np.array_equal(q > np.float16(a32), p > a32), a
        assert np.all(np.abs(q.astype(np.float32) - p) <= 3 * 2.0**-11 * p)
        naive = p.astype(np.float16)
        assert not np.array_equal(
            naive > np.float16(a32), p > a32
        )  # plain rounding would flip some


def _cfg(world, data, out, *extra):
    from lsap.config import load_config

    return load_config(
        None,
        [
            f"data.dir={data}",
            f"out_dir={out}",
            f"data.seq_len={T}",
            "train.batch_size=4",
            "train.micro_batch_size=2",
            "train.max_steps=3",
            "train.log_every=1",
            "optim.warmup_steps=2",
            "train.eval_batches=1",
            "loss=lsap",
            "lsap.k=3",
            "lsap.alpha=0.05",
            f"surrogate.model={world['surrogate']}",
            *extra,
        ],
    )


def _rows(out):
    rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == "train"}


def test_training_from_cache_equals_online(tiny_world, small, tmp_path):
    from lsap.train.loop import Trainer

    Trainer.from_config(_cfg(tiny_world, small["data"], tmp_path / "on")).run()
    Trainer.from_config(
        _cfg(
            tiny_world,
            small["data"],
            tmp_path / "off",
            "surrogate.source=store",
            f"surrogate.store_dir={small['cache']}",
        )
    ).run()
    a, b = _rows(tmp_path / "on"), _rows(tmp_path / "off")
    assert a[1]["aux_per_token"] > 0
    for s in (1, 2, 3):
        for key in ("loss", "ce", "aux", "aux_per_token", "grad_norm", "flops_surrogate", "flops"):
            assert b[s][key] == a[s][key], (s, key)
        assert a[s]["flops_surrogate_paid"] == a[s]["flops_surrogate"] > 0
        assert b[s]["flops_surrogate_paid"] == 0
    info = json.loads((tmp_path / "off" / "targets.json").read_text())
    m = TargetStore(small["cache"]).manifest
    assert (
        info["build_flops"] == m["flops"]["build_flops"] == m["flops"]["per_token"] * m["positions"]
    )
    assert m["flops"]["per_token"] * 3 * 4 * T == b[3]["flops_surrogate"]


def test_build_resumes_byte_identical(tiny_world, small, tmp_path):
    args = dict(k=4, min_alpha=0.01, batch_size=8, chunk_windows=24, progress=False)
    seen = []

    def kill(c):
        seen.append(c)
        if c == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_store(
            tiny_world["surrogate"], small["data"], T, tmp_path / "c", on_chunk=kill, **args
        )
    with pytest.raises(StoreError, match="did not finish"):
        TargetStore(tmp_path / "c")
    build_store(
        tiny_world["surrogate"], small["data"], T, tmp_path / "c", on_chunk=seen.append, **args
    )
    ref = Path(small["cache"])
    n = len(json.loads((ref / "manifest.json").read_text())["chunks"])
    assert n >= 3 and seen == [0, 1] + list(range(2, n))  # chunks 0 and 1 were not redone
    files = sorted(
        p.relative_to(ref)
        for p in ref.rglob("*")
        if p.is_file() and p.name != "build_stats.json" and not p.name.startswith("verified-")
    )
    assert Path("manifest.json") in files and len([f for f in files if f.suffix == ".bin"]) == n
    for f in files:
        assert (tmp_path / "c" / f).read_bytes() == (ref / f).read_bytes(), f
    with pytest.raises(StoreError, match="--k: the store was built with 4, this command says 5"):
        build_store(tiny_world["surrogate"], small["data"], T, tmp_path / "c", **{**args, "k": 5})


def test_refuses_mismatched_or_damaged_cache(tiny_world, small, tmp_path):
    from lsap.train.loop import Trainer

    cache = TargetStore(small["cache"])
    shards = TokenShards(small["data"])
    assert cache.check_run(shards, T, 4, 0.01, surrogate=tiny_world["surrogate"]) == []
    m = cache.manifest
    assert m["surrogate"]["logits_dtype"] == "float32" and m["surrogate"]["dtype"] == "float32"
    # other online settings serve the run but warn: targets near p = α may differ
    same = cache.check_run(
        shards, T, 4, 0.01, dtype="float32", batch_size=m["layout"]["batch_size"]
    )
    assert same == []
    notes = cache.check_run(
        shards, T, 4, 0.01, dtype="bfloat16", batch_size=m["layout"]["batch_size"] + 1
    )
    assert len(notes) == 2 and "bfloat16" in notes[0] and "batch size" in notes[1]
    with pytest.raises(StoreError, match="seq_len 32"):
        cache.check_run(shards, 64, 4, 0.05)
    with pytest.raises(StoreError, match="k=5"):
        cache.check_run(shards, T, 5, 0.05)
    with pytest.raises(StoreError, match="min_alpha"):
        cache.check_run(shards, T, 4, 0.001)
    with pytest.raises(StoreError, match="other data"):
        cache.check_run(TokenShards(tiny_world["data"]), T, 4, 0.05)
    other = tmp_path / "other_surrogate"
    shutil.copytree(tiny_world["surrogate"], other)
    model, _ = load_surrogate(other)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(other)
    with pytest.raises(StoreError, match="weights"):
        cache.check_run(shards, T, 4, 0.05, surrogate=str(other))
    # through the trainer: a clear error, not misaligned training
    with pytest.raises(StoreError, match="seq_len"):
        Trainer.from_config(
            _cfg(
                tiny_world,
                small["data"],
                tmp_path / "r",
                "surrogate.source=store",
                f"surrogate.store_dir={small['cache']}",
                "data.seq_len=16",
            )
        )
    with pytest.raises(StoreError, match="other data"):
        Trainer.from_config(
            _cfg(
                tiny_world,
                tiny_world["data"],
                tmp_path / "r2",
                "surrogate.source=store",
                f"surrogate.store_dir={small['cache']}",
            )
        )
    # damaged stores
    bad = tmp_path / "bad"
    shutil.copytree(small["cache"], bad)
    chunk = bad / "chunks" / "000001.bin"
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    TargetStore(bad)  # same size: only the checksum sees it
    with pytest.raises(StoreError, match="sha256"):
        TargetStore(bad, verify=True)
    chunk.write_bytes(bytes(data[:-7]))
    with pytest.raises(StoreError, match="truncated"):
        TargetStore(bad)
    (bad / "manifest.json").write_text("{")
    with pytest.raises(StoreError, match="corrupt manifest"):
        TargetStore(bad)
    with pytest.raises(StoreError, match="no manifest"):
        TargetStore(tmp_path / "nothing")


def test_info_cli(small, capsys):
    assert cli(["store", "info", small["cache"], "--json", "--verify", "--alpha", "0.07"]) == 0
    d = json.loads(capsys.readouterr().out)
    cache = TargetStore(small["cache"])
    m = cache.manifest
    assert d["bytes_per_token"] == m["bytes"] / m["positions"]
    assert m["bytes"] == sum((Path(small["cache"]) / c["path"]).stat().st_size for c in m["chunks"])
    # 1 count byte + 3 id bytes + 2 prob bytes per candidate + 8 bytes per window offset
    n_chunks = len(m["chunks"])
    assert m["bytes"] == m["positions"] + 5 * m["candidates"] + 8 * (m["n_windows"] + n_chunks)
    allw = np.arange(cache.n_windows)
    for a in ("0.01", "0.05", "0.2", "0.07"):
        n = int(cache.lookup(allw, 4, float(a))[1].sum())
        assert d["candidates_per_position"][a] == n / m["positions"], a
    assert d["covers"]["shards_sha256"] == m["data"]["shards_sha256"]
    assert cli(["store", "info", small["cache"]]) == 0
    out = capsys.readouterr().out
    assert "bytes per token" in out and "α=0.05" in out
    assert (
        cli(["store", "info", str(Path(small["root"]) / "missing")]) == 2
    )  # one line on stderr, no traceback
    assert "no manifest" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_lookup_equals_online(tiny_world, small, tmp_path):
    """A real pretrained surrogate (SmolLM2-135M-Instruct) over a few windows, k = 15."""
    build_store(
        "smollm2",
        small["data"],
        64,
        tmp_path / "c",
        k=15,
        min_alpha=0.01,
        batch_size=2,
        chunk_windows=2,
        max_windows=4,
        progress=False,
    )
    cache = TargetStore(tmp_path / "c", verify=True)
    shards = TokenShards(small["data"])
    model, stok = load_surrogate("smollm2")
    vmap = cache.load_vocab_map()
    windows = [3, 0, 2]
    rows = torch.from_numpy(np.stack([shards.tokens(w * 64, 65) for w in windows]))
    n = 0
    for k, alpha in ((15, 0.01), (15, 0.05), (15, 0.2), (5, 0.05)):
        ids, mask, probs = propose_targets(
            model, rows[:, :-1], rows[:, 1:], vmap, k, alpha, pad_id=stok.pad_token_id or 0
        )
        cids, cmask, cprobs = cache.lookup(windows, k, alpha)
        assert torch.equal(cmask, mask) and torch.equal(cids, ids), (k, alpha)
        torch.testing.assert_close(cprobs, probs, rtol=2**-9, atol=0)
        n += int(mask.sum())
    assert n > 0


# --------------------------------------------------------------------------- window layouts
def _olmo_dataset(paths, shards, T_):
    from olmo_core.data import NumpyFSLDataset

    ds = NumpyFSLDataset(
        *paths,
        sequence_length=T_,
        pad_token_id=0,
        eos_token_id=shards.eos_id,
        vocab_size=shards.vocab_size,
        dtype=np.dtype(shards.manifest["dtype"]).type,
    )
    ds.prepare()
    return ds


def test_olmo_layout_matches_olmo_core_instances(tiny_world, small, tmp_path):
    """window_layout olmo: window i = OLMo-core's NumpyFSLDataset instance i (T tokens,
    labels the T-1 next inside it), and lookups equal online selection on those rows."""
    pytest.importorskip("olmo_core")
    from lsap.method.targets import IGNORE
    from lsap.surrogate.store_build import Windows, olmo_paths

    # small shards: several files, instances never straddle a file
    prepare(
        tiny_world["base_tok"],
        "pydoc-topics",
        tmp_path / "d",
        val_fraction=0.1,
        max_tokens=3000,
        shard_tokens=700,
        progress=False,
    )
    shards = TokenShards(tmp_path / "d")
    assert len(shards.info["shards"]) >= 3
    ds = _olmo_dataset(olmo_paths(tmp_path / "d"), shards, T)
    win = Windows(shards, T, "olmo")
    assert win.n_windows == len(ds) < shards.n_windows(T)  # floor(len/T) per file
    x, y = win.rows(range(len(ds)))
    for i in range(len(ds)):
        assert np.array_equal(x[i], ds[i]["input_ids"].numpy()), i
    assert (y[:, -1] == IGNORE).all() and np.array_equal(y[:, :-1], x[:, 1:])
    build_store(
        tiny_world["surrogate"],
        tmp_path / "d",
        T,
        tmp_path / "s",
        k=4,
        min_alpha=0.01,
        batch_size=4,
        chunk_windows=8,
        window_layout="olmo",
        progress=False,
    )
    store = TargetStore(tmp_path / "s", verify=True)
    assert store.window_layout == "olmo" and store.n_windows == len(ds)
    model, stok = load_surrogate(tiny_world["surrogate"])
    vmap = store.load_vocab_map()
    idx = [5, 0, len(ds) - 1]
    for k, alpha in ((4, 0.01), (2, 0.05)):
        want = propose_targets(
            model,
            torch.from_numpy(x[idx]),
            torch.from_numpy(y[idx]),
            vmap,
            k,
            alpha,
            pad_id=stok.pad_token_id or 0,
        )
        got = store.lookup(idx, k, alpha)
        assert torch.equal(got.mask, want.mask) and torch.equal(got.ids, want.ids)
        assert not got.mask[:, -1].any() and got.mask.any()  # the last position has no label
    # the layout is checked at use, by name, both ways
    with pytest.raises(StoreError, match="window_layout 'olmo'.*--window-layout lsap"):
        store.check_run(shards, T, 4, 0.05)
    assert store.check_run(shards, T, 4, 0.05, window_layout="olmo") == []
    with pytest.raises(StoreError, match="window_layout 'lsap'.*--window-layout olmo"):
        TargetStore(small["cache"]).check_run(
            TokenShards(small["data"]), T, 4, 0.05, window_layout="olmo"
        )
    from lsap.train.loop import Trainer, TrainingError

    with pytest.raises(
        (TrainingError, StoreError), match="window_layout 'olmo'"
    ):  # named, before any step
        Trainer.from_config(
            _cfg(
                tiny_world,
                tmp_path / "d",
                tmp_path / "r",
                "surrogate.source=store",
                f"surrogate.store_dir={tmp_path / 's'}",
            )
        )


def _write_dolma_arrays(
    stream: np.ndarray, eos: int, directory: Path, dtype="uint16", parts=2
) -> list[Path]:
    """`dolma tokens` output format: part-*.npy raw memmaps (no header) of whole documents
    (each ending with EOS), plus a .csv.gz of (start, end, path, id) per document."""
    import gzip

    ends = np.nonzero(stream == eos)[0] + 1
    assert len(ends) >= 2
    cut = ends[len(ends) // 2 - 1]
    directory.mkdir(parents=True)
    out = []
    for j, (a, b) in enumerate(((0, cut), (cut, len(stream)))):
        p = directory / f"part-0-{j:05d}.npy"
        mm = np.memmap(p, dtype=dtype, mode="w+", shape=(b - a,))
        mm[:] = stream[a:b]
        mm.flush()
        e = ends[(ends > a) & (ends <= b)] - a
        starts = np.concatenate([[0], e[:-1]])
        with gzip.open(directory / f"part-0-{j:05d}.csv.gz", "wt") as f:
            f.writelines(f"{s},{t},src.jsonl,{i}\n" for i, (s, t) in enumerate(zip(starts, e)))
        out.append(p)
    return out


def test_dolma_token_arrays_are_read_in_place(tiny_world, small, tmp_path, capsys):
    from lsap.data.arrays import link_token_arrays
    from lsap.surrogate.store_build import olmo_paths
    from lsap.utils.errors import DataError

    src = TokenShards(small["data"])
    stream = src.tokens(0, len(src))
    paths = _write_dolma_arrays(stream, src.eos_id, tmp_path / "dolma")
    assert (
        cli(
            [
                "prepare",
                "--tokenizer",
                tiny_world["base_tok"],
                "--from-arrays",
                str(tmp_path / "dolma"),
                "--token-dtype",
                "uint16",
                "--out",
                str(tmp_path / "linked"),
                "--quiet",
            ]
        )
        == 0
    )
    linked = TokenShards(tmp_path / "linked", verify=True)
    assert not list((tmp_path / "linked").glob("*/*"))  # nothing copied
    assert olmo_paths(tmp_path / "linked") == [str(p.resolve()) for p in paths]
    assert len(linked) == len(src) and np.array_equal(linked.tokens(0, len(linked)), stream)
    assert linked.info["documents"] == int((stream == src.eos_id).sum())
    a = SequenceLoader(src, T, batch_size=4, seed=3)
    b = SequenceLoader(linked, T, batch_size=4, seed=3)
    for _ in range(5):  # lsap's loader gives the same windows from the dolma arrays
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.window_ids, y.window_ids)
    # a wrong dtype is caught (the arrays do not end with EOS / hold ids beyond the vocabulary)
    with pytest.raises(DataError, match="EOS|vocabulary|whole number"):
        link_token_arrays(
            tiny_world["base_tok"],
            tmp_path / "dolma",
            tmp_path / "bad",
            token_dtype="uint32",
            progress=False,
        )
    with pytest.raises(DataError, match="no token arrays"):
        link_token_arrays(
            tiny_world["base_tok"], tmp_path / "nothing", tmp_path / "bad2", progress=False
        )
