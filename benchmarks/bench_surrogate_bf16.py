"""How often bf16 surrogate inference changes the selected auxiliary targets vs fp32.

    python benchmarks/bench_surrogate_bf16.py                      # SmolLM2-135M, CPU, 4,096 tokens
    python benchmarks/bench_surrogate_bf16.py --windows 64 --device cuda

The surrogate (default `smollm2`, SmolLM2-135M-Instruct, the model scripts/install.sh
installs) reads stdlib text (pydoc topics) in windows of --seq-len tokens, base tokenizer =
its own (Σ∩ = its whole vocabulary, so every position counts). Reference: body and head in
fp32. Compared:
  body-bf16/head-fp32   what `propose_targets` does on a GPU today (bf16 body, fp32 head GEMM)
  body-bf16/head-bf16   a full bf16 surrogate (logits rounded to bf16 before softmax)
  body-fp32/head-bf16   only the head in bf16
For each α: the fraction of positions whose selected set (ids, k ≤ 15, p > α) differs from
the reference, and the symmetric difference of selected candidates / reference candidates.
"""

from __future__ import annotations

import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--surrogate", default="smollm2")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--alphas", default="0.01,0.05,0.2")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from pydoc_data.topics import topics

    from lsap.method.targets import (
        select_aux_targets,
        select_aux_targets_from_hidden,
        surrogate_body_and_head,
    )
    from lsap.surrogate.load import load_surrogate, load_surrogate_with_map

    t0 = time.perf_counter()
    model, tok = load_surrogate(args.surrogate, dtype=torch.float32, device=args.device)
    vmap = load_surrogate_with_map(args.surrogate, tok, tokenizer=tok, device=args.device).vmap
    text = "\n\n".join(topics[k] for k in sorted(topics))
    T, n = args.seq_len, args.windows
    ids = torch.tensor(tok(text)["input_ids"][: n * T + 1])
    assert len(ids) == n * T + 1, "not enough text"
    x = torch.stack([ids[i * T : i * T + T] for i in range(n)]).to(args.device)
    y = torch.stack([ids[i * T + 1 : i * T + T + 1] for i in range(n)]).to(args.device)
    print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    body, head = surrogate_body_and_head(model)
    hidden = {}
    with torch.inference_mode():
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            body.to(dt)
            hidden[name] = torch.cat(
                [body(input_ids=x[i : i + 4]).last_hidden_state for i in range(0, n, 4)]
            )
            print(f"body {name} done at {time.perf_counter() - t0:.1f} s", flush=True)
        body.to(torch.float32)
        w = head.weight.float()

        def sel(h, head_dtype, alpha):
            if head_dtype == "fp32":
                return select_aux_targets_from_hidden(h, w, y, vmap, args.k, alpha)
            logits = torch.nn.functional.linear(h.to(torch.bfloat16), w.to(torch.bfloat16))
            return select_aux_targets(logits, y, vmap, args.k, alpha)

        print(
            f"{args.surrogate}: {n} windows x {T} = {n * T} tokens on {args.device}, k = {args.k}"
        )
        for alpha in (float(a) for a in args.alphas.split(",")):
            ref_ids, ref_mask = sel(hidden["fp32"], "fp32", alpha)
            ref = torch.where(ref_mask, ref_ids, -1).sort(-1).values
            n_ref = int(ref_mask.sum())
            for body_dt, head_dt in (("bf16", "fp32"), ("bf16", "bf16"), ("fp32", "bf16")):
                got_ids, got_mask = sel(hidden[body_dt], head_dt, alpha)
                got = torch.where(got_mask, got_ids, -1).sort(-1).values
                pos = float((got != ref).any(-1).float().mean())
                sym = 0
                for a, b in zip(ref.reshape(-1, args.k).tolist(), got.reshape(-1, args.k).tolist()):
                    sa, sb = {v for v in a if v >= 0}, {v for v in b if v >= 0}
                    sym += len(sa ^ sb)
                print(
                    f"  alpha={alpha:<5} body-{body_dt}/head-{head_dt}: positions differing "
                    f"{pos:.4%}, candidates differing {sym}/{n_ref} = {sym / max(n_ref, 1):.4%} "
                    f"(ref {n_ref / (n * T):.2f} per position)"
                )
    print(f"wall {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
