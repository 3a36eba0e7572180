"""The digital schemes a wireless reviewer asks for, run beside RKD-SC: send the label, or send quantised features.

Both take the stage-1 student (the same transmitter-side network RKD-SC starts from), and send
bits at the finite-blocklength normal-approximation rate (``rkd.baselines.fbl``) over ``k`` channel
uses, with receiver CSI on every channel (a digital link sends pilots; not charged to ``k``):

* ``label-digital``: the student's predicted class, ``ceil(log2 C)`` bits. A lost packet gives a
  seeded uniform-random class. Nothing else to choose, so it is the strongest digital point
  for a single known task at small ``k`` - and useless to a receiver that needs anything but the label.
* ``feature-digital``: the student's pooled feature quantised to ``b`` bits per value
  (``b`` the largest of ``baselines.digital_bits`` whose packet error at the nominal SNR is
  ``<= baselines.digital_target_error``), classified by the student's head at the receiver. A lost
  packet gives ``baselines.digital_fallback``.

The capacity-achieving ``digital`` method of ``rkd.baselines.digital`` stays as a bound (``digital_results``).
"""

from __future__ import annotations

import torch

from rkd.baselines import budget
from rkd.baselines.context import Context, link_sizes, receiver_csi_labels, student_params
from rkd.baselines.digital import (
    UniformQuantizer,
    digital_sweep,
    fallback_predictions,
    fbl_sweep,
    feature_bits_for,
    label_bits,
)
from rkd.measure import count_params
from rkd.models.factory import load_stage1
from rkd.models.frozen_tokens import batched


def _student(ctx: Context):
    stage1 = load_stage1(ctx.cfg, ctx.bundle, ctx.teacher_dim, ctx.cfg.run_dir / "stage1").eval()
    return stage1.student


def _sizes(student, x: torch.Tensor) -> dict:
    one = x[:1]
    feature_one = student(one)["features"].detach()
    return link_sizes(
        student_params(student),
        count_params(student.classifier),
        lambda: student(one)["features"],
        lambda: student.classifier(feature_one),
    )


@torch.no_grad()
def label_digital_results(ctx: Context, method: str) -> dict:
    cfg = ctx.cfg
    student = _student(ctx)
    x = ctx.inputs("test")
    preds = batched(lambda t: student(t)["logits"], x, cfg.eval.batch_size).argmax(-1)
    classes = ctx.bundle.num_classes
    bits = label_bits(classes)
    right = preds == ctx.labels
    guess = fallback_predictions(right.shape[0], classes, "uniform", 0, cfg.eval.seed + 1) == ctx.labels
    records = fbl_sweep(
        lambda b: right,
        guess,
        lambda snr, k: (bits, bits),
        cfg.eval.channels,
        ctx.grid,
        ctx.rates,
        cfg.eval.seed,
        method,
        keep=ctx.kept,
    )
    # the receiver maps the bits to a class name: no parameters, no FLOPs
    sizes = link_sizes(
        student_params(student) + count_params(student.classifier),
        0,
        lambda: student(x[:1])["logits"].argmax(-1),
        lambda: None,
    )
    return {
        "summary": {
            "method": method,
            "kind": "scheme",
            "rates": ctx.rates,
            "payload_bits": bits,
            "student_clean_accuracy": float(right.float().mean()),
            **sizes,
            "trained_on": receiver_csi_labels(cfg.eval.channels),
            "budget": budget.total(ctx.upstream_budget(), ctx.n_train),
            "note": "label as ceil(log2 C) bits at the normal-approximation rate; receiver CSI; "
            "lost packet -> uniform random class",
        },
        "records": records,
    }


@torch.no_grad()
def feature_digital_results(ctx: Context, method: str) -> dict:
    cfg, b = ctx.cfg, ctx.cfg.baselines
    student = _student(ctx)
    x = ctx.inputs("test")
    train = batched(lambda t: student(t)["features"], ctx.inputs("train"), cfg.eval.batch_size)
    test = batched(lambda t: student(t)["features"], x, cfg.eval.batch_size)
    quantizer = UniformQuantizer.fit(train)
    prior = int(torch.bincount(ctx.bundle.splits["train"].labels, minlength=ctx.bundle.num_classes).argmax())
    fallback = fallback_predictions(test.shape[0], ctx.bundle.num_classes, b.digital_fallback, prior, cfg.eval.seed)
    cache: dict = {}

    def correct_at(bits: int) -> torch.Tensor:
        if bits not in cache:
            cache[bits] = student.classifier(quantizer(test, bits)).argmax(-1).cpu() == ctx.labels
        return cache[bits]

    dim = int(test.shape[1])

    def choose(snr: float, k: int) -> tuple:
        bits = feature_bits_for(snr, k, dim, b.digital_bits, b.digital_target_error)
        return bits, bits * dim

    records = fbl_sweep(
        correct_at,
        fallback == ctx.labels,
        choose,
        cfg.eval.channels,
        ctx.grid,
        ctx.rates,
        cfg.eval.seed,
        method,
        keep=ctx.kept,
    )
    return {
        "summary": {
            "method": method,
            "kind": "scheme",
            "rates": ctx.rates,
            "feature_dim": dim,
            "candidate_bits": list(b.digital_bits),
            "target_error": b.digital_target_error,
            "fallback": b.digital_fallback,
            **_sizes(student, x),
            "trained_on": receiver_csi_labels(cfg.eval.channels),
            "budget": budget.total(ctx.upstream_budget(), ctx.n_train),
            "note": "b-bit quantised feature at the normal-approximation rate; receiver CSI",
        },
        "records": records,
    }


def digital_results(ctx: Context, method: str) -> dict:
    """The capacity bound: the stage-1 student's quantised feature sent by an ideal code (``rkd.baselines.digital``)."""
    cfg, b = ctx.cfg, ctx.cfg.baselines
    student = _student(ctx)
    train = batched(lambda t: student(t)["features"], ctx.inputs("train"), cfg.eval.batch_size)
    x = ctx.inputs("test")
    test = batched(lambda t: student(t)["features"], x, cfg.eval.batch_size)
    quantizer = UniformQuantizer.fit(train)
    prior = int(torch.bincount(ctx.bundle.splits["train"].labels, minlength=ctx.bundle.num_classes).argmax())
    fallback = fallback_predictions(test.shape[0], ctx.bundle.num_classes, b.digital_fallback, prior, cfg.eval.seed)
    with torch.no_grad():
        records = digital_sweep(
            test,
            ctx.labels,
            student.classifier,
            quantizer,
            cfg.eval.channels,
            ctx.grid,
            ctx.rates,
            b.digital_bits,
            fallback,
            cfg.eval.seed,
            method=method,
        )
        quantized = {
            str(bits): float((student.classifier(quantizer(test, bits)).argmax(-1) == ctx.labels).float().mean())
            for bits in b.digital_bits
        }
        fallback_acc = float((fallback == ctx.labels).float().mean())
    return {
        "summary": {
            "method": method,
            "feature_dim": int(test.shape[1]),
            "rates": ctx.rates,
            "candidate_bits": list(b.digital_bits),
            "fallback": b.digital_fallback,
            "fallback_class": prior,
            "fallback_accuracy": fallback_acc,
            "quantized_clean_accuracy": quantized,
            **_sizes(student, x),
            "kind": "bound",
            "trained_on": receiver_csi_labels(cfg.eval.channels),
            "budget": budget.total(ctx.upstream_budget(), ctx.n_train),
            "note": "ideal capacity-achieving code; receiver CSI assumed for decoding on every channel",
        },
        "records": records,
    }


def digital_settings(ctx: Context, hashes: dict, target_error: bool = True) -> tuple:
    """What a digital result depends on beyond the sweep; the bound has no target packet error."""
    b = ctx.cfg.baselines
    return (hashes["stage1"], b.digital_bits, b.digital_fallback) + ((b.digital_target_error,) if target_error else ())
