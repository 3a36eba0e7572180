"""Channel-aware transformer (CAT) codec: semantic tokens -> ordered complex symbols -> feature.

The encoder maps the student's semantic tokens to ``max_symbols`` complex channel symbols; the
decoder maps the received (first ``k``) symbols back to a feature for the classifier head. Both
are conditioned on the channel state (nominal and effective SNR) by FiLM / adaptive LayerNorm:
a small MLP of the state gives every block a per-channel scale and shift, as SNR-adaptive JSCC
models do, so one codec serves the whole SNR range.

Rate adaptivity: training sends only the first ``k`` symbols of each sample (``k`` drawn per
sample by ``sample_rates``), so symbol ``i`` learns to carry what matters most when few symbols
arrive - a nested, ordered code that degrades gracefully as ``k`` shrinks.

Every operation is per sample (attention within a sample, LayerNorm, no batch statistics), so a
sample's output does not depend on what else is in the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

STATE_SCALE_DB = 20.0  # SNRs in dB are divided by this so the conditioning MLP sees O(1) inputs


# ----------------------------------------------------------------------------- rates


# ----------------------------------------------------------------------------- building blocks


def sinusoidal_positions(n: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed ``[n, dim]`` sinusoidal code of the token index, computed on the fly so any ``N`` works."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    angles = torch.arange(n, device=device, dtype=torch.float32)[:, None] * freqs[None, :]
    code = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if code.shape[-1] < dim:  # odd dim
        code = F.pad(code, (0, dim - code.shape[-1]))
    return code.to(dtype)


class StateEmbedding(nn.Module):
    """Channel state (SNRs in dB) -> a conditioning vector shared by all blocks of one codec half."""

    def __init__(self, state_dim: int, cond_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim), nn.SiLU())

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state / STATE_SCALE_DB)


class FiLMNorm(nn.Module):
    """Adaptive LayerNorm: ``LN(x) * (1 + scale(c)) + shift(c)``, the way the channel state enters a block."""

    def __init__(self, dim: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.film = nn.Linear(cond_dim, 2 * dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(x) * (1.0 + scale) + shift


class Attention(nn.Module):
    """Multi-head attention within each sample; ``key_mask`` (True = attend) hides padded keys."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"argument 'd_model' = {dim} is invalid: expected a multiple of heads = {heads}")
        self.heads = heads
        self.dropout = dropout
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(rearrange(out, "b h n d -> b n (h d)"))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mlp_ratio: float, dropout: float) -> None:
        hidden = max(1, int(round(dim * mlp_ratio)))
        super().__init__(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )


class ConditionedBlock(nn.Module):
    """Pre-norm transformer block whose norms are FiLM-modulated by the channel state.

    Self-attention when ``context`` is None; otherwise cross-attention from ``x`` (queries) to
    ``context`` (e.g. the encoder's symbol queries reading the semantic tokens).
    """

    def __init__(self, dim: int, cond_dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.attn_norm = FiLMNorm(dim, cond_dim)
        self.attn = Attention(dim, heads, dropout)
        self.attn_drop = nn.Dropout(dropout)
        self.mlp_norm = FiLMNorm(dim, cond_dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        context: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.attn_norm(x, cond)
        x = x + self.attn_drop(self.attn(h, context if context is not None else h, key_mask))
        return x + self.mlp(self.mlp_norm(x, cond))


def _cond_dim(d_model: int) -> int:
    return max(16, d_model // 2)


# ----------------------------------------------------------------------------- encoder / decoder


class SymbolReadout(nn.Module):
    """One ``Linear(d_model, 2)`` per symbol position: symbol ``i`` has its own read-out of query ``i``.

    A single projection shared by all positions, fed near-equal queries, lets the code collapse into
    repetition (every symbol a copy of one value); separate read-outs let each symbol carry its own.
    """

    def __init__(self, n_symbols: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_symbols, d_model, 2) / math.sqrt(d_model))
        self.bias = nn.Parameter(torch.zeros(n_symbols, 2))

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnd,ndt->bnt", queries, self.weight.to(queries.dtype)) + self.bias.to(queries.dtype)


class CATEncoder(nn.Module):
    """Semantic tokens ``[B, N, in_dim]`` + channel state ``[B, state_dim]`` -> complex symbols ``[B, max_symbols]``.

    Two paths are summed into the ``max_symbols`` complex symbols:

    - the transformer path: a fixed sinusoidal code of the token index is added after the input
      projection (computed per call, so ``N`` may change between calls); state-conditioned
      self-attention blocks mix the tokens; ``max_symbols`` distinct learned queries cross-attend
      to them (one state-conditioned block); each query has its own read-out (``SymbolReadout``);
    - a linear path from the pooled token (the student's pooled feature) straight to the 2L reals,
      which ``init_principal`` can set to the feature's principal directions in decreasing
      variance, so the code starts ordered: the first symbols carry the strongest components, and
      every extra symbol carries a new direction rather than a copy.

    The output is not power-normalised: the channel does that over the symbols sent.
    """

    def __init__(
        self,
        in_dim: int,
        d_model: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        max_symbols: int = 64,
        state_dim: int = 2,
        dropout: float = 0.0,
        use_state: bool = True,
    ) -> None:
        super().__init__()
        cond_dim = _cond_dim(d_model)
        self.max_symbols = max_symbols
        self.state_dim = state_dim
        self.use_state = use_state  # False: the state input is zeroed (the no-state ablation)
        self.in_proj = nn.Linear(in_dim, d_model)
        self.state_embed = StateEmbedding(state_dim, cond_dim)
        self.blocks = nn.ModuleList(
            ConditionedBlock(d_model, cond_dim, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.token_norm = nn.LayerNorm(d_model)
        # unit-scale queries: distinct from the start, so the cross-attention reads differ per symbol
        self.queries = nn.Parameter(torch.randn(max_symbols, d_model))
        self.readout = ConditionedBlock(d_model, cond_dim, heads, mlp_ratio, dropout)
        self.out_norm = nn.LayerNorm(d_model)
        self.to_symbol = SymbolReadout(max_symbols, d_model)
        self.linear_code = nn.Linear(in_dim, 2 * max_symbols)

    @torch.no_grad()
    def init_principal(self, features: torch.Tensor) -> None:
        """Set the linear path to the principal directions of ``features`` ``[n, in_dim]``, strongest first.

        Real ``2i`` and ``2i + 1`` (symbol ``i``) get components ``2i`` and ``2i + 1``, each scaled to
        unit variance over ``features``; positions beyond the feature's rank keep their random init.
        """
        centred = features.float() - features.float().mean(0, keepdim=True)
        _, singular, directions = torch.linalg.svd(centred, full_matrices=False)
        n = min(directions.shape[0], 2 * self.max_symbols)
        std = (singular[:n] / math.sqrt(max(1, centred.shape[0] - 1))).clamp_min(1e-6)
        weight = self.linear_code.weight
        weight[:n] = (directions[:n] / std[:, None]).to(weight.dtype)
        self.linear_code.bias[:n] = -(weight[:n] @ features.float().mean(0).to(weight.dtype))

    def forward(self, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 3:
            raise ValueError(f"argument 'tokens' has shape {tuple(tokens.shape)}: expected [batch, n_tokens, in_dim]")
        x = self.in_proj(tokens)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        if not self.use_state:
            state = torch.zeros_like(state)
        cond = self.state_embed(state.to(x.dtype))
        for block in self.blocks:
            x = block(x, cond)
        memory = self.token_norm(x)
        queries = self.queries.to(x.dtype).expand(x.shape[0], -1, -1)
        queries = self.readout(queries, cond, context=memory)
        symbols = self.to_symbol(self.out_norm(queries))
        linear = rearrange(self.linear_code(tokens.mean(dim=1)), "b (n two) -> b n two", two=2)
        return torch.view_as_complex((symbols + linear).float().contiguous())


class CATDecoder(nn.Module):
    """Received symbols ``[B, max_symbols]`` (complex) + sent mask + channel state -> feature ``[B, out_dim]``.

    Each symbol becomes a token from its (re, im) plus a learned embedding of its index (the code
    is ordered, so the index says what the symbol carries). A learned summary token, always present,
    joins them; state-conditioned self-attention blocks ignore unsent symbols through a key mask
    (the summary token keeps every attention row non-empty, even with ``k = 0``). The feature is
    read from the summary token - not a mean over symbol tokens, which would average away what
    each position carries - plus a linear map of the received reals (unsent ones are zero).
    """

    def __init__(
        self,
        d_model: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        max_symbols: int = 64,
        out_dim: int = 128,
        state_dim: int = 2,
        dropout: float = 0.0,
        use_state: bool = True,
    ) -> None:
        super().__init__()
        cond_dim = _cond_dim(d_model)
        self.max_symbols = max_symbols
        self.out_dim = out_dim
        self.state_dim = state_dim
        self.use_state = use_state  # False: the state input is zeroed (the no-state ablation)
        self.symbol_proj = nn.Linear(2, d_model)
        self.position = nn.Parameter(torch.randn(max_symbols, d_model))
        self.summary = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.state_embed = StateEmbedding(state_dim, cond_dim)
        self.blocks = nn.ModuleList(
            ConditionedBlock(d_model, cond_dim, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.out_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out_dim)
        self.linear_decode = nn.Linear(2 * max_symbols, out_dim)

    def forward(self, y: torch.Tensor, mask: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        # A prefix of n <= max_symbols symbols is accepted: the unsent tail never influences the
        # output, so a fixed-k sweep can skip it (the result equals the masked full-length call).
        n = y.shape[-1]
        if n > self.max_symbols or n < 1 or mask.shape != y.shape:
            raise ValueError(
                f"arguments 'y'/'mask' have shapes {tuple(y.shape)}/{tuple(mask.shape)}: expected both "
                f"[batch, n] with 1 <= n <= max_symbols={self.max_symbols}"
            )
        dtype = self.symbol_proj.weight.dtype
        mask = mask.to(torch.bool)
        y = y.to(torch.complex128 if y.dtype == torch.complex128 else torch.complex64)
        # torch.where, not a product: NaN/inf at an unsent position must not leak into the output
        received = torch.where(
            mask[..., None], torch.view_as_real(y), torch.zeros((), device=y.device, dtype=y.real.dtype)
        )
        received = received.to(dtype)
        x = self.symbol_proj(received) + self.position[:n].to(dtype)
        x = torch.cat([self.summary.to(dtype).expand(x.shape[0], -1, -1), x], dim=1)
        valid = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        if not self.use_state:
            state = torch.zeros_like(state)
        cond = self.state_embed(state.to(dtype))
        for block in self.blocks:
            x = block(x, cond, key_mask=valid)
        linear = F.linear(received.flatten(1), self.linear_decode.weight[:, : 2 * n], self.linear_decode.bias)
        return self.head(self.out_norm(x[:, 0])) + linear
