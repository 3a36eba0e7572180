"""An explicit code over the project's channels: codewords in, ``rkd.channels`` in between, ML decisions out.

The channel is ``rkd.channels`` itself (same power normalisation, SNR per complex symbol, block
fading, CSI modes), so a digital baseline meets the physics every other method meets. A packet
takes ``k`` channel uses; with ``csi="pilot"`` the channel's pilots take the first of them and the
code gets the other ``k - pilots`` (``data_uses``). The receiver decides per block:

* coherent (AWGN, perfect CSI, pilot CSI): minimum distance to the codewords,
  ``argmax Re<y, c> - |c|^2 / 2`` on the zero-forced ``y / h`` (``y / h_hat`` with pilots): ML for
  perfect CSI (the noise stays white within a packet), mismatched ML with an estimated ``h``;
* no CSI on a fading channel: ``argmax |<y, c>|^2``, the ML rule for equal-energy codewords when
  ``h ~ CN(0, 1)`` is unknown (phase-blind).
"""

from __future__ import annotations

import torch

from rkd.channels import Channel, channel_from_spec


def data_uses(spec, k: int) -> int:
    """Channel uses left to the code in a packet of ``k``: all, or ``k - pilots`` under pilot CSI."""
    channel = channel_from_spec(spec)
    return k - channel.pilots if channel.csi == "pilot" else k


def coherent(channel: Channel) -> bool:
    """Whether the receiver knows (or estimates) ``h``: everywhere but fading without CSI."""
    return channel.name == "awgn" or channel.csi in ("perfect", "pilot")


def receive(channel: Channel, symbols: torch.Tensor, snr_db: float, k: int, generator: torch.Generator) -> torch.Tensor:
    """Send complex ``[n, uses]`` symbols (``uses = data_uses``) in ``k`` channel uses; the zero-forced data symbols back.

    Pilot CSI: the channel returns MMSE-equalised data, ``conj(h_hat) y / (|h_hat|^2 + sigma^2)``; scaling it by
    ``(|h_hat|^2 + sigma^2) / |h_hat|^2`` (both known to the receiver) gives ``y / h_hat``.
    """
    n, uses = symbols.shape
    z = torch.zeros(n, k, dtype=torch.complex128)
    z[:, :uses] = symbols
    out = channel.transmit(z, float(snr_db), torch.ones(n, k, dtype=torch.bool), generator=generator)
    y = out.y[:, :uses].to(torch.complex128)
    if channel.csi == "pilot" and channel.name != "awgn":
        gain = torch.pow(10.0, (out.state[:, 1] - out.state[:, 0]).double() / 10.0)  # |h_hat|^2
        noise = 10.0 ** (-float(snr_db) / 10.0)
        y = y * ((gain + noise) / gain.clamp_min(1e-300))[:, None]
    return y


def decode(y: torch.Tensor, codebook: torch.Tensor, is_coherent: bool = True) -> torch.Tensor:
    """The index of the decided codeword for each row of ``y`` (complex ``[n, uses]``, codebook ``[M, uses]``)."""
    correlation = y @ codebook.conj().T
    if not is_coherent:
        return correlation.abs().argmax(-1)
    return (correlation.real - 0.5 * codebook.abs().square().sum(-1)).argmax(-1)


def send_messages(
    messages: torch.Tensor, codebook: torch.Tensor, spec, snr_db: float, k: int, generator: torch.Generator
) -> torch.Tensor:
    """Decoded messages: ``messages`` (long ``[n, blocks]``, or ``[n]`` for one block) sent block after block in one
    packet of ``k`` uses; ``blocks * codebook uses`` must equal ``data_uses(spec, k)``."""
    single = messages.dim() == 1
    messages = messages[:, None] if single else messages
    n, blocks = messages.shape
    length = codebook.shape[1]
    if blocks * length != data_uses(spec, k):
        raise ValueError(
            f"argument 'messages' has {blocks} blocks of {length} uses: expected {data_uses(spec, k)} data uses "
            f"in k={k} on {spec}"
        )
    channel = channel_from_spec(spec)
    y = receive(channel, codebook[messages].reshape(n, blocks * length), snr_db, k, generator)
    decided = decode(y.reshape(n * blocks, length), codebook, coherent(channel)).reshape(n, blocks)
    return decided[:, 0] if single else decided


def message_success(
    codebook: torch.Tensor, spec, snr_db: float, k: int, trials: int, seed: int, batch: int = 50_000
) -> float:
    """Monte Carlo probability of decoding a uniformly drawn message right (one block per packet), seeded."""
    generator = torch.Generator().manual_seed(seed)
    right = 0
    for start in range(0, trials, batch):
        messages = torch.randint(codebook.shape[0], (min(batch, trials - start),), generator=generator)
        right += int((send_messages(messages, codebook, spec, snr_db, k, generator) == messages).sum())
    return right / trials
