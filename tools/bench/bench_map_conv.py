"""The masked map convolution alone: tal's plans against the official padded stack, same weights and inputs.

Configs (hidden widths and batches of the paper-size benchmarks; batch 32 at N=64 / 128 is GPU work):
  charades     2D-TAN N=16 K5L8, 512 channels, batch 8
  activitynet  2D-TAN N=64 K9L4, 512 channels, batch 4
  tacos        2D-TAN N=128 K5L8, 512 channels, batch 2
  bsnpp        BSN++ 100 x 100 proposal map (max duration 100), 3x3 x 2, 128 channels, batch 16
Rows: "padded" is the official arithmetic (2D-TAN's MapConv: pad the map by (K-1)L/2 once, L unpadded
convs, ReLU, times `masked_conv_weights`, as nn.Conv2d stacks run it); "pairs" with oneDNN's inner
product and with torch.mm (MKL / OpenBLAS); "crop"; "fft" (FFT tiles); and what "auto" picks
(`MaskedMapConv`'s strategy in training and under no_grad, `product_kernel`'s timed choice of kernel).
infer is the forward under no_grad, train forward + backward of a sum; medians of --runs, 2 threads by default, and the largest output difference from the
padded stack.

    nice .venv/bin/python tools/bench/bench_map_conv.py --configs charades activitynet bsnpp --runs 3
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from benchlib import median_of

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import tal.models.map_conv as map_conv  # noqa: E402
from tal.models.bsnpp import proposal_map  # noqa: E402
from tal.models.tan2d import sparse_map_mask  # noqa: E402

CONFIGS = {"charades": ("2dtan", 16, 5, 8, 512, 8), "activitynet": ("2dtan", 64, 9, 4, 512, 4),
           "tacos": ("2dtan", 128, 5, 8, 512, 2), "bsnpp": ("bsnpp", 100, 3, 2, 128, 16)}


def mask_of(kind: str, size: int) -> torch.Tensor:
    return sparse_map_mask(size) if kind == "2dtan" else proposal_map(size, size)[1]


def padded_stack(conv: map_conv.MaskedMapConv, mask: torch.Tensor):
    """x [B, C, H, W] (0 off the mask) -> the official padded stack's output on the mask's cells [n, B, C]."""
    kernel, layers = conv.convs[0].kernel_size[0], len(conv.convs)
    pads = [(kernel - 1) * layers // 2] + [0] * (layers - 1)
    weights = map_conv.masked_conv_weights(mask, kernel, pads)

    def run(x):
        for layer, pad, weight in zip(conv.convs, pads, weights):
            x = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=pad)) * weight
        return x.flatten(2)[..., conv.cells].permute(2, 0, 1)
    return run


def bench(name: str, runs: int, seed: int) -> list[dict]:
    kind, size, kernel, layers, channels, batch = CONFIGS[name]
    mask = mask_of(kind, size)
    torch.manual_seed(seed)
    conv = map_conv.MaskedMapConv(mask, channels, channels, kernel, layers, strategy="pairs")
    cells = torch.randn(len(conv.cells), batch, channels)
    dense = cells.new_zeros(batch, channels, mask.numel())
    dense[..., conv.cells] = cells.permute(1, 2, 0)
    dense = dense.view(batch, channels, *mask.shape)
    official = padded_stack(conv, mask)
    with torch.no_grad():
        reference = official(dense)
    plans = [("padded (official arithmetic)", None, None), ("pairs, oneDNN products", "pairs", "onednn"),
             ("pairs, torch.mm (BLAS) products", "pairs", "blas"), ("crop", "crop", None),
             ("fft tiles", "fft", None)]
    auto = map_conv.MaskedMapConv(mask, 8, 8, kernel, layers)
    auto_kernel = map_conv.product_kernel(cells.dtype, channels, channels)
    saved = map_conv.PRODUCTS
    rows = []
    for label, strategy, products in plans:
        if strategy is None:
            fn, source = official, dense
        else:
            conv.strategy = conv.inference_strategy = strategy
            map_conv.PRODUCTS = products or saved
            fn, source = conv.forward_cells, cells
        with torch.no_grad():
            diff = float((fn(source) - reference).abs().max())
            infer_s = median_of(runs, lambda: fn(source))
        grad_source = source.clone().requires_grad_()
        train_s = median_of(runs, lambda: fn(grad_source).sum().backward())
        kernel_ok = products in (None, auto_kernel)
        rows.append(dict(config=name, plan=label, infer_s=infer_s, train_s=train_s, max_diff=diff,
                         auto_train=strategy == auto.strategy and kernel_ok,
                         auto_infer=strategy == auto.inference_strategy and kernel_ok))
    map_conv.PRODUCTS = saved
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["charades", "bsnpp"], choices=list(CONFIGS))
    parser.add_argument("--runs", type=int, default=3, help="timed runs per row; medians (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="OUT")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [row for name in args.configs for row in bench(name, args.runs, args.seed)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 'auto' picks * to train, + to infer")
    header = f"{'config':<12} {'plan':<34} {'infer s':>8} {'train s':>8} {'x padded':>14} {'max diff':>9}"
    print(header + "\n" + "-" * len(header))
    padded = {r["config"]: r for r in rows if r["plan"].startswith("padded")}
    for r in rows:
        base = padded[r["config"]]
        speed = f"{base['infer_s'] / r['infer_s']:.2f} / {base['train_s'] / r['train_s']:.2f}"
        marks = (" *" if r["auto_train"] else "") + (" +" if r["auto_infer"] else "")
        print(f"{r['config']:<12} {r['plan'] + marks:<34} {r['infer_s']:8.2f} "
              f"{r['train_s']:8.2f} {speed:>14} {r['max_diff']:9.1e}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
