"""`lsap train --config X.yaml key=value ... [--resume] [--dry-run]` (also under torchrun)."""

from __future__ import annotations

from lsap.cli.args import add_no_progress, progress_off


def add_arguments(p) -> None:
    p.add_argument("--config", help="YAML run config (see configs/)")
    p.add_argument(
        "overrides", nargs="*", help="dotlist overrides, e.g. lsap.alpha=0.01 train.max_steps=100"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in out_dir"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the model overrides, print the resolved config as YAML, then exit (trains nothing)",
    )
    add_no_progress(p)


def run(args) -> int:
    from lsap.config import check_model_overrides, load_config, validate

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        check_model_overrides(cfg.model.preset, cfg.model.overrides)
        print(cfg.to_yaml())
        return 0
    validate(cfg, deep=True)  # paths, out_dir, override keys: before anything is built
    from lsap.train.loop import train

    with progress_off(args):
        out = train(cfg, resume=args.resume)
    print(f"run directory: {out}")
    return 0
