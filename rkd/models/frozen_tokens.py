"""Stage 2, phase A's data: the frozen stage-1 student's tokens, computed once per split, on the accelerator.

The codec learns over thousands of steps; with the student and its head frozen, its tokens do not
change, so a full student forward/backward per codec step would be wasted work. ``shared_tokens``
computes them once, on the device and in the training precision, each process a contiguous block of
the rows, and gathers the blocks so that every process holds all of them on its device (the shuffled
batches of every epoch need any row), with no copy in host memory. ``token_loader`` then indexes whole
batches on the device (``__getitems__``), with the same ``index`` key that the teacher cache is read by.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from rkd.data.loaders import seeded_loader
from rkd.run.estimate import advance

TRAINING_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class IndexedTokens(Dataset):
    """Items ``{"tokens", "label", "index"}``; ``index`` is the row in the split, the teacher cache key.

    ``__getitems__`` takes a whole batch with one indexing operation on the tensors' device (the
    DataLoader calls it instead of collating ``batch_size`` single items in Python).
    """

    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        if tokens.shape[0] != labels.shape[0]:
            raise ValueError(
                f"argument 'tokens' has {tokens.shape[0]} rows but 'labels' has {labels.shape[0]}: expected one token set per label"
            )
        self.tokens = tokens
        self.labels = labels.to(tokens.device)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])

    def __getitems__(self, indices: list) -> dict:
        rows = torch.as_tensor(indices, dtype=torch.int64).to(self.tokens.device, non_blocking=True)
        return {"tokens": self.tokens[rows], "label": self.labels[rows], "index": rows}


@torch.no_grad()
def batched(fn, inputs: torch.Tensor, batch_size: int, device=None, work: str | None = "tokens") -> torch.Tensor:
    """``fn`` over ``inputs`` in chunks (moved to ``device`` when given); the result comes back on the CPU.

    ``work``: the name the finished images are reported under to the stage's clock (``rkd.run.estimate``).
    """
    outputs = []
    for start in range(0, inputs.shape[0], batch_size):
        chunk = inputs[start : start + batch_size]
        outputs.append(fn(chunk) if device is None else fn(chunk.to(device)).cpu())
        if work is not None:
            advance(work, chunk.shape[0])
    return torch.cat(outputs)


def block_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of process ``rank``'s contiguous block (the first ``n % world`` blocks one longer)."""
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return start, start + size + (1 if rank < extra else 0)


@torch.no_grad()
def student_tokens(
    student: torch.nn.Module, transform, images: torch.Tensor, batch_size: int = 1000, device=None, dtype=None
) -> torch.Tensor:
    """The student's semantic tokens ``[N, n_tokens, token_dim]`` for uint8 ``images``, in eval mode, computed
    and kept on ``device`` (default: the student's) as ``dtype`` (default float32)."""
    was_training = student.training
    student.eval()
    device = device if device is not None else next(student.parameters()).device
    dtype = dtype or torch.float32
    chunks = []
    for i in range(0, images.shape[0], batch_size):
        chunk = images[i : i + batch_size]
        chunks.append(student(transform(chunk.to(device, non_blocking=True)))["tokens"].to(dtype))
        advance("tokens", chunk.shape[0])
    student.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, device=device, dtype=dtype)


@torch.no_grad()
def shared_tokens(accelerator, student: torch.nn.Module, transform, images: torch.Tensor, batch_size: int):
    """Every row's tokens on every process's device, in the training precision; each process computes one block.

    The blocks are gathered as raw 16-bit words when the precision is bf16/fp16 (every backend moves
    those), and the padding of shorter blocks is dropped.
    """
    dtype = TRAINING_DTYPES.get(str(accelerator.mixed_precision), torch.float32)
    student.to(accelerator.device)
    world, n = accelerator.num_processes, images.shape[0]
    start, stop = block_bounds(n, accelerator.process_index, world)
    with accelerator.autocast():
        mine = student_tokens(student, transform, images[start:stop], batch_size, accelerator.device, dtype)
    if world == 1:
        return mine
    longest = block_bounds(n, 0, world)[1]
    padded = torch.zeros((longest, *mine.shape[1:]), dtype=dtype, device=accelerator.device)
    padded[: mine.shape[0]] = mine
    wire = padded.view(torch.int16) if dtype != torch.float32 else padded
    gathered = accelerator.gather(wire).view(dtype).reshape(world, longest, *mine.shape[1:])
    return torch.cat([gathered[r, : (lambda b: b[1] - b[0])(block_bounds(n, r, world))] for r in range(world)])


def token_loader(
    tokens: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False
) -> DataLoader:
    """A seeded single-process loader over precomputed tokens (shuffle order fixed by ``seed``, as for images);
    batches are indexed whole on the tokens' device."""
    return seeded_loader(IndexedTokens(tokens, labels), batch_size, shuffle, seed, drop_last)


def freeze(module: torch.nn.Module) -> None:
    """No gradients for ``module``'s parameters (the optimiser is then given only the rest)."""
    for p in module.parameters():
        p.requires_grad_(False)
