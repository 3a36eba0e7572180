"""Complex baseband wireless channels (AWGN, Rayleigh and Rician block fading) and training SNRs.

Every channel normalises what it is given to unit average power per sample over the symbols that
are actually sent, so the SNR means the same thing whatever the encoder emits and however many
symbols (``k``) a sample uses. Fading is *block* fading: one coefficient ``h`` per sample, which
is what a short semantic packet sees in a slowly varying channel. All randomness takes an optional
``torch.Generator`` so that evaluations are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rkd.draws import rand, randn

CSI_MODES = ("perfect", "pilot", "none")
_SPEC_KEYS = ("name", "csi", "k_factor", "pilots")
_EPS = 1e-12

SNRLike = torch.Tensor | float | int
ChannelSpec = str | Mapping[str, Any]


# ----------------------------------------------------------------------------- helpers


def _as_complex(z: torch.Tensor) -> torch.Tensor:
    """Half-precision complex (and real) inputs are computed in complex64: complex32 lacks most ops."""
    if z.dtype == torch.complex128:
        return z
    if z.is_complex():
        return z.to(torch.complex64)
    if z.dtype == torch.float64:
        return z.to(torch.complex128)
    return z.to(torch.complex64)


def _real_dtype(z: torch.Tensor) -> torch.dtype:
    return torch.float64 if z.dtype == torch.complex128 else torch.float32


def _complex_normal(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """CN(0, 1): real and imaginary parts each N(0, 1/2)."""
    parts = randn((*shape, 2), generator, device, dtype) * math.sqrt(0.5)
    return torch.complex(parts[..., 0], parts[..., 1])


def _check_mask(z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones(z.shape, dtype=torch.bool, device=z.device)
    if mask.shape != z.shape:
        raise ValueError(f"argument 'mask' has shape {tuple(mask.shape)}: expected the symbols' shape {tuple(z.shape)}")
    return mask.to(device=z.device, dtype=torch.bool)


def _per_sample_snr(snr_db: SNRLike, z: torch.Tensor) -> torch.Tensor:
    """SNR in dB as a real ``[batch]`` tensor; a scalar applies to every sample."""
    snr = torch.as_tensor(snr_db, device=z.device).to(_real_dtype(z))
    if snr.dim() == 0:
        return snr.expand(z.shape[0])
    if snr.shape != (z.shape[0],):
        raise ValueError(
            f"argument 'snr_db' has shape {tuple(snr.shape)}: expected a scalar or shape ({z.shape[0]},), one SNR per sample"
        )
    return snr


def normalize_power(z: torch.Tensor, mask: torch.Tensor | None = None, eps: float = _EPS) -> torch.Tensor:
    """Scale each sample to unit average power over its *sent* symbols and zero the unsent ones.

    The transmitter's power budget is per channel use, so a sample sending fewer symbols must not
    spend more power per symbol. ``z``: complex ``[batch, n]``; ``mask``: bool ``[batch, n]``
    (True = sent) or None (all sent). A sample with no sent symbols comes out all zeros.
    """
    z = _as_complex(z)
    sent = _check_mask(z, mask)
    z = torch.where(sent, z, torch.zeros((), dtype=z.dtype, device=z.device))
    n_sent = sent.sum(dim=-1, keepdim=True).clamp_min(1).to(_real_dtype(z))
    power = z.abs().square().sum(dim=-1, keepdim=True) / n_sent
    return z * torch.rsqrt(power + eps)


# ----------------------------------------------------------------------------- channels


@dataclass
class ChannelOutput:
    """What the receiver gets: symbols, the true fading coefficient, and the state it knows.

    ``state[:, 0]`` is the nominal SNR (dB); ``state[:, 1]`` the effective SNR (dB) the receiver
    can estimate: ``snr + 10 log10 |h|^2`` with perfect CSI, the same with the estimated ``h`` for
    pilot-based CSI, the nominal SNR without CSI. ``mask`` marks the data symbols in ``y``: the
    sent ones, except with pilots, where the ``k - pilots`` data symbols come first.
    """

    y: torch.Tensor  # complex [batch, n]
    h: torch.Tensor  # complex [batch]
    state: torch.Tensor  # real [batch, 2]
    mask: torch.Tensor  # bool [batch, n]


class Channel(nn.Module):
    """Block channel ``y = h x + n`` on unit-power symbols; subclasses only say how ``h`` is drawn.

    With ``csi="perfect"`` the receiver knows ``h`` and equalises (returns ``y / h``, so deep fades
    amplify noise); with ``csi="none"`` it returns ``h x + n`` as received. With ``csi="pilot"``
    the first ``pilots`` of a sample's ``k`` channel uses carry the known symbol 1 (pilots count in
    ``k``): the receiver estimates ``h`` from them (LMMSE for ``h ~ CN(0, 1)``) and MMSE-equalises
    the ``k - pilots`` data symbols that follow, which the encoder's first ``k - pilots`` symbols fill.
    """

    name = "channel"

    def __init__(self, csi: str = "perfect", pilots: int = 1) -> None:
        super().__init__()
        self.csi = _check_csi(csi)
        self.pilots = _check_pilots(pilots)

    def sample_fading(
        self, batch: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """One complex coefficient per sample, ``E|h|^2 = 1``."""
        raise NotImplementedError

    def transmit(
        self,
        z: torch.Tensor,
        snr_db: SNRLike,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ChannelOutput:
        """Send ``z`` (complex ``[batch, n]``) at per-sample ``snr_db`` (dB, ``[batch]``); unsent symbols come out 0."""
        if z.dim() != 2:
            raise ValueError(f"argument 'z' has shape {tuple(z.shape)}: expected complex symbols [batch, n_symbols]")
        sent = _check_mask(z, mask)
        if self.csi == "pilot":
            return self._transmit_with_pilots(z, snr_db, sent, generator)
        x = normalize_power(z, sent)
        real = _real_dtype(x)
        snr = _per_sample_snr(snr_db, x)
        h = self.sample_fading(x.shape[0], generator, x.device, real).to(x.dtype)
        noise_std = torch.pow(10.0, -snr / 20.0)  # sigma, with sigma^2 = 10^(-snr/10)
        noise = _complex_normal(x.shape, generator, x.device, real) * noise_std[:, None]
        y = h[:, None] * x + noise
        gain_db = 10.0 * torch.log10(h.abs().square() + _EPS)
        if self.csi == "perfect":
            safe_h = torch.where(h.abs() > _EPS, h, torch.full_like(h, _EPS))
            y = y / safe_h[:, None]
            effective = snr + gain_db
        else:
            effective = snr
        y = torch.where(sent, y, torch.zeros((), dtype=y.dtype, device=y.device))
        return ChannelOutput(y=y, h=h, state=torch.stack([snr, effective], dim=-1), mask=sent)

    def _transmit_with_pilots(
        self, z: torch.Tensor, snr_db: SNRLike, sent: torch.Tensor, generator: torch.Generator | None
    ) -> ChannelOutput:
        """Pilots in the first channel uses, LMMSE estimate of ``h`` from them, MMSE equalisation of the rest."""
        z = _as_complex(z)
        p, n = self.pilots, z.shape[1]
        k = sent.sum(dim=-1)
        positions = torch.arange(n, device=z.device)
        data = positions[None, :] < (k - p).clamp_min(0)[:, None]  # data symbol j rides channel use p + j
        x_data = normalize_power(z, data)
        uses = torch.cat([torch.ones_like(z[:, :p]), x_data[:, : max(0, n - p)]], dim=1)[:, :n]
        uses = torch.where(sent, uses, torch.zeros((), dtype=z.dtype, device=z.device))
        real = _real_dtype(uses)
        snr = _per_sample_snr(snr_db, uses)
        h = self.sample_fading(uses.shape[0], generator, uses.device, real).to(uses.dtype)
        noise_var = torch.pow(10.0, -snr / 10.0)
        noise = _complex_normal(uses.shape, generator, uses.device, real) * noise_var.sqrt()[:, None]
        y = h[:, None] * uses + noise
        n_pilots = torch.clamp(k, max=p)  # a sample with k < pilots sends only k pilots
        pilots = positions[None, :] < n_pilots[:, None]
        pilot_sum = torch.where(pilots, y, torch.zeros((), dtype=y.dtype, device=y.device)).sum(-1)
        h_hat = pilot_sum / (n_pilots.to(real) + noise_var)
        equalised = h_hat.conj()[:, None] * y / (h_hat.abs().square() + noise_var)[:, None]
        shifted = torch.cat([equalised[:, p:], torch.zeros_like(equalised[:, :p])], dim=1)[:, :n]
        shifted = torch.where(data, shifted, torch.zeros((), dtype=y.dtype, device=y.device))
        effective = snr + 10.0 * torch.log10(h_hat.abs().square() + _EPS)
        return ChannelOutput(y=shifted, h=h, state=torch.stack([snr, effective], dim=-1), mask=data)

    def forward(
        self,
        z: torch.Tensor,
        snr_db: SNRLike,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.transmit(z, snr_db, mask, generator).y

    def extra_repr(self) -> str:
        return f"csi={self.csi!r}"


class AWGNChannel(Channel):
    """Additive white Gaussian noise only: ``h = 1``, so the receiver always knows it."""

    name = "awgn"

    def sample_fading(
        self, batch: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return torch.ones(batch, device=device, dtype=dtype).to(
            torch.complex128 if dtype == torch.float64 else torch.complex64
        )


class RayleighChannel(Channel):
    """No line of sight: ``h ~ CN(0, 1)``, so ``|h|^2 ~ Exp(1)``."""

    name = "rayleigh"

    def sample_fading(
        self, batch: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        return _complex_normal((batch,), generator, device, dtype)


class RicianChannel(Channel):
    """Line of sight plus scatter: ``h = sqrt(K/(K+1)) e^{j theta} + sqrt(1/(K+1)) CN(0, 1)``, theta uniform."""

    name = "rician"

    def __init__(self, k_factor: float = 4.0, csi: str = "perfect", pilots: int = 1) -> None:
        super().__init__(csi=csi, pilots=pilots)
        self.k_factor = _check_k_factor(k_factor)

    def sample_fading(
        self, batch: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        k = self.k_factor
        theta = rand((batch,), generator, device, dtype) * (2.0 * math.pi)
        line_of_sight = torch.polar(torch.full_like(theta, math.sqrt(k / (k + 1.0))), theta)
        scatter = _complex_normal((batch,), generator, device, dtype) * math.sqrt(1.0 / (k + 1.0))
        return line_of_sight + scatter

    def extra_repr(self) -> str:
        return f"k_factor={self.k_factor}, csi={self.csi!r}"


# ----------------------------------------------------------------------------- construction


def _check_csi(csi: Any) -> str:
    if csi not in CSI_MODES:
        raise ValueError(f"argument 'csi' = {csi!r} is invalid: expected one of {CSI_MODES}")
    return csi


def _check_pilots(pilots: Any) -> int:
    if isinstance(pilots, bool) or not isinstance(pilots, int) or pilots < 1:
        raise ValueError(
            f"argument 'pilots' = {pilots!r} is invalid: expected an integer >= 1 (pilot symbols per packet)"
        )
    return pilots


def _check_k_factor(k_factor: Any) -> float:
    ok = (
        isinstance(k_factor, (int, float))
        and not isinstance(k_factor, bool)
        and math.isfinite(k_factor)
        and k_factor >= 0
    )
    if not ok:
        raise ValueError(f"argument 'k_factor' = {k_factor!r} is invalid: expected a finite Rician K factor >= 0")
    return float(k_factor)


# name -> the channel built from validated (csi, k_factor, pilots); AWGN has h = 1, known, so it never sends pilots
CHANNELS = {
    "awgn": lambda csi, k_factor, pilots: AWGNChannel(csi="perfect" if csi == "pilot" else csi),
    "rayleigh": lambda csi, k_factor, pilots: RayleighChannel(csi=csi, pilots=pilots),
    "rician": lambda csi, k_factor, pilots: RicianChannel(k_factor=k_factor, csi=csi, pilots=pilots),
}
CHANNEL_NAMES = tuple(CHANNELS)


def get_channel(name: str, **kwargs: Any) -> Channel:
    """Build a channel by name: ``"awgn"``, ``"rayleigh"`` (``csi``, ``pilots``) or ``"rician"`` (``k_factor``, ``csi``, ``pilots``).

    ``csi``, ``k_factor`` and ``pilots`` are accepted (and validated) for every name so that one
    config can build all channels; they are ignored where they do not apply (AWGN has ``h = 1``,
    known to the receiver, so it sends no pilots; Rayleigh has no K).
    """
    if name not in CHANNEL_NAMES:
        raise ValueError(f"argument 'name' = {name!r} is invalid: expected one of {CHANNEL_NAMES}")
    unknown = sorted(set(kwargs) - {"csi", "k_factor", "pilots"})
    if unknown:
        raise ValueError(
            f"argument {unknown[0]!r} = {kwargs[unknown[0]]!r} is not accepted: get_channel takes only 'csi', 'k_factor' and 'pilots'"
        )
    csi = _check_csi(kwargs.get("csi", "perfect"))
    k_factor = _check_k_factor(kwargs.get("k_factor", 4.0))
    pilots = _check_pilots(kwargs.get("pilots", 1))
    return CHANNELS[name](csi, k_factor, pilots)


def _spec_kwargs(spec: ChannelSpec) -> tuple[str, dict]:
    """Split a channel spec (a name, or ``{"name", "csi", "k_factor"}``) into name and kwargs; None means default."""
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(
            f"argument 'spec' = {spec!r} is invalid: expected a channel name or a mapping with 'name' in {CHANNEL_NAMES}"
        )
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"argument 'spec' = {dict(spec)!r} has unknown key {unknown[0]!r}: expected only {_SPEC_KEYS}")
    kwargs = {key: spec[key] for key in ("csi", "k_factor", "pilots") if spec.get(key) is not None}
    return spec["name"], kwargs


def channel_from_spec(spec: ChannelSpec) -> Channel:
    """Build a channel from a results/config spec such as ``{"name": "rician", "k_factor": 4.0}``."""
    name, kwargs = _spec_kwargs(spec)
    return get_channel(name, **kwargs)


def channel_label(spec: ChannelSpec) -> str:
    """Short stable name for results tables: ``awgn``, ``rayleigh-csi``, ``rayleigh-pilot1``, ``rayleigh-nocsi``, ``rician-k4-csi``."""
    channel = channel_from_spec(spec)
    if isinstance(channel, AWGNChannel):
        return "awgn"
    csi = {"perfect": "csi", "none": "nocsi"}.get(channel.csi, f"pilot{channel.pilots}")
    if isinstance(channel, RicianChannel):
        return f"rician-k{channel.k_factor:g}-{csi}"
    return f"{channel.name}-{csi}"


def send_per_sample(
    channels: Iterable[nn.Module],
    z: torch.Tensor,
    snr_db: torch.Tensor,
    mask: torch.Tensor,
    channel_ids: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple:
    """Sample ``b``'s sent symbols (``mask[b]``) through channel ``channel_ids[b]``: ``(y, state, data_mask)``.

    Training mixes channel types within a batch; each channel sees only its own rows. ``data_mask``
    marks the data symbols the decoder reads (the sent ones, fewer where pilots took channel uses).
    """
    y = torch.zeros_like(z)
    state = torch.zeros(z.shape[0], 2, device=z.device)
    data_mask = mask.clone()
    for cid, channel in enumerate(channels):
        assert isinstance(channel, Channel), f"channel {cid} is a {type(channel).__name__}, not an rkd Channel"
        rows = channel_ids == cid
        if not bool(rows.any()):
            continue
        out = channel.transmit(z[rows], snr_db[rows].float(), mask[rows], generator=generator)
        y[rows] = out.y.to(y.dtype)
        state[rows] = out.state.float()
        data_mask[rows] = out.mask
    return y, state, data_mask
