"""The two trainable systems: the stage-1 student and the stage-2 transmitter/channel/receiver chain.

Stage 2 keeps the stage-1 classifier and projector: the CAT decoder learns to rebuild the student's
pooled semantic feature from noisy symbols, so the head that already understands that feature can
classify it, and the projector still maps it to the teacher's space for feature KD.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rkd.channels import channel_from_spec, send_per_sample
from rkd.draws import symbol_mask
from rkd.models.cat import CATDecoder, CATEncoder
from rkd.nas.heads import FeatureProjector
from rkd.nas.network import Student


class DistilledStudent(nn.Module):
    """Student encoder + projector into the teacher's feature space (stage 1)."""

    def __init__(self, student: Student, teacher_feature_dim: int) -> None:
        super().__init__()
        self.student = student
        self.projector = FeatureProjector(student.feature_dim, teacher_feature_dim)

    def forward(self, x: torch.Tensor) -> dict:
        out = self.student(x)
        return {
            "logits": out["logits"],
            "features": out["features"],
            "tokens": out["tokens"],
            "projected": self.projector(out["features"]),
        }

    def output_heads(self) -> dict:
        """The modules that serve one output only: frozen by ``rkd.engine.fit`` when no loss term reads it."""
        return {"logits": self.student.classifier, "projected": self.projector}


class RKDSystem(nn.Module):
    """Student -> CAT encoder -> channel -> CAT decoder -> head, one sample independent of the rest."""

    def __init__(
        self,
        stage1: DistilledStudent,
        channel_specs: Sequence[dict],
        d_model: int,
        encoder_depth: int,
        decoder_depth: int,
        heads: int,
        mlp_ratio: float,
        max_symbols: int,
        dropout: float = 0.0,
        use_state: bool = True,
    ) -> None:
        super().__init__()
        student = stage1.student
        self.student = student
        self.projector = stage1.projector
        self.max_symbols = max_symbols
        self.encoder = CATEncoder(
            student.token_dim,
            d_model=d_model,
            depth=encoder_depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
            max_symbols=max_symbols,
            dropout=dropout,
            use_state=use_state,
        )
        self.decoder = CATDecoder(
            d_model=d_model,
            depth=decoder_depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
            max_symbols=max_symbols,
            out_dim=student.feature_dim,
            dropout=dropout,
            use_state=use_state,
        )
        self.channels = nn.ModuleList(channel_from_spec(spec) for spec in channel_specs)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.student.classifier(features)

    def transmit(self, tokens: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        """Transmitter side: semantic tokens -> L complex symbols; it knows the nominal SNR only."""
        state = torch.stack([snr_db, snr_db], dim=-1).to(tokens.dtype)
        return self.encoder(tokens, state)

    def receive(
        self,
        z: torch.Tensor,
        snr_db: torch.Tensor,
        k: torch.Tensor,
        channel_ids: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict:
        """Send the first k symbols of each sample through its channel and decode them."""
        mask = symbol_mask(k, self.max_symbols).to(z.device)
        y, state, data_mask = send_per_sample(self.channels, z, snr_db, mask, channel_ids, generator)
        features = self.decoder(y, data_mask, state)
        return {"features": features, "logits": self.classify(features), "projected": self.projector(features)}

    def forward(
        self,
        x: torch.Tensor | None,
        snr_db: torch.Tensor,
        k: torch.Tensor,
        channel_ids: torch.Tensor,
        generator: torch.Generator | None = None,
        tokens: torch.Tensor | None = None,
    ) -> dict:
        """Images ``x`` through the whole chain, or precomputed student ``tokens`` (stage 2 with a frozen student)."""
        if tokens is None:
            tokens = self.student(x)["tokens"]
        z = self.transmit(tokens, snr_db)
        return self.receive(z, snr_db, k, channel_ids, generator)
