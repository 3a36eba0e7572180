"""The architecture half of DARTS's bilevel optimisation: update the architecture on validation batches.

Weights minimise the training loss (the engine's ordinary step); the architecture minimises the
validation loss of those weights. ``Architect.step`` does one architecture update with its own Adam
optimiser and its own stream of validation batches, and leaves every weight and weight gradient
untouched (it uses ``torch.autograd.grad``, never ``.backward()``), so it can run inside the
engine's loop just before the weight update.

* first order: the gradient of the validation loss at the current weights (DARTS-1st, PC-DARTS).
* second order: the gradient at the weights after one virtual SGD step on the training batch,
  ``w' = w - xi * (grad_w L_train + wd * w)``, which adds ``-xi * d2L_train/dalpha dw . grad_w' L_val``;
  that Hessian-vector product is a central finite difference at ``w +- eps * grad_w' L_val`` with
  ``eps = 0.01 / ||grad_w' L_val||`` (Liu et al. 2019, eq. 7-8). The virtual weights are substituted
  with ``torch.func.functional_call``, so the model's own tensors never change; BN running
  statistics of the virtual passes go to copies.

``reduce`` (e.g. ``accelerator.reduce(g, "mean")``) averages the architecture gradient across
processes, so N processes with N validation shards take the step one process would take on the
concatenated global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call

from rkd.hardware.precision import computing_in
from rkd.nas.supernet import arch_gradients_enabled

Forward = Callable[[torch.Tensor], dict]
LossFn = Callable[[Forward, dict, str], torch.Tensor]  # (forward, batch, split) -> scalar loss
ORDERS = ("first", "second")


class Architect:
    """Owns the architecture optimiser; ``step(model, train_batch, global_step)`` is one update.

    ``val_batches(skip)`` makes the stream of validation batches with the first ``skip`` left out, so
    a resumed search sees the batches an uninterrupted one would have.
    """

    def __init__(
        self,
        arch_params: Sequence[nn.Parameter],
        loss_fn: LossFn,
        val_batches: Callable[[int], Iterator[dict]],
        lr: float = 3e-4,
        betas: Sequence[float] = (0.5, 0.999),
        weight_decay: float = 1e-3,
        order: str = "first",
        unrolled_lr: Callable[[int], float] | None = None,
        unrolled_weight_decay: float = 0.0,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"order = {order!r} is invalid: expected one of {ORDERS}")
        if order == "second" and unrolled_lr is None:
            raise ValueError("order = 'second' needs unrolled_lr (the weight learning rate at a step)")
        self.arch_params = list(arch_params)
        self.loss_fn = loss_fn
        self.make_val_batches = val_batches  # called with the number of batches already used (> 0 on resume)
        self.val_batches: Iterator[dict] | None = None
        self.order = order
        self.unrolled_lr = unrolled_lr
        self.unrolled_weight_decay = unrolled_weight_decay
        self.reduce = reduce
        self.optimizer = torch.optim.Adam(
            self.arch_params, lr=lr, betas=(float(betas[0]), float(betas[1])), weight_decay=weight_decay
        )
        self.steps = 0
        self.last_val_loss: float | None = None
        # the architecture after the latest update: a trainer that restores its best-validation state
        # at the end would otherwise hand back an older architecture (even the untrained one)
        self.latest: list[torch.Tensor] | None = None

    # the search checkpoints and resumes it through these two (rkd.engine.fit's checkpoint_objects)
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps, "latest": self.latest}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        self.latest = state.get("latest")

    @torch.no_grad()
    def restore_latest(self) -> None:
        """Put the architecture of the latest update back into the parameters (no-op before any update)."""
        if self.latest is not None:
            for p, value in zip(self.arch_params, self.latest):
                p.copy_(value.to(p.device))

    def gradients(self, model: nn.Module, train_batch: dict, val_batch: dict, global_step: int) -> list[torch.Tensor]:
        """The (local, not yet reduced) architecture gradient for one pair of batches, computed in fp32.

        The weights may train under mixed precision, but the architecture's signal is small (second
        order: a finite difference of two nearby losses) and gets no loss scaling here: in bf16/fp16 it
        would be rounding noise, or underflow. So these passes run in fp32 whatever autocast surrounds them.
        """
        device_type = self.arch_params[0].device.type
        grads: Sequence[torch.Tensor | None]
        with arch_gradients_enabled(self.arch_params), computing_in(model, "fp32", device_type):
            if self.order == "first":
                loss = self.loss_fn(model, val_batch, "val")
                grads = torch.autograd.grad(loss, self.arch_params, allow_unused=True)
            else:
                loss, grads = self._second_order(model, train_batch, val_batch, global_step)
        self.last_val_loss = float(loss.detach())
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.arch_params, grads)]

    def step(self, model: nn.Module, train_batch: dict, global_step: int) -> None:
        if self.val_batches is None:  # created here, after a resume has restored ``steps``
            self.val_batches = self.make_val_batches(self.steps)
        grads = self.gradients(model, train_batch, next(self.val_batches), global_step)
        for p, g in zip(self.arch_params, grads):
            p.grad = self.reduce(g.contiguous()) if self.reduce is not None else g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        self.latest = [p.detach().cpu().clone() for p in self.arch_params]

    def _second_order(
        self, model: nn.Module, train_batch: dict, val_batch: dict, global_step: int
    ) -> tuple[torch.Tensor, Sequence[torch.Tensor | None]]:
        arch_ids = {id(p) for p in self.arch_params}
        named = [(n, p) for n, p in model.named_parameters() if id(p) not in arch_ids and p.requires_grad]
        names = [n for n, _ in named]
        weights = [p for _, p in named]
        buffers = {n: b.clone() for n, b in model.named_buffers()}

        def with_weights(values: Sequence[torch.Tensor]) -> Forward:
            mapping = {**dict(zip(names, values)), **buffers}
            return lambda x: functional_call(model, mapping, (x,), strict=False)

        assert self.unrolled_lr is not None  # required for the second order (checked when built)
        xi = float(self.unrolled_lr(global_step))
        wd = self.unrolled_weight_decay
        train_loss = self.loss_fn(with_weights(weights), train_batch, "train")
        grad_w = torch.autograd.grad(train_loss, weights, allow_unused=True)
        virtual = [
            (w.detach() - xi * ((torch.zeros_like(w) if g is None else g) + wd * w.detach())).requires_grad_()
            for w, g in zip(weights, grad_w)
        ]
        val_loss = self.loss_fn(with_weights(virtual), val_batch, "val")
        grads = torch.autograd.grad(val_loss, [*self.arch_params, *virtual], allow_unused=True)
        d_alpha = grads[: len(self.arch_params)]
        d_w = [torch.zeros_like(v) if g is None else g for v, g in zip(virtual, grads[len(self.arch_params) :])]
        norm = torch.cat([g.reshape(-1) for g in d_w]).norm()
        if xi == 0.0 or float(norm) == 0.0:
            return val_loss, d_alpha
        eps = 0.01 / norm
        hessian = []
        for sign in (1.0, -1.0):
            shifted = [w.detach() + sign * eps * g for w, g in zip(weights, d_w)]
            loss = self.loss_fn(with_weights(shifted), train_batch, "train")
            hessian.append(torch.autograd.grad(loss, self.arch_params, allow_unused=True))
        out = []
        for p, da, gp, gm in zip(self.arch_params, d_alpha, *hessian):
            da = torch.zeros_like(p) if da is None else da
            gp = torch.zeros_like(p) if gp is None else gp
            gm = torch.zeros_like(p) if gm is None else gm
            out.append(da - xi * (gp - gm) / (2 * eps))
        return val_loss, out


def cycle_batches(loader, device: torch.device, skip: int = 0) -> Iterator[dict]:
    """Endless batches of ``loader`` on ``device`` after dropping the first ``skip``.

    Each pass reshuffles if the loader shuffles; a loader with a freshly seeded generator therefore
    replays the same endless sequence, which is what makes ``skip`` a resume.
    """
    while True:
        empty = True
        for batch in loader:
            empty = False
            if skip > 0:
                skip -= 1
                continue
            yield {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if empty:
            raise ValueError(
                "the architecture's validation loader yields no batches (is the val split smaller "
                "than one batch with drop_last?)"
            )
