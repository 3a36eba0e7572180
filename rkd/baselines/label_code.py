"""Label-digital: the student's decision (one of ``C`` classes) sent with an explicit short code, ML decoded.

Per (SNR, channel, k) cell every test image's predicted class is mapped to its codeword of
``rkd.coding.codebooks.decision_code(C, data uses)`` (the simplex where ``C <= n + 1``, else the best
spherical code), sent through ``rkd.channels`` with the cell's seeded generator (one channel draw
per image, as every sweep), and decoded by minimum distance (``rkd.coding.link``). The image counts
as right when the decoded class is its label: a wrong decision may be decoded into the right class,
a right one lost. A ``B``-bit label would spend ``2^B >= C`` codewords on the same decision, never
better than ``C``, so the code has exactly ``C`` codewords.

Each record also carries what the code and the limits give at that cell (``rkd.coding.decision``):
the code's own ``P_c`` (closed form or a larger Monte Carlo) and the accuracy
``a P_c + (1 - a)(1 - P_c)/(C - 1)`` it implies for the student's clean accuracy ``a``
(``expected_accuracy``), and the same with Shannon's sphere-packing converse and the normal
approximation in place of ``P_c`` (reference curves; None without CSI).
"""

from __future__ import annotations

import torch

from rkd.channels import channel_from_spec
from rkd.coding.bounds import decision_accuracy
from rkd.coding.codebooks import decision_code
from rkd.coding.decision import decision_reference
from rkd.coding.link import data_uses, send_messages
from rkd.evaluation.records import cell_generator, grid_records


def _accuracy_or_none(student_accuracy: float, p, m: int):
    return None if p is None else float(decision_accuracy(student_accuracy, p, m))


@torch.no_grad()
def label_code_sweep(
    decisions: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    channel_specs: list,
    snrs: list,
    rates: list,
    seed: int,
    trials: int,
    method: str,
    keep: list | None = None,
) -> list:
    """Records of label-digital for every SNR x channel x k; ``keep`` receives each record's per-image correctness."""
    decisions, labels = decisions.cpu().long(), labels.cpu()
    student_accuracy = float((decisions == labels).double().mean())
    for spec in channel_specs:
        channel_from_spec(spec)  # a bad spec fails here, before any draw

    def end_to_end(p_correct: float | None) -> float | None:
        return _accuracy_or_none(student_accuracy, p_correct, num_classes)

    def cell(spec: dict, snr: float, k: int) -> tuple[float, dict]:
        uses = data_uses(spec, int(k))
        name, code = decision_code(num_classes, uses)
        decoded = send_messages(decisions, code, spec, float(snr), int(k), cell_generator(seed))
        hit = decoded == labels
        if keep is not None:
            keep.append(hit.clone())
        ref = decision_reference(num_classes, int(k), spec, float(snr), trials, seed)
        return float(hit.double().mean()), {
            "code": name,
            "code_uses": uses,
            "delivered": float((decoded == decisions).double().mean()),
            "p_correct": ref["p_correct"],
            "p_correct_from": ref["p_correct_from"],
            "expected_accuracy": end_to_end(ref["p_correct"]),
            "converse_accuracy": end_to_end(ref["converse"]),
            "normal_approximation_accuracy": end_to_end(ref["normal_approximation"]),
        }

    return grid_records(method, channel_specs, snrs, rates, decisions.shape[0], cell)
