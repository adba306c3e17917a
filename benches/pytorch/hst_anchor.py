#!/usr/bin/env python3
"""PyTorch anchor of `hst bench --config voc-small`: the same HST training step, written in PyTorch.

A measuring tool, not part of CI. It builds the model of `TrainConfig::voc_lite0()` as `BenchPreset::VocSmall`
uses it (random weights, EfficientNet-Lite0 at 224, batch 32, 20 classes, stem + stages 1-3 frozen), times a
training step phase by phase (forward, loss, backward, Adam step) and inference exactly as `bench_model` in
`src/bench/` does, and prints one Markdown row with the columns of `hst bench` (or one JSON object with
`--json`). Run it through `benches/pytorch/compare.sh` to put it side by side with the Rust binary.

Where the numbers come from (Rust file → what is mirrored here):
- `src/bench/`: `BenchPreset::VocSmall` (batch 32, 224 px, 20 classes, 2 warm-up + 5 timed steps, seed 0),
  `BenchSpec::schedule_step` (epoch max(pseudo_label_epoch, 5) = 5: every loss term active, ramp 1),
  `BenchConstants` (word vectors, adjacency and prototypes from `SeededRng::from_parts`, ported bit for bit below, as are the
  random partial labels), `bench_model` (the timing loop), `adam` (Adam, coupled L2 weight decay).
- `crates/hst-train/src/config.rs` `TrainConfig::voc_lite0()`: `HstConfig::new(efficientnet_lite0 frozen 3,
  SarlConfig::new(_, 1280, 50).with_pool(false))`, Adam lr 1e-4, weight decay 5e-4, betas 0.9/0.999, eps 1e-8.
  Everything else is a default: SARL D = 1024, d = 512, D_o = 1024, T = 3; IST hidden 512, pair dim 1024,
  pair chunk 2048; 10 prototypes per class; thresholds 1.0, learnable; loss weights 1/1/10/0.1/0.1/0.05/0.05.
- `crates/hst-backbone/src/trunk/{efficientnet,norm}.rs`, `sarl/*`, `crates/hst-transfer/src/{ist,hst,dtl,
  pseudo_labels}.rs`, `cst/similarity.rs`, `loss/*`: the modules and losses (comments below say where).

The author's reference code (HCP-MLR-PL, /work/shared/docs/hst-spec.md) differs in layout in two places where the
Rust implementation computes the same function in fewer FLOPs; this anchor follows the Rust by default, so that
both sides do the same arithmetic, and `--reference-layout` switches both to the reference's literal order:
- semantic decoupling: the reference applies fc3 (d→d) to z [batch, hw, classes, d] then fc4 (d→1); the Rust
  folds them into one vector W3·w4 (no [batch, hw, classes, d] output of fc3).
- IST head: the reference concatenates [g_i ; g_j] for every pair, applies intra_fc_2, ReLU, intra_fc_3, then the
  per-pair layer; the Rust splits intra_fc_2 into two per-class projections gathered per pair and folds
  intra_fc_3 into the per-pair weights.
The reference's trunk is a ResNet-101 at 448 px with a 2x2 average pool before SARL; voc-small is the project's
small CPU configuration (EfficientNet-Lite0 at 224, no pool), so there is no reference layout for that part.

Usage:
    target/pytorch-venv/bin/python benches/pytorch/hst_anchor.py [--warmup 2] [--steps 5] [--threads N] [--json]
    ... --weights /work/shared/weights/efficientnet-lite0-imagenet.safetensors     # ImageNet trunk weights
    ... --check-weights /work/shared/weights/efficientnet-lite0-imagenet.expected.safetensors  # trunk check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import struct
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------------------
# Configuration (TrainConfig::voc_lite0() + BenchPreset::VocSmall)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    """The voc-small benchmark. Every value is the Rust configuration's (see the module docstring)."""

    name: str = "voc-small"
    batch: int = 32
    image_size: int = 224
    classes: int = 20
    warmup: int = 2
    steps: int = 5
    seed: int = 0
    # Trunk: EfficientNet-Lite0, stem + levels 1..=3 frozen (TrunkConfig::efficientnet_lite0().with_frozen_stages(3)).
    frozen_stages: int = 3
    # SARL (SarlConfig::new(0, 1280, 50).with_pool(false), defaults otherwise).
    in_channels: int = 1280
    embed_dim: int = 50
    feature_dim: int = 1024
    attention_dim: int = 512
    output_dim: int = 1024
    time_steps: int = 3
    pool: bool = False
    # IST (IstConfig defaults).
    ist_hidden_dim: int = 512
    ist_pair_dim: int = 1024
    ist_pair_chunk: int = 2048
    asl_gamma_pos: float = 1.0
    asl_gamma_neg: float = 2.0
    asl_clip: float = 0.05
    asl_eps: float = 1e-8
    # CST (CstConfig defaults).
    prototypes: int = 10
    cosine_eps: float = 1e-9
    instance_eps: float = 1e-9
    instance_random_factor: int = 2
    # DTL (ThresholdsConfig defaults).
    tau_ist: float = 1.0
    tau_cst: float = 1.0
    # LossWeights defaults.
    w_ist_bce: float = 1.0
    w_cst_bce: float = 1.0
    w_cooccurrence: float = 10.0
    w_dtl_ist: float = 0.1
    w_dtl_cst: float = 0.1
    w_instance: float = 0.05
    w_prototype: float = 0.05
    # ScheduleConfig: pseudo_label_epoch 5; the bench runs at epoch max(5, 5) = 5, batch 1 of 100 -> ramp 1.
    pseudo_label_epoch: int = 5
    # OptimizerConfig of voc_lite0 (lr 1e-4; the rest default).
    lr: float = 1e-4
    weight_decay: float = 5e-4
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8

    @property
    def schedule_epoch(self) -> int:
        return max(self.pseudo_label_epoch, 5)

    @property
    def pseudo_active(self) -> bool:
        return self.schedule_epoch >= self.pseudo_label_epoch

    @property
    def ramp(self) -> float:
        # ScheduleConfig::ramp: batch_index / batches_per_epoch in epoch 0 only.
        return 1.0 / 100.0 if self.schedule_epoch == 0 else 1.0


# ---------------------------------------------------------------------------------------------------------------
# SeededRng::from_parts (crates/hst-data/src/rng.rs: rand_xoshiro's SplitMix64), ported bit for bit: the
# constants and partial labels are those of the Rust bench (`SeededRng::from_parts(&[seed, stream])`).
# ---------------------------------------------------------------------------------------------------------------

MASK64 = (1 << 64) - 1
PHI = 0x9E3779B97F4A7C15


def _mix(z: int) -> int:
    """SplitMix64's output function (`hst_data::rng::mix`)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


class HostRng:
    """`SeededRng::from_parts(&[seed, stream])`: SplitMix64 on a folded seed, uniform f32 in [0,1), Box-Muller
    normals."""

    def __init__(self, seed: int, stream: int):
        h = 0x243F6A8885A308D3
        for part in (seed, stream):
            h = _mix(h ^ _mix((part + PHI) & MASK64))
        self.state = h

    def next_u64(self) -> int:
        self.state = (self.state + PHI) & MASK64
        return _mix(self.state)

    def uniform(self) -> float:
        return (self.next_u64() >> 40) / float(1 << 24)

    def normal(self) -> float:
        u1 = max(self.uniform(), 1e-12)
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)

    def normals(self, n: int) -> list[float]:
        return [self.normal() for _ in range(n)]

    def partial_labels(self, rows: int, classes: int) -> list[float]:
        """Known w.p. 0.3, a known entry positive w.p. 0.1, one forced known positive per row."""
        labels = [0.0] * (rows * classes)
        for r in range(rows):
            for c in range(classes):
                if self.uniform() < 0.3:
                    labels[r * classes + c] = 1.0 if self.uniform() < 0.1 else -1.0
            c = self.next_u64() % classes
            labels[r * classes + c] = 1.0
        return labels


def bench_constants(cfg: BenchConfig):
    """`BenchConstants::of`: word vectors [C, E], adjacency [C, C] in [0,1), prototype centres [C, K, D]."""
    c, e, k, d = cfg.classes, cfg.embed_dim, max(cfg.prototypes, 1), cfg.feature_dim
    rng = HostRng(cfg.seed, 1)
    word_vectors = torch.tensor(rng.normals(c * e), dtype=torch.float32).reshape(c, e)
    adjacency = torch.tensor([rng.uniform() for _ in range(c * c)], dtype=torch.float32).reshape(c, c)
    centers = torch.tensor(rng.normals(c * k * d), dtype=torch.float32).reshape(c, k, d)
    valid = torch.ones(c, k)
    return word_vectors, adjacency, centers, valid


# ---------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 trunk (crates/hst-backbone/src/trunk/efficientnet.rs), lukemelas key layout
# ---------------------------------------------------------------------------------------------------------------

# (repeats, kernel, stride, expand_ratio, out_channels, level): the EfficientNet-B0 table (`B0_STAGES`).
B0_STAGES = [
    (1, 3, 1, 1, 16, 1),
    (2, 3, 2, 6, 24, 1),
    (2, 5, 2, 6, 40, 2),
    (3, 3, 2, 6, 80, 3),
    (3, 5, 1, 6, 112, 3),
    (4, 5, 2, 6, 192, 4),
    (1, 3, 1, 6, 320, 4),
]
LITE_STEM, LITE_HEAD = 32, 1280


class SameConv2d(nn.Conv2d):
    """Conv with TensorFlow "same" padding, no bias (Rust `same_conv`, burn `PaddingConfig2d::Same`):
    pad_total = max((ceil(n/s) - 1)·s + k - n, 0), pad_total // 2 before, the rest after (bottom/right)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)
        self._pads: dict[tuple[int, int], tuple[tuple[int, int], tuple[int, int, int, int] | None]] = {}
        # Rust: KaimingNormal { gain: sqrt(2), fan_out_only: true } (values do not affect timing).
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def _padding(self, h: int, w: int):
        key = (h, w)
        if key not in self._pads:
            pads = []
            for n, k, s in ((h, self.kernel_size[0], self.stride[0]), (w, self.kernel_size[1], self.stride[1])):
                total = max((math.ceil(n / s) - 1) * s + k - n, 0)
                pads.append((total // 2, total - total // 2))
            (top, bottom), (left, right) = pads
            if top == bottom and left == right:
                self._pads[key] = ((top, left), None)  # symmetric: let the conv pad
            else:
                self._pads[key] = ((0, 0), (left, right, top, bottom))
        return self._pads[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv_pad, explicit = self._padding(x.shape[-2], x.shape[-1])
        if explicit is not None:
            x = F.pad(x, explicit)
        return F.conv2d(x, self.weight, None, self.stride, conv_pad, self.dilation, self.groups)


def lite_bn(channels: int) -> nn.BatchNorm2d:
    # Lite BatchNorm: eps 1e-3, momentum 0.01 (`lite_bn`).
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted bottleneck without squeeze-excitation, ReLU6 (`MbConvBlock`); lukemelas attribute names."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, level: int):
        super().__init__()
        hidden = cin * expand
        self.level = level
        if expand != 1:
            self._expand_conv = SameConv2d(cin, hidden, 1)
            self._bn0 = lite_bn(hidden)
        else:
            self._expand_conv = None
            self._bn0 = None
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = lite_bn(hidden)
        self._project_conv = SameConv2d(hidden, cout, 1)
        self._bn2 = lite_bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self._expand_conv is not None:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """Stem (3→32, 3×3/2) → 16 MBConv blocks → head (320→1280, 1×1) → BN → ReLU6; no fc (a pure trunk)."""

    def __init__(self, frozen_stages: int):
        super().__init__()
        self._conv_stem = SameConv2d(3, LITE_STEM, 3, 2)
        self._bn0 = lite_bn(LITE_STEM)
        blocks = []
        cin = LITE_STEM
        for repeats, kernel, stride, expand, cout, level in B0_STAGES:
            for i in range(repeats):  # Lite0: width and depth multipliers 1.0
                blocks.append(MBConvBlock(cin, cout, expand, kernel, stride if i == 0 else 1, level))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, LITE_HEAD, 1)
        self._bn1 = lite_bn(LITE_HEAD)
        self.frozen_stages = frozen_stages
        self.freeze(frozen_stages)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and every block of level <= frozen_stages (the head too at 4): `EfficientNetLite::freeze`."""
        k = self.frozen_stages
        mods: list[nn.Module] = []
        if k >= 1:
            mods += [self._conv_stem, self._bn0]
        mods += [b for b in self._blocks if b.level <= k]
        if k >= 4:
            mods += [self._conv_head, self._bn1]
        return mods

    def freeze(self, k: int) -> None:
        self.frozen_stages = k
        for p in self.parameters():
            p.requires_grad_(True)
        for m in self.frozen_modules():
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        # The Rust trunk runs frozen stages' BatchNorm from the running statistics also while training
        # (`batch_norm_eval`, never updated): the reference's backbone.eval(); layer4.train().
        super().train(mode)
        if mode:
            for m in self.frozen_modules():
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))  # [batch, 32, h/2, w/2]
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))  # [batch, 1280, h/32, w/32]


# ---------------------------------------------------------------------------------------------------------------
# SARL (crates/hst-backbone/src/sarl/)
# ---------------------------------------------------------------------------------------------------------------


class SemanticDecoupling(nn.Module):
    """z = tanh((W1 x_hw) ⊙ (W2 e_c)), a = w4ᵀ(W3 z + b3) + b4, α = softmax_hw(a), f_c = Σ α x_hw."""

    def __init__(self, feature_dim: int, embed_dim: int, attention_dim: int, reference_layout: bool):
        super().__init__()
        self.image_projection = nn.Linear(feature_dim, attention_dim, bias=False)  # fc1
        self.word_projection = nn.Linear(embed_dim, attention_dim, bias=False)  # fc2
        self.hidden = nn.Linear(attention_dim, attention_dim)  # fc3
        self.score = nn.Linear(attention_dim, 1)  # fc4
        self.reference_layout = reference_layout

    def forward(self, fmap: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        b, dim, h, w = fmap.shape
        c = words.shape[0]
        x = fmap.reshape(b, dim, h * w).transpose(1, 2)  # [batch, hw, dim]
        image = self.image_projection(x).unsqueeze(2)  # [batch, hw, 1, d]
        word = self.word_projection(words).reshape(1, 1, c, -1)  # [1, 1, classes, d]
        z = torch.tanh(image * word)  # [batch, hw, classes, d]
        if self.reference_layout:
            logits = self.score(self.hidden(z)).reshape(b, h * w, c)  # reference: fc4(fc3(z))
        else:
            # As the Rust: fold fc3 and fc4 into one vector (no nonlinearity between them).
            folded_w = self.hidden.weight.t() @ self.score.weight.t()  # [d, 1]
            folded_b = self.score.bias + self.hidden.bias @ self.score.weight.t()  # [1]
            logits = (z.reshape(-1, z.shape[-1]) @ folded_w + folded_b).reshape(b, h * w, c)
        attention = torch.softmax(logits.transpose(1, 2), dim=2)  # [batch, classes, hw]
        return attention @ x  # [batch, classes, dim]


class Ggnn(nn.Module):
    """Gated GNN, T steps, in-matrix A and out-matrix Aᵀ, GRU update with separate linears on a and h."""

    def __init__(self, dim: int, time_steps: int):
        super().__init__()
        self.update_message = nn.Linear(2 * dim, dim)
        self.update_state = nn.Linear(dim, dim)
        self.reset_message = nn.Linear(2 * dim, dim)
        self.reset_state = nn.Linear(dim, dim)
        self.candidate_message = nn.Linear(2 * dim, dim)
        self.candidate_state = nn.Linear(dim, dim)
        self.time_steps = time_steps

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        # As the Rust: the three message linears run as one GEMM on concatenated weights, and the update and
        # reset state linears as another (same function).
        mw = torch.cat([self.update_message.weight, self.reset_message.weight, self.candidate_message.weight], 0)
        mb = torch.cat([self.update_message.bias, self.reset_message.bias, self.candidate_message.bias], 0)
        sw = torch.cat([self.update_state.weight, self.reset_state.weight], 0)
        sb = torch.cat([self.update_state.bias, self.reset_state.bias], 0)
        out_matrix = adjacency.t()
        for _ in range(self.time_steps):
            a = torch.cat([torch.matmul(adjacency, h), torch.matmul(out_matrix, h)], 2)  # [batch, C, 2D]
            zm, rm, cm = F.linear(a, mw, mb).chunk(3, 2)
            zs, rs = F.linear(h, sw, sb).chunk(2, 2)
            z = torch.sigmoid(zm + zs)
            r = torch.sigmoid(rm + rs)
            candidate = torch.tanh(cm + self.candidate_state(r * h))
            h = (1 - z) * h + z * candidate
        return h


class PerClassLinear(nn.Module):
    """One weight vector and bias per class (the reference's Element_Wise_Layer), U(±1/√dim)."""

    def __init__(self, classes: int, dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(classes).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, classes, dim] -> [batch, classes]
        return (x * self.weight).sum(2) + self.bias


class Sarl(nn.Module):
    def __init__(self, cfg: BenchConfig, word_vectors: torch.Tensor, adjacency: torch.Tensor, reference_layout: bool):
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2) if cfg.pool else None
        reduce = cfg.in_channels != cfg.feature_dim
        # 1×1 conv (no bias) + BatchNorm (burn defaults eps 1e-5, momentum 0.1), skipped when D == in_channels.
        self.reduce_conv = nn.Conv2d(cfg.in_channels, cfg.feature_dim, 1, bias=False) if reduce else None
        self.reduce_bn = nn.BatchNorm2d(cfg.feature_dim) if reduce else None
        self.decoupling = SemanticDecoupling(cfg.feature_dim, cfg.embed_dim, cfg.attention_dim, reference_layout)
        self.ggnn = Ggnn(cfg.feature_dim, cfg.time_steps)
        self.projection = nn.Linear(2 * cfg.feature_dim, cfg.output_dim)  # classifier `fc`
        self.per_class = PerClassLinear(cfg.classes, cfg.output_dim)  # classifier `classifiers`
        self.register_buffer("word_vectors", word_vectors, persistent=False)
        self.register_buffer("adjacency", adjacency, persistent=False)

    def forward(self, fmap: torch.Tensor):
        x = fmap
        if self.pool is not None:
            x = self.pool(x)
        if self.reduce_conv is not None:
            x = self.reduce_bn(self.reduce_conv(x))  # [batch, D, h', w']
        semantic = self.decoupling(x, self.word_vectors)  # [batch, C, D]
        state = self.ggnn(semantic, self.adjacency)  # [batch, C, D]
        projected = torch.tanh(self.projection(torch.cat([state, semantic], 2)))  # [batch, C, D_o]
        return self.per_class(projected), semantic


# ---------------------------------------------------------------------------------------------------------------
# IST head (crates/hst-transfer/src/ist.rs)
# ---------------------------------------------------------------------------------------------------------------


def pair_indices(n: int) -> tuple[list[int], list[int]]:
    first, second = [], []
    for i in range(n - 1):
        for j in range(i + 1, n):
            first.append(i)
            second.append(j)
    return first, second


class IstHead(nn.Module):
    """m_ij = v_ijᵀ(W_c ReLU(W_b [g_i ; g_j] + b_b) + b_c) + β_ij, g_c = W_a f_c + b_a, pairs i < j."""

    def __init__(self, cfg: BenchConfig, reference_layout: bool):
        super().__init__()
        hidden, pair_dim = cfg.ist_hidden_dim, cfg.ist_pair_dim
        first, second = pair_indices(cfg.classes)
        self.projection = nn.Linear(cfg.feature_dim, hidden)  # intra_fc_1
        self.pair_hidden = nn.Linear(2 * hidden, pair_dim)  # intra_fc_2
        self.pair_output = nn.Linear(pair_dim, pair_dim)  # intra_fc_3
        self.pair_classifier = PerClassLinear(len(first), pair_dim)  # intra_classifiers
        self.register_buffer("first", torch.tensor(first, dtype=torch.long), persistent=False)
        self.register_buffer("second", torch.tensor(second, dtype=torch.long), persistent=False)
        self.pair_chunk = max(cfg.ist_pair_chunk, 1)
        self.hidden = hidden
        self.reference_layout = reference_layout

    def forward(self, semantic: torch.Tensor) -> torch.Tensor:  # [batch, C, D] -> [batch, pairs]
        g = self.projection(semantic)  # [batch, C, hidden]
        if self.reference_layout:
            joint = torch.cat([g[:, self.first], g[:, self.second]], 2)  # [batch, pairs, 2·hidden]
            u = self.pair_output(F.relu(self.pair_hidden(joint)))  # [batch, pairs, pair_dim]
            return self.pair_classifier(u)
        # As the Rust `IstHead::forward`: W_b [g_i ; g_j] = W_b1 g_i + W_b2 g_j as two per-class projections
        # gathered per pair, W_c and b_c folded into the per-pair weights, pairs in chunks of `pair_chunk`.
        wb = self.pair_hidden.weight  # [pair_dim, 2·hidden] (torch layout [out, in])
        left = F.linear(g, wb[:, : self.hidden]).transpose(0, 1)  # [C, batch, pair_dim]
        right = F.linear(g, wb[:, self.hidden :], self.pair_hidden.bias).transpose(0, 1)  # [C, batch, pair_dim]
        v = self.pair_classifier.weight  # [pairs, pair_dim]
        folded_w = v @ self.pair_output.weight  # [pairs, pair_dim]: v·(W_c r) = (W_cᵀ v)·r
        folded_b = self.pair_classifier.bias + v @ self.pair_output.bias  # [pairs]
        pairs = v.shape[0]
        chunks = []
        for start in range(0, pairs, self.pair_chunk):
            end = min(start + self.pair_chunk, pairs)
            activated = F.relu(left[self.first[start:end]] + right[self.second[start:end]])  # [chunk, batch, pd]
            chunks.append(torch.bmm(activated, folded_w[start:end].unsqueeze(2)).squeeze(2))  # [chunk, batch]
        return torch.cat(chunks, 0).t() + folded_b  # [batch, pairs]


# ---------------------------------------------------------------------------------------------------------------
# The HST model (crates/hst-transfer/src/hst.rs)
# ---------------------------------------------------------------------------------------------------------------


class Hst(nn.Module):
    def __init__(self, cfg: BenchConfig, word_vectors, adjacency, reference_layout: bool = False):
        super().__init__()
        self.trunk = EfficientNetLite0(cfg.frozen_stages)
        self.sarl = Sarl(cfg, word_vectors, adjacency, reference_layout)
        self.ist = IstHead(cfg, reference_layout)
        # DTL thresholds τ_ist, τ_cst: [1] parameters, trained with everything else (`Thresholds`).
        self.tau_ist = nn.Parameter(torch.full((1,), cfg.tau_ist))
        self.tau_cst = nn.Parameter(torch.full((1,), cfg.tau_cst))

    def forward(self, images: torch.Tensor):
        logits, semantic = self.sarl(self.trunk(images))
        return logits, self.ist(semantic), semantic


# ---------------------------------------------------------------------------------------------------------------
# Losses (crates/hst-transfer/src/loss/, pseudo_labels.rs, cst/similarity.rs, HstObjective::compute)
# ---------------------------------------------------------------------------------------------------------------


def partial_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the known entries (t ≠ 0) of softplus(-s) for positives and softplus(s) for negatives."""
    targets = targets.detach()
    positive = (targets > 0).float()
    negative = (targets < 0).float()
    total = (positive * F.softplus(-logits) + negative * F.softplus(logits)).sum()
    return total / (positive.sum() + negative.sum()).clamp_min(1.0)


def asymmetric_loss(logits, targets, cfg: BenchConfig) -> torch.Tensor:
    """ASL, γ+ = 1, γ− = 2, clip 0.05, eps 1e-8, mean over all entries; focusing weights not detached."""
    t = targets.detach()
    not_t = 1 - t
    p = torch.sigmoid(logits)
    p_neg = 1 - p
    if cfg.asl_clip > 0:
        p_neg = (p_neg + cfg.asl_clip).clamp_max(1.0)
    loss = -(t * p.clamp_min(cfg.asl_eps).log() + not_t * p_neg.clamp_min(cfg.asl_eps).log())
    weight = t * (1 - p).pow(cfg.asl_gamma_pos) + not_t * (1 - p_neg).pow(cfg.asl_gamma_neg)
    return (loss * weight).mean()


def normalize(x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    return x / x.square().sum(dim, keepdim=True).sqrt().clamp_min(eps)


class Objective:
    """`HstObjective::compute` at a step past the pseudo-label epoch: every term of the HST objective."""

    def __init__(self, cfg: BenchConfig, batch: int, device: torch.device):
        self.cfg = cfg
        c = cfg.classes
        first, second = pair_indices(c)
        self.first = torch.tensor(first, device=device)
        self.second = torch.tensor(second, device=device)
        pairs = len(first)
        # The index map of `cooccurrence_matrix`: M_ij = σ(m_ij) for i ≠ j, 1 on the diagonal.
        index = {}
        for p, (i, j) in enumerate(zip(first, second)):
            index[(i, j)] = index[(j, i)] = p
        flat = [index.get((i, j), pairs) for i in range(c) for j in range(c)]
        self.matrix_map = torch.tensor(flat, device=device)
        # Image pairs a < b of the batch and the flat index of (class, a, b) into the [C, B, B] cosine table,
        # row-major over [image pairs, classes] as the Rust's term lists.
        fa, fb = pair_indices(batch)
        self.img_a = torch.tensor(fa, device=device)
        self.img_b = torch.tensor(fb, device=device)
        cls = torch.arange(c, device=device)
        self.cos_flat = cls[None, :] * batch * batch + self.img_a[:, None] * batch + self.img_b[:, None]

    def instance_loss(self, features: torch.Tensor, partial: torch.Tensor, seed: int) -> torch.Tensor:
        """L_inst with the reference's hard-negative subsampling. The Rust draws the random subset with its
        SplitMix64; this uses torch.randperm (the reference's choice): a different subset, the same sizes."""
        cfg = self.cfg
        b, c, _ = features.shape
        la, lb = partial[self.img_a], partial[self.img_b]  # [image pairs, C]
        pos_pos = self.cos_flat[(la == 1) & (lb == 1)]
        pos_neg = self.cos_flat[((la == 1) & (lb == -1)) | ((la == -1) & (lb == 1))]
        neg_neg = self.cos_flat[(la == -1) & (lb == -1)]
        normalized = normalize(features, 2, cfg.instance_eps).transpose(0, 1)  # [C, batch, dim]
        cosine = (normalized @ normalized.transpose(1, 2)).reshape(-1)  # [C·batch·batch]
        if pos_pos.numel() + pos_neg.numel() + neg_neg.numel() == 0:
            return cosine.sum() * 0.0
        terms = []
        n = pos_pos.numel()
        if n > 0:
            terms.append(1 - cosine[pos_pos])
        gen = torch.Generator().manual_seed(seed)
        for idx in (pos_neg, neg_neg):
            if idx.numel() == 0:
                continue
            values = cosine[idx] + 1
            if n > 0:
                keep = min(cfg.instance_random_factor * n, idx.numel())
                chosen = torch.randperm(idx.numel(), generator=gen)[:keep].to(values.device)
                terms.append(values[chosen])
                # The Rust sorts descending and slices; topk gives the same values.
                terms.append(torch.topk(values, min(n, idx.numel())).values)
            else:
                terms.append(values)
        return torch.cat(terms).mean()

    def ist_scores(self, pair_logits: torch.Tensor, partial: torch.Tensor) -> torch.Tensor:
        b, c = partial.shape
        extended = torch.cat([torch.sigmoid(pair_logits), pair_logits.new_ones(b, 1)], 1)  # [batch, pairs + 1]
        matrix = extended[:, self.matrix_map].reshape(b, c, c)  # [batch, C, C]
        positive = (partial == 1).float()
        count = positive.sum(1, keepdim=True).clamp_min(1.0)
        return (matrix @ positive.unsqueeze(2)).squeeze(2) / count

    def prototype_similarity(self, semantic, centers, valid) -> torch.Tensor:
        cfg = self.cfg
        features = normalize(semantic, 2, cfg.cosine_eps).transpose(0, 1)  # [C, batch, dim]
        cn = normalize(centers, 2, cfg.cosine_eps)  # [C, K, dim]
        cosine = features @ cn.transpose(1, 2)  # [C, batch, K]
        count = valid.sum(1, keepdim=True).clamp_min(1.0)  # [C, 1]
        return ((cosine * valid.unsqueeze(1)).sum(2) / count).t()  # [batch, C]

    def __call__(self, model: Hst, out, partial, centers, valid, seed: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        logits, cooccurrence, semantic = out
        partial = partial.detach()
        ramp = cfg.ramp
        losses = {}
        losses["partial_bce"] = partial_bce(logits, partial)
        total = losses["partial_bce"]

        # IST.
        pos = (partial == 1).float()
        pair_targets = pos[:, self.first] * pos[:, self.second]  # `cooccurrence_targets`
        losses["ist_asl"] = asymmetric_loss(cooccurrence, pair_targets, cfg)
        total = total + losses["ist_asl"] * (ramp * cfg.w_cooccurrence)
        if cfg.pseudo_active:
            soft = (self.ist_scores(cooccurrence, partial) - model.tau_ist).clamp(0.0, 1.0)
            targets = partial + (partial == 0).float() * (soft.detach() > 0).float()  # `hard_pseudo_labels`
            losses["ist_bce"] = partial_bce(logits, targets)
            losses["dtl_ist"] = partial_bce(soft, partial)  # DTL: the soft score used as a logit
            total = total + losses["ist_bce"] * cfg.w_ist_bce + losses["dtl_ist"] * cfg.w_dtl_ist

        # CST.
        losses["instance"] = self.instance_loss(semantic, partial, seed)
        total = total + losses["instance"] * (ramp * cfg.w_instance)
        if cfg.pseudo_active:
            class_mask = (valid.sum(1) > 0).float()  # [C]
            similarity = self.prototype_similarity(semantic, centers, valid)  # [batch, C]
            soft = (similarity - model.tau_cst).clamp(0.0, 1.0) * class_mask
            targets = partial + (partial == 0).float() * (soft.detach() > 0).float()
            losses["cst_bce"] = partial_bce(logits, targets)
            losses["dtl_cst"] = partial_bce(soft, partial * class_mask)
            losses["prototype"] = (similarity * partial + 1).mean()  # reference sign: s·y + 1
            total = (
                total
                + losses["cst_bce"] * cfg.w_cst_bce
                + losses["dtl_cst"] * cfg.w_dtl_cst
                + losses["prototype"] * cfg.w_prototype
            )
        losses["total"] = total
        return losses


# ---------------------------------------------------------------------------------------------------------------
# Weights (lukemelas safetensors) and the trunk check
# ---------------------------------------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                      "I64": torch.int64, "I32": torch.int32}


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    """A minimal safetensors reader (8-byte little-endian header size, JSON header, raw little-endian data)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        buf = bytearray(data[base + start : base + end])
        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def load_trunk_weights(trunk: EfficientNetLite0, path: str) -> None:
    state = {k: v for k, v in read_safetensors(path).items() if not k.startswith("_fc.")}
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"{path}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    trunk.freeze(trunk.frozen_stages)  # loading keeps requires_grad, but be explicit


def check_weights(weights: str, expected: str) -> int:
    """Eval-mode trunk on the expected file's input against its `features` (the 1280×7×7 map)."""
    trunk = EfficientNetLite0(frozen_stages=0)
    load_trunk_weights(trunk, weights)
    trunk.eval()
    ref = read_safetensors(expected)
    with torch.no_grad():
        got = trunk(ref["input"].float())
    want = ref["features"].float()
    diff = (got - want).abs().max().item()
    rel = diff / want.abs().max().item()
    ok = rel < 1e-4
    print(f"trunk check: features {tuple(got.shape)}, max |diff| {diff:.3e}, relative {rel:.3e}: "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------------------------
# Measurement (bench_model in src/bench/step.rs)
# ---------------------------------------------------------------------------------------------------------------


def host_peak_rss() -> int | None:
    """VmHWM of /proc/self/status in bytes (what the Rust reports)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def host_rss() -> int | None:
    """VmRSS of /proc/self/status in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_host_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def human_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    gib = n / (1 << 30)
    return f"{gib:.2f} GiB" if gib >= 1.0 else f"{n / (1 << 20):.0f} MiB"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> float | None:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


def count_params(module: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


@dataclass
class Result:
    kind: str
    config: str
    backend: str
    torch: str
    threads: int
    device: str
    machine: dict
    trunk: str
    frozen_stages: int
    image_size: int
    batch: int
    classes: int
    warmup: int
    steps: int
    layout: str
    adam: str
    setup_seconds: float
    first_step_seconds: float
    train_images_per_second: float
    train_step_seconds: float
    infer_images_per_second: float | None
    phases: dict
    last_loss: float
    loss_terms: dict
    params: dict
    host_peak_rss_bytes: int | None
    host_peak_rss_reset: bool
    host_rss_start_bytes: int | None
    ru_maxrss_bytes: int
    device_peak_bytes: int | None
    unix_time: int = field(default_factory=lambda: int(time.time()))

    def markdown_header(self) -> str:
        cols = ["config", "backend", "device", "trunk (frozen)", "size", "batch", "classes", "train img/s",
                "infer img/s", "data img/s", "forward s", "loss s", "backward s", "optim s", "first step s",
                "host peak RSS", "device peak", "steps (warm-up)"]
        return "| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols)

    def markdown_row(self) -> str:
        m = self.machine
        load = f", load {m['load_average']:.1f}" if m.get("load_average") is not None else ""
        device = (f"{m['gpu']} ({m['cores']} CPU cores{load})" if m.get("gpu")
                  else f"{m['cpu']} ({m['cores']} cores, {self.threads} threads{load})")
        infer = f"{self.infer_images_per_second:.2f}" if self.infer_images_per_second is not None else "—"
        p = self.phases
        dev_peak = human_bytes(self.device_peak_bytes) if self.device_peak_bytes is not None else "—"
        return (f"| {self.config} | {self.backend} | {device} | {self.trunk} ({self.frozen_stages}) | "
                f"{self.image_size} | {self.batch} | {self.classes} | {self.train_images_per_second:.2f} | {infer} | "
                f"— | {p['forward']:.4f} | {p['loss']:.4f} | {p['backward']:.4f} | {p['optimizer']:.4f} | "
                f"{self.first_step_seconds:.2f} | {human_bytes(self.host_peak_rss_bytes)} | {dev_peak} | "
                f"{self.steps} ({self.warmup}) |")


def run(args) -> Result:
    cfg = BenchConfig()
    for name in ("batch", "image_size", "classes", "warmup", "steps", "seed", "frozen_stages"):
        v = getattr(args, name)
        if v is not None:
            setattr(cfg, name, v)
    if cfg.classes < 2 or cfg.batch < 2 or cfg.steps < 1:
        raise SystemExit("--classes and --batch must be at least 2, --steps at least 1")
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    rss_reset = reset_host_peak_rss()
    # Resident memory before the model is built: mostly torch's own libraries (about 0.5 GiB for PyPI's CUDA
    # wheel, even on a CPU); the Rust binary starts at a few MiB. Subtract it to compare the model's own memory.
    rss_start = host_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(cfg.seed)

    # Setup: model, optimiser, random inputs, prototypes (as bench_model).
    t_setup = time.perf_counter()
    word_vectors, adjacency, centers, valid = bench_constants(cfg)
    model = Hst(cfg, word_vectors, adjacency, reference_layout=args.reference_layout)
    if args.weights:
        load_trunk_weights(model.trunk, args.weights)
    model.to(device)
    model.train()
    adam_kwargs = {}
    if args.adam == "foreach":
        adam_kwargs["foreach"] = True
    elif args.adam == "fused":
        adam_kwargs["fused"] = True
    elif args.adam == "loop":
        adam_kwargs["foreach"] = False
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.Adam(trainable, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay, **adam_kwargs)  # coupled L2, as burn's Adam here
    images = torch.randn(cfg.batch, 3, cfg.image_size, cfg.image_size, device=device)
    partial = torch.tensor(HostRng(cfg.seed, 3).partial_labels(cfg.batch, cfg.classes),
                           dtype=torch.float32).reshape(cfg.batch, cfg.classes).to(device)
    centers, valid = centers.to(device), valid.to(device)
    objective = Objective(cfg, cfg.batch, device)
    sync()
    setup_seconds = time.perf_counter() - t_setup

    params = {}
    for part, module in (("trunk", model.trunk), ("sarl", model.sarl), ("ist", model.ist)):
        tr, fr = count_params(module)
        params[part] = {"trainable": tr, "frozen": fr}
    params["thresholds"] = {"trainable": 2, "frozen": 0}
    params["total"] = {k: sum(v[k] for v in params.values()) for k in ("trainable", "frozen")}

    # Training steps: warm-up, then timed, each phase closed by a sync.
    phases = {"forward": 0.0, "loss": 0.0, "backward": 0.0, "optimizer": 0.0}
    first_step = 0.0
    last = None
    for i in range(cfg.warmup + cfg.steps):
        t0 = time.perf_counter()
        out = model(images)
        sync()
        t1 = time.perf_counter()
        losses = objective(model, out, partial, centers, valid, cfg.seed + i)
        sync()
        t2 = time.perf_counter()
        losses["total"].backward()
        sync()
        t3 = time.perf_counter()
        optim.step()
        optim.zero_grad(set_to_none=True)
        sync()
        t4 = time.perf_counter()
        if i == 0:
            first_step = t4 - t0
        if i >= cfg.warmup:
            phases["forward"] += t1 - t0
            phases["loss"] += t2 - t1
            phases["backward"] += t3 - t2
            phases["optimizer"] += t4 - t3
        last = {k: float(v.detach().reshape(-1)[0]) for k, v in losses.items()}
        del out, losses
    phases = {k: v / cfg.steps for k, v in phases.items()}
    phases["data"] = None
    step_seconds = phases["forward"] + phases["loss"] + phases["backward"] + phases["optimizer"]
    if not all(math.isfinite(v) for v in last.values()):
        raise SystemExit(f"a loss term is not finite: {last}")

    # Inference: model.eval() (BatchNorm from running statistics), no autograd, the same batch.
    infer = None
    if not args.no_infer:
        model.eval()
        with torch.no_grad():
            for _ in range(cfg.warmup):
                model(images)
                sync()
            start = time.perf_counter()
            for _ in range(cfg.steps):
                model(images)
                sync()
            infer = cfg.batch * cfg.steps / (time.perf_counter() - start)

    gpu = torch.cuda.get_device_name(device) if cuda else None
    return Result(
        kind="bench-anchor",
        config=cfg.name,
        backend="pytorch" if not cuda else "pytorch-cuda",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        device=str(device),
        machine={"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "load_average": load_average(),
                 "python": platform.python_version()},
        trunk="efficientnet-lite0",
        frozen_stages=cfg.frozen_stages,
        image_size=cfg.image_size,
        batch=cfg.batch,
        classes=cfg.classes,
        warmup=cfg.warmup,
        steps=cfg.steps,
        layout="reference" if args.reference_layout else "rust",
        adam=args.adam,
        setup_seconds=setup_seconds,
        first_step_seconds=first_step,
        train_images_per_second=cfg.batch / max(step_seconds, 1e-12),
        train_step_seconds=step_seconds,
        infer_images_per_second=infer,
        phases=phases,
        last_loss=last["total"],
        loss_terms=last,
        params=params,
        host_peak_rss_bytes=host_peak_rss(),
        host_peak_rss_reset=rss_reset,
        host_rss_start_bytes=rss_start,
        ru_maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        device_peak_bytes=torch.cuda.max_memory_allocated(device) if cuda else None,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup", type=int, help="untimed warm-up steps (default 2, as hst bench)")
    ap.add_argument("--steps", type=int, help="timed steps (default 5, as hst bench)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: every core the process may use)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--image-size", dest="image_size", type=int)
    ap.add_argument("--classes", type=int)
    ap.add_argument("--frozen-stages", dest="frozen_stages", type=int, choices=range(5))
    ap.add_argument("--seed", type=int)
    ap.add_argument("--no-infer", action="store_true", help="skip the inference measurement")
    ap.add_argument("--weights", help="lukemelas EfficientNet-Lite0 .safetensors for the trunk (default: random)")
    ap.add_argument("--check-weights", metavar="EXPECTED",
                    help="check the trunk with --weights (default: the shared file beside EXPECTED) against "
                         "EXPECTED's features (…expected.safetensors), then exit")
    ap.add_argument("--reference-layout", action="store_true",
                    help="semantic decoupling and IST head in the reference's literal (unfolded) order")
    ap.add_argument("--adam", choices=["default", "loop", "foreach", "fused"], default="default",
                    help="torch Adam implementation (default: torch's choice for the device)")
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1…); default cpu")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON object on stdout (the Markdown row goes to stderr)")
    args = ap.parse_args(argv)

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)

    if args.check_weights:
        expected = args.check_weights
        weights = args.weights or os.path.join(os.path.dirname(expected), "efficientnet-lite0-imagenet.safetensors")
        return check_weights(weights, expected)

    result = run(args)
    p = result.params
    print(f"hst_anchor: torch {result.torch}, {result.threads} threads, layout {result.layout}; parameters: "
          + ", ".join(f"{k} {v['trainable'] / 1e6:.3f}M trainable / {v['frozen'] / 1e6:.3f}M frozen"
                      for k, v in p.items()), file=sys.stderr)
    print("hst_anchor: last losses " + ", ".join(f"{k} {v:.5g}" for k, v in result.loss_terms.items()),
          file=sys.stderr)
    if args.json:
        print(result.markdown_header(), file=sys.stderr)
        print(result.markdown_row(), file=sys.stderr)
        print(json.dumps(asdict(result)))
    else:
        print(result.markdown_header())
        print(result.markdown_row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
