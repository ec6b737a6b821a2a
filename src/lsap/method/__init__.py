"""The method itself (METHOD.md §1–§4): the vocabulary map Σ∩, auxiliary-target selection, the loss, λ/LR schedules and FLOPs accounting."""
