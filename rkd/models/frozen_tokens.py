"""Stage 2, phase A's data: the frozen stage-1 student's tokens, computed once per split.

The codec learns over thousands of steps; with the student and its head frozen, its tokens do not
change, so a full student forward/backward per codec step would be wasted work. Tokens are kept
in memory (Fashion-MNIST: 54k x 16 tokens x 64 floats, ~220 MB) and batched like images, with the
same ``index`` key that the teacher cache is read by.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


class IndexedTokens(Dataset):
    """Items ``{"tokens", "label", "index"}``; ``index`` is the row in the split, the teacher cache key."""

    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        if tokens.shape[0] != labels.shape[0]:
            raise ValueError(
                f"argument 'tokens' has {tokens.shape[0]} rows but 'labels' has {labels.shape[0]}: expected one token set per label"
            )
        self.tokens = tokens
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i], "label": self.labels[i], "index": torch.tensor(i, dtype=torch.int64)}


@torch.no_grad()
def batched(fn, inputs: torch.Tensor, batch_size: int, device=None) -> torch.Tensor:
    """``fn`` over ``inputs`` in chunks (moved to ``device`` when given); the result comes back on the CPU."""
    if device is None:
        return torch.cat([fn(inputs[i : i + batch_size]) for i in range(0, inputs.shape[0], batch_size)])
    return torch.cat([fn(inputs[i : i + batch_size].to(device)).cpu() for i in range(0, inputs.shape[0], batch_size)])


@torch.no_grad()
def student_tokens(
    student: torch.nn.Module, transform, images: torch.Tensor, batch_size: int = 1000, device=None
) -> torch.Tensor:
    """The student's semantic tokens ``[N, n_tokens, token_dim]`` for uint8 ``images``, in eval mode, on the CPU."""
    was_training = student.training
    student.eval()
    device = device if device is not None else next(student.parameters()).device
    tokens = batched(lambda t: student(transform(t).to(device))["tokens"].float().cpu(), images, batch_size)
    student.train(was_training)
    return tokens


def token_loader(
    tokens: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False
) -> DataLoader:
    """A seeded single-process loader over precomputed tokens (shuffle order fixed by ``seed``, as for images)."""
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        IndexedTokens(tokens, labels),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
        num_workers=0,
    )


def freeze(module: torch.nn.Module) -> None:
    """No gradients for ``module``'s parameters (the optimiser is then given only the rest)."""
    for p in module.parameters():
        p.requires_grad_(False)
