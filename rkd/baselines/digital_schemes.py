"""The digital schemes a wireless reviewer asks for, run beside RKD-SC: send the label, or send quantised features.

Both take the stage-1 student (the same transmitter-side network RKD-SC starts from) and send an
explicit short code through ``rkd.channels``, the channels every method meets (pilots counted in
``k`` under pilot CSI), decoded by minimum distance:

* ``label-digital`` (``rkd.baselines.label_code``): the student's predicted class as one of ``C``
  codewords. The strongest digital point for a single known task at small ``k``, and useless to a
  receiver that needs anything but the label.
* ``feature-digital`` (``rkd.baselines.feature_code``): the student's feature, PCA-reduced and
  quantised to the bits a block code carries at the nominal SNR, classified by the student's head.

The capacity-achieving ``digital`` method of ``rkd.baselines.digital`` stays as a bound (``digital_results``).
"""

from __future__ import annotations

import functools

import torch

from rkd.baselines import budget
from rkd.baselines.context import Context, coded_link_labels, link_sizes, receiver_csi_labels, student_params
from rkd.baselines.digital import UniformQuantizer, digital_sweep, fallback_predictions
from rkd.baselines.feature_code import PCACodec, choose_split, feature_code_sweep
from rkd.baselines.label_code import label_code_sweep
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
    records = label_code_sweep(
        preds,
        ctx.labels,
        classes,
        cfg.eval.channels,
        ctx.grid,
        ctx.rates,
        cfg.eval.seed,
        cfg.baselines.digital_code_trials,
        method,
        keep=ctx.kept,
    )
    # the receiver maps the decoded codeword to a class name: no parameters, no FLOPs
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
            "codewords": classes,
            "student_clean_accuracy": float((preds.cpu() == ctx.labels).float().mean()),
            **sizes,
            "trained_on": coded_link_labels(cfg.eval.channels),
            "budget": budget.total(ctx.upstream_budget(), ctx.n_train),
            "note": "the predicted class sent with an explicit code of C codewords (simplex / spherical), "
            "ML decoded over rkd.channels; pilots counted in k",
        },
        "records": records,
    }


@torch.no_grad()
def feature_digital_results(ctx: Context, method: str) -> dict:
    cfg, b = ctx.cfg, ctx.cfg.baselines
    student = _student(ctx)
    x = ctx.inputs("test")
    features = {
        split: batched(lambda t: student(t)["features"], ctx.inputs(split), cfg.eval.batch_size).cpu()
        for split in ("train", "val")
    }
    test = batched(lambda t: student(t)["features"], x, cfg.eval.batch_size).cpu()
    codec = PCACodec.fit(features["train"])
    val_labels = ctx.bundle.splits["val"].labels

    @functools.cache
    def val_accuracy(dims: int, bits: int) -> float:
        rebuilt = codec.reconstruct(codec.indices(features["val"], dims, bits), bits)
        return float((student.classifier(rebuilt).argmax(-1).cpu() == val_labels).float().mean())

    records = feature_code_sweep(
        codec,
        test,
        ctx.labels,
        student.classifier,
        lambda payload: choose_split(payload, codec.dim, list(b.digital_bits), val_accuracy),
        cfg.eval.channels,
        ctx.grid,
        ctx.rates,
        cfg.eval.seed,
        b.digital_target_error,
        b.digital_code_trials,
        method,
        keep=ctx.kept,
    )
    return {
        "summary": {
            "method": method,
            "kind": "scheme",
            "rates": ctx.rates,
            "feature_dim": codec.dim,
            "candidate_bits": list(b.digital_bits),
            "target_block_error": b.digital_target_error,
            **_sizes(student, x),
            "trained_on": coded_link_labels(cfg.eval.channels),
            "budget": budget.total(ctx.upstream_budget(), ctx.n_train),
            "note": "PCA of the student's feature quantised to the bits an explicit block code carries at the "
            "nominal SNR (block error <= target), ML decoded over rkd.channels, classified by the student's head",
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


def digital_settings(ctx: Context, hashes: dict) -> tuple:
    """What the capacity bound depends on beyond the sweep."""
    b = ctx.cfg.baselines
    return (hashes["stage1"], b.digital_bits, b.digital_fallback)


def label_digital_settings(ctx: Context, hashes: dict) -> tuple:
    """What label-digital depends on beyond the sweep: the student and the Monte Carlo of its code's reference."""
    return (hashes["stage1"], ctx.cfg.baselines.digital_code_trials, "decision code")


def feature_digital_settings(ctx: Context, hashes: dict) -> tuple:
    """What feature-digital depends on beyond the sweep: the student, the bit depths and the block-code rule."""
    b = ctx.cfg.baselines
    return (hashes["stage1"], b.digital_bits, b.digital_target_error, b.digital_code_trials, "block codes")
