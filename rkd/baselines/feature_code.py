"""Feature-digital that fits its budget: PCA of the student's feature, quantised to the bits an explicit code
carries at (k, SNR), sent with that code, decoded, reconstructed and classified by the student's head.

The rule, per (SNR, channel, k) cell, all chosen by the transmitter, which knows the nominal SNR but not
the fading:

1. The code: the packet's data uses (``k``, or ``k - pilots``) are cut into equal blocks of ``length``
   uses, each carrying ``bits`` bits with ``rkd.coding.codebooks.block_code`` (PSK on one use,
   simplex / biorthogonal on longer blocks). Of every ``(length, bits)`` that fills the packet, the
   one with the most bits whose block error on AWGN at the nominal SNR (Monte Carlo through
   ``rkd.channels``, seeded) is at most ``baselines.digital_target_error``; none meets it: one block
   of one bit (the most robust packet), recorded as ``target_met = false``.
2. The source code: ``dims`` principal components of the train features (``PCACodec``), each
   quantised uniformly to ``b`` bits over its train range, ``dims * b <= payload``; of the candidate
   ``b`` (``baselines.digital_bits``, ``dims = min(D, payload // b)``) the one whose reconstruction the
   student's head classifies best on the validation split (no channel errors).
3. The receiver decodes each block by minimum distance, reassembles the bits (no error detection:
   a wrong block gives wrong coefficients), reconstructs the feature and applies the student's head.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from rkd.baselines.digital import UniformQuantizer
from rkd.coding.codebooks import block_code, block_options
from rkd.coding.link import data_uses, message_success, send_messages
from rkd.evaluation.records import cell_generator, channel_record


class PCACodec:
    """Principal components of the train features, each kept component quantised over its train range."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, coefficients: torch.Tensor) -> None:
        self.mean, self.components = mean, components
        self.quantizer = UniformQuantizer.fit(coefficients)

    @classmethod
    def fit(cls, features: torch.Tensor) -> PCACodec:
        features = features.double()
        mean = features.mean(0)
        _, _, basis = torch.linalg.svd(features - mean, full_matrices=False)
        return cls(mean, basis, (features - mean) @ basis.T)

    @property
    def dim(self) -> int:
        return int(self.components.shape[1])

    def _quantizer(self, dims: int) -> UniformQuantizer:
        return UniformQuantizer(self.quantizer.lo[:dims], self.quantizer.lo[:dims] + self.quantizer.span[:dims])

    def indices(self, features: torch.Tensor, dims: int, bits: int) -> torch.Tensor:
        coefficients = (features.double() - self.mean) @ self.components[:dims].T
        return self._quantizer(dims).indices(coefficients.float(), bits)

    def reconstruct(self, indices: torch.Tensor, bits: int) -> torch.Tensor:
        dims = indices.shape[1]
        coefficients = self._quantizer(dims).dequantize(indices, bits).double()
        return (self.mean + coefficients @ self.components[:dims]).float()


def to_bits(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """``[n, d]`` integers below ``2^bits`` -> ``[n, d * bits]`` bits, most significant first."""
    shifts = torch.arange(bits - 1, -1, -1)
    return ((indices[..., None] >> shifts) & 1).flatten(1).bool()


def from_bits(bits_: torch.Tensor, bits: int) -> torch.Tensor:
    """The inverse of ``to_bits``."""
    weights = 2 ** torch.arange(bits - 1, -1, -1)
    return (bits_.reshape(bits_.shape[0], -1, bits).long() * weights).sum(-1)


def to_blocks(bits_: torch.Tensor, block_bits: int, blocks: int) -> torch.Tensor:
    """``[n, used]`` bits -> ``[n, blocks]`` messages of ``block_bits`` bits (zero-padded at the end)."""
    padded = torch.zeros(bits_.shape[0], blocks * block_bits, dtype=torch.bool)
    padded[:, : bits_.shape[1]] = bits_
    return from_bits(padded, block_bits)


def from_blocks(messages: torch.Tensor, block_bits: int, used: int) -> torch.Tensor:
    """The first ``used`` bits of ``[n, blocks]`` messages."""
    return to_bits(messages, block_bits)[:, :used]


@functools.lru_cache(maxsize=4096)
def block_error(length: int, bits: int, snr_db: float, trials: int, seed: int) -> float:
    """Monte Carlo block error of ``block_code(bits, length)`` on AWGN at ``snr_db``."""
    return 1.0 - message_success(block_code(bits, length)[1], {"name": "awgn"}, snr_db, length, trials, seed)


def choose_blocks(uses: int, snr_db: float, target: float, trials: int, seed: int) -> dict:
    """Rule 1 of the module doc: the most bits in ``uses`` whose block error at ``snr_db`` is at most ``target``."""
    best = None
    for length in sorted({length for length, _ in block_options(uses)}):
        for bits in sorted(b for ell, b in block_options(uses) if ell == length):  # errors grow with bits
            error = block_error(length, bits, float(snr_db), trials, seed)
            if error > target:
                break
            payload = uses // length * bits
            if best is None or payload > best["payload_bits"]:
                best = {"block_length": length, "block_bits": bits, "payload_bits": payload, "block_error": error}
    if best is None:
        error = block_error(uses, 1, float(snr_db), trials, seed)
        return {"block_length": uses, "block_bits": 1, "payload_bits": 1, "block_error": error, "target_met": False}
    return {**best, "target_met": True}


def choose_split(payload: int, dim: int, candidates: list, score: Callable[[int, int], float]) -> tuple:
    """Rule 2: ``(dims, bits)`` with ``dims * bits <= payload`` that ``score`` (validation accuracy) rates best."""
    options = [(min(dim, payload // b), b) for b in sorted(candidates) if payload // b >= 1]
    if not options:
        raise ValueError(f"argument 'payload' = {payload} carries no candidate bit depth {sorted(candidates)}")
    return max(options, key=lambda option: (score(*option), -option[0] * option[1]))


@torch.no_grad()
def feature_code_sweep(codec, test, labels, head, split, specs, snrs, rates, seed, target, trials, method, keep=None):
    """Records of feature-digital for every SNR x channel x k (rule in the module doc).

    ``split(payload) -> (dims, bits)`` is rule 2; ``head`` the student's classifier; ``keep`` receives each
    record's per-image correctness.
    """
    labels, records = labels.cpu(), []
    for snr in snrs:
        for spec in specs:
            for k in rates:
                uses = data_uses(spec, int(k))
                plan = choose_blocks(uses, float(snr), target, trials, seed)
                dims, bits = split(plan["payload_bits"])
                sent = to_bits(codec.indices(test, dims, bits), bits)
                blocks = uses // plan["block_length"]
                code = block_code(plan["block_bits"], plan["block_length"])[1]
                messages = to_blocks(sent, plan["block_bits"], blocks)
                decoded = send_messages(messages, code, spec, float(snr), int(k), cell_generator(seed))
                received = from_blocks(decoded, plan["block_bits"], sent.shape[1])
                hit = head(codec.reconstruct(from_bits(received, bits), bits)).argmax(-1).cpu() == labels
                if keep is not None:
                    keep.append(hit.clone())
                extra = {
                    "pca_dims": dims,
                    "bits_per_value": bits,
                    "bit_error": float((received != sent).double().mean()),
                }
                records.append(
                    channel_record(method, spec, snr, k, float(hit.double().mean()), len(labels), **plan, **extra)
                )
    return records
