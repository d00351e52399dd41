#!/usr/bin/env python
"""An independent SPOS supernet in plain torch (no NNI, no nnmeter_nas model code): does it learn?

Written for issue 15 to tell a bug in ``SPOSSpace`` / ``shared_subnet`` from a property of the
method on this proxy. Own ShuffleNetV2 blocks (k3/k5/k7 and the xception block, channel split
by even/odd channels, concatenation), the widths of ``SPOSSpace(small_input=True,
width_mult=0.25)``, one ``nn.ModuleList`` of candidates per layer, a path of 20 indices per
step; digits upsampled to 32x32, batch 64, SGD momentum 0.9, weight decay 4e-5. Prints the
training loss averaged over the last ``--every`` steps (chance: ln 10 = 2.303)::

    --fixed 3          one fixed all-k3 network (5, 7, x likewise)
    --init nni         NNI's initialisation (pointwise N(0, 1/fan_in), stem N(0, 0.01)) instead
                       of torch's default
    --affine 0         batch norms without affine parameters (as some SPOS supernets)
    --lr 0.01          another learning rate
    --vals 3,5,7       without the xception block
    --same-init        k5/k7 start as copies of k3 (zero-padded kernels)
    --warmup 50        the all-k3 path alone for 50 steps, then every candidate starts as its
                       copy (xcep: identity depthwise convs, see align_candidates in
                       nnmeter_nas.search_spaces.spos), then uniform sampling
    --warmup 50 --no-xcep-copy    the same without aligning xcep (left random)
    --same-steps 100   first 100 steps one value for all 20 layers (4 paths), then uniform
    --mix 100          first 100 steps: each layer takes a per-step base value with
                       probability 1 - step/100, else a uniform one
    --ramp 60          first 60 steps: each layer sampled with probability step/60, else k3

    taskset -c 0 python benchmarks/spos_plain_torch_probe.py --steps 100 --every 25 [options]

Results: ``benchmarks/results/spos_supernet_probe.txt``, ``docs/spos_supernet.md``.
"""
import argparse, random, sys, time, warnings; warnings.filterwarnings("ignore")
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples")); import _common
p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=100); p.add_argument("--every", type=int, default=25)
p.add_argument("--init", default="torch"); p.add_argument("--affine", type=int, default=1)
p.add_argument("--fixed", default=None); p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--width", type=float, default=0.25); p.add_argument("--warmup", type=int, default=0); p.add_argument("--same-init", action="store_true"); p.add_argument("--size", type=int, default=32); p.add_argument("--ramp", type=int, default=0); p.add_argument("--same-steps", type=int, default=0); p.add_argument("--mix", type=int, default=0); p.add_argument("--no-xcep-copy", action="store_true"); p.add_argument("--vals", default="3,5,7,x")
a = p.parse_args()
torch.set_num_threads(1); torch.manual_seed(0)
def bn(c): return nn.BatchNorm2d(c, affine=bool(a.affine))
def dw(c, k, s): return [nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=False), bn(c)]
def pw(i, o, relu=True): return [nn.Conv2d(i, o, 1, bias=False), bn(o)] + ([nn.ReLU()] if relu else [])
class Block(nn.Module):
    def __init__(s, cin, cout, stride, kind):
        super().__init__(); s.stride = stride
        inp = cin if stride == 2 else cin // 2; mid = cout // 2; outm = cout - inp
        if kind == "x":
            main = dw(inp, 3, stride) + pw(inp, mid) + dw(mid, 3, 1) + pw(mid, mid) + dw(mid, 3, 1) + pw(mid, outm)
        else:
            k = int(kind); main = pw(inp, mid) + dw(mid, k, stride) + pw(mid, outm)
        s.main = nn.Sequential(*main)
        if stride == 2:
            s.proj = nn.Sequential(*(dw(inp, 3 if kind == "x" else int(kind), 2) + pw(inp, inp)))
    def forward(s, x):
        if s.stride == 2: return torch.cat([s.proj(x), s.main(x)], 1)
        return torch.cat([x[:, 0::2], s.main(x[:, 1::2])], 1)
def ch(c): return max(8, int(round(c * a.width / 8)) * 8)
stem_c = 16 if a.width == 1 else ch(16)  # SPOSSpace scales the stem too
widths = [ch(c) for c in (64, 160, 320, 640)]; last = ch(1024)
vals = a.vals.split(",")
class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv2d(3, stem_c, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_c), nn.ReLU())
        layers, cin = [], stem_c
        for st, (rep, cout) in enumerate(zip((4, 4, 8, 4), widths)):
            for b in range(rep):
                layers.append(nn.ModuleList([Block(cin, cout, 2 if b == 0 else 1, v) for v in vals])); cin = cout
        s.layers = nn.ModuleList(layers)
        s.last = nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU())
        s.fc = nn.Linear(last, 10, bias=False)
    def forward(s, x, path):
        x = s.stem(x)
        for l, i in zip(s.layers, path): x = l[i](x)
        return s.fc(F.adaptive_avg_pool2d(s.last(x), 1).flatten(1))
net = Net()
if a.init == "nni":
    for n, m in net.named_modules():
        if isinstance(m, nn.Conv2d): nn.init.normal_(m.weight, 0, 0.01 if n.startswith("stem") else 1.0 / m.weight.shape[1])
        if isinstance(m, nn.BatchNorm2d) and m.bias is not None: nn.init.constant_(m.bias, 1e-4)
        if isinstance(m, nn.Linear): nn.init.normal_(m.weight, 0, 0.01)
x, y, xt, yt = _common.digits_tensors(a.size)
def copy_k3():
    with torch.no_grad():
        for l in net.layers:
            src = l[vals.index("3")]
            for j, v in enumerate(vals):
                if v in ("5", "7"):
                    for p1, p2 in zip(src.parameters(), l[j].parameters()):
                        pad = (p2.shape[-1] - p1.shape[-1]) // 2
                        p2.copy_(p1 if p1.shape == p2.shape else F.pad(p1, (pad,) * 4))
                    for b1, b2 in zip(src.buffers(), l[j].buffers()): b2.copy_(b1)
                if v == "x" and not a.no_xcep_copy:
                    dst = l[j]; m, k = dst.main, src.main
                    nn.init.dirac_(m[0].weight, groups=m[0].groups); nn.init.dirac_(m[10].weight, groups=m[10].groups)
                    m[2].weight.copy_(k[0].weight); m[3].load_state_dict(k[1].state_dict())
                    m[5].weight.copy_(k[3].weight); m[6].load_state_dict(k[4].state_dict())
                    m[7].weight.copy_(torch.eye(m[7].weight.shape[0])[:, :, None, None])
                    if m[8].weight is not None: m[8].weight.fill_(1); m[8].bias.fill_(3.0)
                    if m[11].weight is not None: m[11].weight.copy_(k[4].weight); m[11].bias.copy_(k[4].bias)
                    m[12].weight.copy_(k[5].weight); m[13].load_state_dict(k[6].state_dict())
                    if src.stride == 2: dst.proj.load_state_dict(src.proj.state_dict())
if a.same_init: copy_k3()
opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9, weight_decay=4e-5)
rng, g = random.Random(0), torch.Generator().manual_seed(0)
fixed = [vals.index(a.fixed)] * 20 if a.fixed else None
losses, t0 = [], time.time()
for s in range(a.steps):
    idx = torch.randint(0, len(y), (64,), generator=g)
    if a.warmup and s == a.warmup:
        copy_k3(); opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9, weight_decay=4e-5)
    path = fixed or ([vals.index("3")] * 20 if s < a.warmup else [rng.randrange(len(vals)) for _ in range(20)])
    if s < a.same_steps: path = [rng.randrange(len(vals))] * 20
    if s < a.mix:
        base = rng.randrange(len(vals)); eps = s / a.mix
        path = [i if rng.random() < eps else base for i in path]
    if a.ramp and s < a.ramp:
        pr = s / a.ramp
        path = [i if rng.random() < pr else vals.index("3") for i in path]
    loss = F.cross_entropy(net(x[idx], path), y[idx]); opt.zero_grad(); loss.backward(); opt.step()
    losses.append(loss.item())
    if (s + 1) % a.every == 0:
        print(f"{sys.argv[1:]} step {s+1}: {sum(losses[-a.every:]) / a.every:.3f} {time.time()-t0:.0f}s", flush=True)
