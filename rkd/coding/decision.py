"""A classifier's decision sent with an explicit code: the code used at (channel, k), its success, the limits.

One function gives the label-digital baseline and the comparison's yardstick the same numbers: which
code carries one of ``M`` decisions in a packet of ``k`` channel uses on a channel, its probability
``P_c`` of correct decoding at an SNR, and the two reference curves beside it (Shannon's
sphere-packing converse and the normal approximation). ``P_c`` is exact where the code is a simplex
and the receiver knows ``h`` (AWGN, perfect CSI: the closed form, averaged over the fading), Monte
Carlo through ``rkd.channels`` otherwise (the spherical codes, pilot-estimated CSI, no CSI). The
references are for a receiver that knows ``h`` with the code's data uses (pilots already taken);
without CSI they are left out (None).
"""

from __future__ import annotations

from rkd.channels import channel_from_spec
from rkd.coding.bounds import normal_approx_success, over_fading, simplex_success, sphere_packing_success
from rkd.coding.codebooks import decision_code
from rkd.coding.link import coherent, data_uses, message_success


def decision_success(m: int, k: int, spec, snr_db: float, trials: int, seed: int) -> dict:
    """``{"code", "code_uses", "p_correct", "p_correct_from"}``: the decision code at one cell and its ``P_c``."""
    channel = channel_from_spec(spec)
    uses = data_uses(spec, k)
    if uses < 1:
        raise ValueError(f"argument 'k' = {k} is invalid on {spec}: the pilots take every channel use")
    name, code = decision_code(m, uses)
    if name == "simplex" and (channel.name == "awgn" or channel.csi == "perfect"):
        p_correct = over_fading(lambda s: simplex_success(m, uses, s), spec, snr_db, seed=seed)
        source = "closed form"
    else:
        p_correct = message_success(code, spec, snr_db, k, trials, seed)
        source = f"monte carlo, {trials} trials"
    return {"code": name, "code_uses": uses, "p_correct": p_correct, "p_correct_from": source}


def decision_reference(m: int, k: int, spec, snr_db: float, trials: int, seed: int) -> dict:
    """``decision_success`` plus the two reference curves, ``"converse"`` and ``"normal_approximation"``."""
    found = decision_success(m, k, spec, snr_db, trials, seed)
    uses = found["code_uses"]
    references: dict[str, float | None] = {"converse": None, "normal_approximation": None}
    if coherent(channel_from_spec(spec)):
        references = {
            "converse": over_fading(lambda s: sphere_packing_success(m, uses, s), spec, snr_db, seed=seed),
            "normal_approximation": over_fading(lambda s: normal_approx_success(m, uses, s), spec, snr_db, seed=seed),
        }
    return {**found, **references}
