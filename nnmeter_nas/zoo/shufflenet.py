"""ShuffleNetV2 (Ma et al., 2018): channel split (``chunk``) and channel shuffle."""
from __future__ import annotations

import torch
from torch import nn

from .common import conv_bn_act, init_weights


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channel groups: reshape (N, g, C/g, H, W) -> transpose -> reshape back."""
    n, c, h, w = x.shape
    x = x.reshape(n, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit.

    stride 1: split channels in half, transform one half (1x1, dw3x3, 1x1), concat, shuffle.
    stride 2: both branches see the whole input and are strided; output channels double-ish.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, split_op: str = "chunk") -> None:
        super().__init__()
        self.stride = stride
        self.split_op = split_op
        self.half = in_ch // 2
        branch_ch = out_ch // 2
        if stride == 1 and in_ch != out_ch:
            raise ValueError(f"ShuffleUnit stride 1 needs in_ch == out_ch, got {in_ch}, {out_ch}")
        right_in = in_ch if stride == 2 else branch_ch
        if stride == 2:
            self.left = nn.Sequential(
                conv_bn_act(in_ch, in_ch, 3, 2, groups=in_ch, act=None),
                conv_bn_act(in_ch, branch_ch, 1),
            )
        self.right = nn.Sequential(
            conv_bn_act(right_in, branch_ch, 1),
            conv_bn_act(branch_ch, branch_ch, 3, stride, groups=branch_ch, act=None),
            conv_bn_act(branch_ch, branch_ch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            if self.split_op == "chunk":
                x1, x2 = x.chunk(2, dim=1)
            else:
                # python ints (not traced x.shape) so the exporter emits one static Split
                x1, x2 = x.split([self.half, self.half], dim=1)
            out = torch.cat((x1, self.right(x2)), dim=1)
        else:
            out = torch.cat((self.left(x), self.right(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2: 3x3/2 stem, 3x3/2 max-pool, three stages of units, 1x1 conv, pool, FC.

    ``split_op`` picks how the channel split is written: ``"chunk"`` (``Tensor.chunk``; the
    TorchScript ONNX exporter emits Shape/Gather/Div/Slice nodes) or ``"split"``
    (``Tensor.split`` with static sizes; exported as a single ONNX ``Split``).
    """

    STAGE_REPEATS = (4, 8, 4)
    CHANNELS = {
        0.5: (24, 48, 96, 192, 1024),
        1.0: (24, 116, 232, 464, 1024),
        1.5: (24, 176, 352, 704, 1024),
        2.0: (24, 244, 488, 976, 2048),
    }

    def __init__(
        self, num_classes: int = 1000, width_mult: float = 1.0, split_op: str = "chunk"
    ) -> None:
        super().__init__()
        if split_op not in ("chunk", "split"):
            raise ValueError(f"ShuffleNetV2 split_op must be 'chunk' or 'split', got {split_op!r}")
        if width_mult not in self.CHANNELS:
            raise ValueError(
                f"ShuffleNetV2 width_mult must be one of {sorted(self.CHANNELS)}, got {width_mult}"
            )
        chans = self.CHANNELS[width_mult]
        self.stem = nn.Sequential(conv_bn_act(3, chans[0], 3, 2), nn.MaxPool2d(3, 2, 1))
        stages: list[nn.Module] = []
        in_ch = chans[0]
        for repeats, out_ch in zip(self.STAGE_REPEATS, chans[1:4]):
            units = [ShuffleUnit(in_ch, out_ch, 2, split_op)]
            units += [ShuffleUnit(out_ch, out_ch, 1, split_op) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.head = conv_bn_act(in_ch, chans[4], 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans[4], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.stages(self.stem(x))))
        return self.fc(torch.flatten(x, 1))


def shufflenet_v2(
    num_classes: int = 1000, width_mult: float = 1.0, split_op: str = "chunk"
) -> ShuffleNetV2:
    """ShuffleNetV2 1.0x (2.3M parameters, 146 MMACs at 224x224)."""
    return ShuffleNetV2(num_classes, width_mult, split_op)
