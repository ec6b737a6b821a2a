"""`lsap preflight`: should *I* use LSAP with *this* surrogate, on *my* text?

Before booking a cluster, on a sample of the user's documents (minutes on a CPU for a
SmolLM2-sized surrogate; a GPU is used when there is one, `device`):

1. Σ∩: its size, and the share of the base tokenizer's tokens of this text inside it
   (a pair whose Σ∩ cannot carry LSAP is refused: `PreflightError`, exit 2).
2. The surrogate's bits per byte on whole documents of this text (every token of each
   document predicted once, divided by the documents' UTF-8 bytes); with `base_run` (a
   short CE pilot or a finished CE run) the base's bits per byte on the same documents,
   each model with its own tokenizer, and the strength ratio = surrogate / base.
3. Auxiliary targets per base token at α 0.01 / 0.05 / 0.2 after the exclusions (gold,
   non-Σ∩, top-k), with `lsap.experiments.analyze`'s Table-1 machinery (`sample_windows`, the aux
   counter) on windows of this text.
4. The FLOPs price per base token, 1 + 2·N_s / (6·N_b), and the share of tokens lost at
   matched FLOPs (`lsap.method.flops`).
5. Where this lands on lsap's measured map (MEASURED below, from `lsap sweep strength`):
   strength ≲ 0.7 is where LSAP helped here, 0.78 and ~1 where it did not show; an overlap (share of base
   tokens inside Σ∩) near 87% is where it helped, ~63% where the gain vanished, ≤ 37% where
   LSAP was worse than CE (the overlap sweep, Σ∩ cut at random).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lsap.utils.errors import LsapError

ALPHAS = (0.01, 0.05, 0.2)

# lsap's measured map (benchmarks/results/sweep-strength-cpu-2core-2026-12-02, 2.1M base,
# python-docs, α 0.05, λ 1, 3 seeds, minimal pairs at matched FLOPs; Δ = LSAP − CE, points):
# strength = surrogate bpb / CE base bpb on the same held-out documents.
MEASURED = {
    "points": [  # (strength, Δ mean, Δ min, Δ max, pooled sign-test p), strongest first
        (0.65, 1.21, 0.37, 1.93, 0.00056),
        (0.78, 0.43, -0.57, 1.43, 0.23),
        (0.995, 0.47, -0.20, 0.87, 0.18),
    ],
    # sweep-surrogate-size-cpu-2core-2026-12-02: a 0.10x surrogate at strength 0.80 gave +0.89, p 0.012
    "small_surrogate": (0.80, 0.89, 0.012),
    # benchmarks/results/sweep-overlap-cpu-2core-2026-12-02 (16x surrogate, strength 0.65, a random
    # seeded share of Σ∩ kept): (share of the base's held-out tokens inside the kept Σ∩, Δ mean, min, max)
    "overlap": [
        (0.870, 1.21, 0.37, 1.93),
        (0.626, 0.07, -0.87, 0.70),
        (0.371, -0.83, -1.30, -0.17),
        (0.214, -1.30, -1.93, -0.40),
    ],
    "source": "benchmarks/results/sweep-{strength,surrogate-size,overlap}-cpu-2core-2026-12-02 "
    "(2.1M base, python-docs, 3-5 seeds)",
}
MIN_TOKEN_SHARE = (
    0.05  # below this share of the text's base tokens inside Σ∩, LSAP adds (almost) nothing
)


class PreflightError(LsapError, ValueError):
    """A surrogate/base pair or input that preflight cannot (or should not) judge."""


def _sample_docs(docs: list[str], max_bytes: int, seed: int) -> list[str]:
    """Whole documents in a seeded random order, skipping any that would overflow
    `max_bytes`, until at least 80% of it is filled (the smallest document if none fits)."""
    import numpy as np

    out, have = [], 0
    for i in np.random.default_rng(seed).permutation(len(docs)):
        d = docs[int(i)]
        size = len(d.encode("utf-8"))
        if not d.strip() or have + size > max_bytes:
            continue
        out.append(d)
        have += size
        if have >= 0.8 * max_bytes:
            break
    if not out:
        out = [min((d for d in docs if d.strip()), key=lambda d: len(d.encode("utf-8")))]
    return out


def _base_model_config(base_run: str | None, base_model: str | None, vocab_size: int):
    """The base's config: the run's (latest checkpoint), else a preset / config.json."""
    from lsap import model as M

    load = M.load_model_config
    if base_run:
        from lsap.train.checkpoint import latest

        ck = latest(Path(base_run))
        if ck is None:
            raise PreflightError(
                f"--base-run {base_run}: no finished checkpoint (train a short CE pilot first)"
            )
        return load(str(ck / "model")), ck / "model"
    return load(base_model, vocab_size=vocab_size), None


STRENGTH_BANDS = (0.72, 0.95)  # where_on_map's boundaries: helped | between | did not help


def where_on_map(
    strength: float | None, overlap: float, ci: list[float] | None = None
) -> list[str]:
    """Plain sentences placing (strength, overlap) on MEASURED; `ci` (the strength's 95%
    document-bootstrap interval) is quoted, and an interval across a band boundary is said."""
    pts = MEASURED["points"]
    out = []
    sm = MEASURED["small_surrogate"]
    if strength is None:
        out.append(
            "strength unknown (give --base-run with a short CE pilot on this text, or a finished CE run): "
            f"LSAP helped here with a surrogate much stronger per byte than the base (strength {pts[0][0]:.2f}: "
            f"Δ {pts[0][1]:+.2f} points, p {pts[0][4]:.2g}), not measurably at {pts[1][0]:.2f} or "
            f"~{pts[-1][0]:.2f}"
        )
    elif strength <= STRENGTH_BANDS[0]:
        out.append(
            f"strength {strength:.2f}: the regime where LSAP helped here (at {pts[0][0]:.2f}: Δ "
            f"{pts[0][1]:+.2f} [{pts[0][2]:+.2f}, {pts[0][3]:+.2f}] points on minimal pairs at matched FLOPs, "
            f"p {pts[0][4]:.2g})"
        )
        if strength < pts[0][0] - 0.1:
            out.append(f"  (stronger than any surrogate measured, {pts[0][0]:.2f}: extrapolation)")
    elif strength < STRENGTH_BANDS[1]:
        out.append(
            f"strength {strength:.2f}: between where LSAP helped ({pts[0][0]:.2f}) and where it did not "
            f"show ({pts[-1][0]:.2f}); measured here: {pts[1][0]:.2f} Δ {pts[1][1]:+.2f} (p {pts[1][4]:.2g}, "
            f"inside the noise), {sm[0]:.2f} with a 0.1× surrogate Δ {sm[1]:+.2f} (p {sm[2]:.2g}) — "
            "expect a small gain at best"
        )
    else:
        out.append(
            f"strength {strength:.2f}: ~1 or weaker, where LSAP did not help here (at {pts[-1][0]:.2f}: Δ "
            f"{pts[-1][1]:+.2f} [{pts[-1][2]:+.2f}, {pts[-1][3]:+.2f}], p {pts[-1][4]:.2g}, inside the "
            "noise); a surrogate no stronger than the base only costs FLOPs"
        )
    if strength is not None and ci:
        out[0] = out[0].replace(
            f"strength {strength:.2f}:", f"strength {strength:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]:", 1
        )
        cut = [x for x in STRENGTH_BANDS if ci[0] < x <= ci[1]]
        if cut:
            out.append(
                f"  (its 95% interval over documents crosses the map's boundary at {cut[0]:.2f}: "
                "the sentence for the neighbouring band may apply; score more text with --bpb-bytes)"
            )
    ov = MEASURED["overlap"]  # highest share first
    hi, mid, low = ov[0], ov[1], ov[-1]
    if overlap >= hi[0] - 0.07:
        out.append(
            f"overlap {overlap:.0%} of your base tokens inside Σ∩: where LSAP helped here ({hi[0]:.0%}: Δ "
            f"{hi[1]:+.2f} [{hi[2]:+.2f}, {hi[3]:+.2f}])"
            + (" (above the measured range)" if overlap > hi[0] + 0.05 else "")
        )
    elif overlap >= mid[0] - 0.05:
        out.append(
            f"overlap {overlap:.0%}: near where the gain vanished here ({mid[0]:.0%}: Δ {mid[1]:+.2f} "
            f"[{mid[2]:+.2f}, {mid[3]:+.2f}]; Σ∩ cut at random from {hi[0]:.0%}) — expect little or nothing"
        )
    else:
        out.append(
            f"overlap {overlap:.0%}: where LSAP was worse than CE here ({ov[2][0]:.0%}: Δ {ov[2][1]:+.2f}; "
            f"{low[0]:.0%}: Δ {low[1]:+.2f}; Σ∩ cut at random) — the surrogate costs its FLOPs for few targets"
            + (f"; below {low[0]:.0%}: not measured" if overlap < low[0] - 0.05 else "")
        )
    out.append(
        f"(measured map: {MEASURED['source']}; one base size and domain, small models — a guide, not a "
        "guarantee)"
    )
    return out


def _run_tokenizer(base: str | None, base_run: str, base_dir: Path):
    """The base tokenizer when a base run is given: the run's own (saved with its
    checkpoint); a `--base` naming another tokenizer is refused (its Σ∩ and the run's bits
    per byte would describe two different bases)."""
    from lsap.data.tokenizer import load_tokenizer, tokenizer_hash

    run_tok = load_tokenizer(str(base_dir))
    if base is not None and tokenizer_hash(load_tokenizer(base)) != tokenizer_hash(run_tok):
        raise PreflightError(
            f"--base {base} is not the tokenizer of --base-run {base_run} (trained with "
            f"{len(run_tok):,} tokens, {base_dir}); drop --base to use the run's tokenizer"
        )
    return (base or str(base_dir)), run_tok


def _resolve_base(base, base_run, base_model, base_vocab_size):
    """(base name, tokenizer, padded vocabulary, model config, checkpoint model dir or None)."""
    from lsap.data.tokenizer import load_tokenizer, padded_vocab_size

    if base_run:
        base_cfg, base_dir = _base_model_config(base_run, base_model, 0)
        base, base_tok = _run_tokenizer(base, base_run, base_dir)
        return base, base_tok, int(base_cfg.vocab_size), base_cfg, base_dir
    base = base or "dolma2"
    base_tok = load_tokenizer(base)
    vocab = base_vocab_size or padded_vocab_size(base_tok)
    return base, base_tok, vocab, *_base_model_config(None, base_model, vocab)


def preflight(
    base: str | None,
    surrogate: str,
    data: str,
    *,
    base_run: str | None = None,
    base_model: str = "olmo2-1b",
    base_vocab_size: int | None = None,
    n: int = 32,
    seq_len: int = 512,
    batch_size: int = 8,
    k: int = 15,
    alphas=ALPHAS,
    device: str = "auto",
    max_documents: int | None = 5000,
    bpb_bytes: int = 50_000,
    seed: int = 0,
    log=print,
) -> dict:
    """Measure and print; returns every number (see the module docstring). base None:
    dolma2, or with `base_run` the run's tokenizer (another `base` is then refused)."""
    import time

    from lsap.data.corpora import check_dataset_spec
    from lsap.experiments.analyze import read_documents, sample_windows
    from lsap.surrogate.load import (
        check_model_spec,
        inference_device_dtype,
        load_surrogate_with_map,
    )
    from lsap.train.loggers import quiet_libraries

    quiet_libraries()
    t0 = time.time()
    check_model_spec(surrogate)
    check_dataset_spec(data)
    dev, dtype = inference_device_dtype(device)
    base, base_tok, vocab, base_cfg, base_dir = _resolve_base(
        base, base_run, base_model, base_vocab_size
    )
    docs = read_documents(data, max_documents)
    log(
        f"[preflight] {len(docs):,} documents of {data}; surrogate {surrogate} on {dev} "
        f"({str(dtype).removeprefix('torch.')})"
    )

    sw = load_surrogate_with_map(surrogate, base_tok, vocab, dtype=dtype, device=dev)
    vmap = sw.vmap
    try:
        xb = sample_windows(docs, base_tok, n, seq_len + 1, seed, name=data)
    except LsapError as e:
        raise PreflightError(f"{e}") from None
    rep = vmap.report(xb.reshape(-1))
    share = rep["corpus_share_in_intersection"]
    res = {
        "base": base,
        "surrogate": surrogate,
        "data": data,
        "device": str(dev),
        "intersection": rep["intersection"],
        "intersection_over_base": rep["intersection_over_base"],
        "token_share_in_intersection": share,
        "windows": n,
        "seq_len": seq_len,
    }
    log(
        f"  Σ∩: {rep['intersection']:,} tokens ({rep['intersection_over_base']:.1%} of the base vocabulary "
        f"{rep['base_vocab']:,}, {rep['intersection_over_surrogate']:.1%} of the surrogate's "
        f"{rep['surrogate_vocab']:,}); your text's base tokens inside Σ∩: {share:.1%} "
        f"({rep['corpus_tokens']:,} tokens)"
    )
    _check_intersection(vmap, share, surrogate, base)
    res["aux_per_token"] = _aux_per_token(sw, xb, dev, alphas, k, batch_size)
    log(
        "  auxiliary targets per base token after the exclusions (k "
        + str(k)
        + "): "
        + ", ".join(f"α {a}: {res['aux_per_token'][str(a)]:.3f}" for a in alphas)
    )
    sample = _sample_docs(docs, bpb_bytes, seed)
    res.update(
        _bpb_and_strength(
            sw, sample, base_dir, base_run, seq_len, batch_size, dev, dtype, seed, log
        )
    )
    res.update(_flops_price(sw.model.config, base_cfg, base_run, base_model, log))
    res["map"] = where_on_map(res.get("strength"), share, res.get("strength_ci"))
    log("  on lsap's measured map: " + "\n    ".join(res["map"]))
    res["wall_s"] = round(time.time() - t0, 1)
    log(f"[preflight] done in {res['wall_s']:.0f}s")
    return res


def _check_intersection(vmap, share: float, surrogate: str, base) -> None:
    """Refuse a surrogate whose Σ∩ is too weak to give positions targets."""
    weak = vmap.weakness()
    if weak or share < MIN_TOKEN_SHARE:
        raise PreflightError(
            f"{surrogate} cannot carry LSAP for base {base} on this text: "
            + (
                weak
                or f"only {share:.1%} of its base tokens lie in Σ∩ "
                f"(< {MIN_TOKEN_SHARE:.0%}), so almost no position gets targets"
            )
            + "; choose a surrogate whose tokenizer shares more tokens with the base's"
        )


def _aux_per_token(sw, xb, dev, alphas, k: int, batch_size: int) -> dict[str, float]:
    """Auxiliary targets per base token at each α (Table-1 machinery of
    lsap.experiments.analyze), over the sampled windows `xb`."""
    from lsap.experiments.analyze import _aux_batch

    tot = {a: [0, 0] for a in alphas}
    with torch.inference_mode():
        for i in range(0, len(xb), batch_size):
            for a, (s_, c) in _aux_batch(
                sw.model, xb[i : i + batch_size].to(dev), sw.vmap, alphas, k, sw.pad_id
            ).items():
                tot[a][0] += s_
                tot[a][1] += c
    return {str(a): tot[a][0] / max(tot[a][1], 1) for a in alphas}


def _bpb_and_strength(
    sw, sample, base_dir, base_run, seq_len, batch_size, dev, dtype, seed, log
) -> dict:
    """Bits per byte on the same whole documents, each model with its own tokenizer; with a
    base run, strength (surrogate / base) and its document-bootstrap interval."""
    from lsap.eval.metrics import bpb_on_documents
    from lsap.eval.strength import strength_interval, strength_line

    kw = dict(seq_len=seq_len, batch_size=batch_size, per_document=True)
    s_res = bpb_on_documents(sw.model, sw.tokenizer, sample, **kw)
    s_bpb, s_tok, nbytes = s_res["bpb"], s_res["tokens"], s_res["bytes"]
    res = dict(surrogate_bpb=s_bpb, bpb_documents=len(sample), bpb_bytes=nbytes)
    line = f"  surrogate bits per byte: {s_bpb:.3f} ({len(sample)} documents, {nbytes:,} bytes, {s_tok:,} tokens)"
    if base_dir is not None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        bm = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype).to(dev)
        b_res = bpb_on_documents(bm, AutoTokenizer.from_pretrained(base_dir), sample, **kw)
        st = strength_interval(s_res["doc_nll"], b_res["doc_nll"], s_res["doc_bytes"], seed=seed)
        b_bpb = b_res["bpb"]
        res.update(base_bpb=b_bpb, strength=st["strength"], strength_ci=list(st["ci"]))
        line += f"; base ({base_run}) {b_bpb:.3f} → {strength_line(st)} (surrogate / base; < 1: stronger)"
        del bm
    log(line)
    return res


def _flops_price(s_cfg, base_cfg, base_run, base_model, log) -> dict:
    """LSAP's FLOPs per base token relative to CE (METHOD §5) and the tokens it costs."""
    from lsap.method.flops import count_params, inference_flops_per_token, train_flops_per_token

    n_s, n_b = count_params(s_cfg), count_params(base_cfg)
    price = 1 + inference_flops_per_token(s_cfg) / train_flops_per_token(base_cfg)
    log(
        f"  FLOPs per base token: 1 + 2·N_s/(6·N_b) = {price:.3f} (N_s {n_s / 1e6:,.1f}M, N_b {n_b / 1e6:,.1f}M"
        f"{' from ' + base_run if base_run else ' = ' + base_model}): at matched FLOPs LSAP trains "
        f"{1 - 1 / price:.1%} fewer tokens than CE"
    )
    return dict(surrogate_params=n_s, base_params=n_b, flops_price=price, tokens_lost=1 - 1 / price)
