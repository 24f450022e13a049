"""Weight-space interpolation between a checkpoint and a run fine-tuned from it (WiSE-FT,
Wortsman et al. 2022: the halfway point often keeps the original's robustness to other data and
part of the fine-tuned gain). Both must be the same network with the same config.

    python -m dl_perception.training.weight_interpolation ORIGINAL FINE_TUNED OUT [--alpha 0.5]
"""
from __future__ import annotations

import argparse

from .. import models
from ..core.checkpoint import CheckpointError, load_checkpoint


def interpolate_checkpoints(original: str, fine_tuned: str, out: str, alpha: float = 0.5):
    """(1 - alpha) x original + alpha x fine_tuned for every floating-point tensor (batch-norm
    statistics included); integer buffers (batch counters) come from the fine-tuned run."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base, tuned = load_checkpoint(original), load_checkpoint(fine_tuned)
    if base.model != tuned.model or base.config != tuned.config:
        raise CheckpointError(f"{original} and {fine_tuned} are not the same network and config")
    if set(base.state_dict) != set(tuned.state_dict):
        raise CheckpointError(f"{original} and {fine_tuned} hold different tensors")
    state = {key: ((1 - alpha) * value + alpha * tuned.state_dict[key]).to(value.dtype)
             if value.is_floating_point() else tuned.state_dict[key]
             for key, value in base.state_dict.items()}
    cls = models.model_class(base.model)
    model = cls(cls.Config(**tuned.config))
    model.load_state_dict(state)
    model.save(out, info={"made_by": f"weight interpolation (WiSE-FT): {1 - alpha:g} x {original} "
                                     f"+ {alpha:g} x {fine_tuned}",
                          "original": base.info, "fine_tuned": tuned.info})
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original")
    parser.add_argument("fine_tuned")
    parser.add_argument("out")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the fine-tuned run")
    args = parser.parse_args(argv)
    interpolate_checkpoints(args.original, args.fine_tuned, args.out, args.alpha)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
