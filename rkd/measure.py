"""Model size and cost, counted one way everywhere: parameters, and FLOPs by torch's own counter."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(*modules: nn.Module, trainable_only: bool = False) -> int:
    """Parameters of the given modules (distinct tensors; ``trainable_only`` skips frozen ones)."""
    seen = {id(p): p for m in modules for p in m.parameters() if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in seen.values())


def count_flops(fn: nn.Module | Callable, *args) -> int:
    """FLOPs of one forward call, counted by ``torch.utils.flop_counter`` (per image when args hold one image).

    A module is counted in eval mode and put back as it was. Autograd stays on: the counter's module
    tracker hooks the graph and fails without it.
    """
    module = fn if isinstance(fn, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            fn(*args)
    finally:
        if module is not None:
            module.train(was_training)
    return int(counter.get_total_flops())
