"""One run of tal's speed figures on a device: heads, evaluators, NMS and feature extraction.

Made for a CUDA machine (`python tools/bench/device_suite.py`, a few minutes); `--cpu --quick` runs the
same sections on the CPU in about a minute (the test suite runs it so). Everything it needs is made
on the fly in --scratch: synthetic grounding and detection sets (`tal.datasets.synthetic`), random
predictions, a generated video; backbones get random weights, so nothing is downloaded.

Sections, one table each (and one JSON document with --json):
  heads       every registered head on its synthetic config (configs/synthetic/<head>.yaml; without
              --quick the grounding heads at 2D-TAN's paper size, hidden 512, K5L8): training
              inputs/s (forward, backward, optimiser step) and inference inputs/s, with AMP off and on
              (autocast float16 on CUDA, bfloat16 on the CPU), and peak memory (CUDA: max allocated
              since the row started; CPU: the process's peak RSS so far)
  paper       every head at its paper size, from its benchmark config (model section, feature size,
              batch size; PAPER below) on random inputs of that size: training and inference inputs/s
              and peak memory, AMP off and on; with --quick only 2D-TAN on Charades-STA and A2Net on
              THUMOS14, at batch 1
  evaluators  detection mAP (ActivityNet-style JSON, 10 tIoUs) and grounding recall on random data
  nms         hard per-class NMS and capped gaussian soft-NMS on device tensors
  loader      one training epoch from the HDF5 cache (fresh task: every video read once) of 2D-TAN and
              A2Net, with train.num_workers 0 and 2 and, on CUDA, train.pin_memory off and on: training
              inputs/s including the batch building and the host -> device copies
  extract     for r2plus1d_18 and i3d, when `tal.features.backbones` registers them: clips/s of
              extraction end to end against decode-only clips/s over the same windows
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

EXTRACT_BACKBONES = ("r2plus1d_18", "i3d")
# row name: (benchmark config, input feature size, classes or None); batch sizes are the configs'
PAPER = {"2dtan charades": ("configs/charades_sta/2dtan_pool.yaml", 4096, None),
         "2dtan anet-captions": ("configs/activitynet_captions/2dtan_pool.yaml", 500, None),
         "2dtan tacos": ("configs/tacos/2dtan_pool.yaml", 4096, None),
         "man charades": ("configs/charades_sta/man.yaml", 4096, None),
         "a2net thumos14": ("configs/thumos14/a2net.yaml", 2048, 20),
         "tcn thumos14": ("configs/thumos14/tcn.yaml", 2048, 20),
         "s3d thumos14": ("configs/thumos14/s3d.yaml", 2048, 20),
         "bsnpp anet13": ("configs/activitynet13/bsnpp.yaml", 512, None),
         "s2dtan anet13": ("configs/activitynet13/s2dtan.yaml", 512, None)}
PAPER_QUICK = ("2dtan charades", "a2net thumos14")
WORDS = 15  # words per random sentence, given to the LSTM as random word vectors
PAPER_GROUNDING = {"2dtan": ["model.hidden_dim=512", "model.map_kernel=5", "model.map_layers=8",
                             "model.text.hidden_dim=512", "model.text.num_layers=3"],
                   "man": ["model.hidden_dim=512", "model.text.hidden_dim=512"]}


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one untimed call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def amp_dtype(device):
    """The autocast dtype of the AMP rows: float16 on CUDA (with a gradient scaler), bfloat16 on the CPU."""
    import torch

    return torch.float16 if device.type == "cuda" else torch.bfloat16


def training_step(model, optimizer, batches: list[dict], device, amp: bool):
    """A step as the trainer takes it (forward and loss under autocast when `amp`, scaled backward, optimiser
    step), one of `batches` a call in turn."""
    import torch

    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    calls = itertools.count()

    def step() -> None:
        batch = batches[next(calls) % len(batches)]
        with torch.autocast(device.type, dtype=amp_dtype(device), enabled=amp):
            loss = model(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def make_sets(scratch: Path, quick: bool) -> dict[str, Path]:
    from tal.datasets.synthetic import make_detection_set, make_grounding_set

    sets = {"grounding": scratch / "grounding", "detection": scratch / "detection"}
    if not (sets["grounding"] / "features.h5").is_file():
        make_grounding_set(sets["grounding"], num_videos=8 if quick else 60, seed=0)
    if not (sets["detection"] / "features.h5").is_file():
        make_detection_set(sets["detection"], num_videos=4 if quick else 48, seed=0)
    return sets


def head_config(head: str, sets: dict[str, Path], quick: bool) -> dict:
    from tal.config import load_config

    path = REPO / "configs" / "synthetic" / f"{head}.yaml"
    base = load_config(path)
    data = sets[base["task"]]
    if base["task"] == "grounding":
        overrides = [f"dataset.features={data / 'features.h5'}", f"dataset.train={data / 'train.jsonl'}",
                     f"dataset.test={data / 'test.jsonl'}"]
        if not quick:
            overrides += PAPER_GROUNDING.get(head, [])
    else:
        overrides = [f"dataset.features={data / 'features.h5'}", f"dataset.annotations={data / 'annotations.json'}"]
    return load_config(path, overrides)


def bench_head(head: str, sets: dict[str, Path], device, amp: bool, quick: bool) -> dict:
    """Training and inference inputs/s of one head, AMP off or on."""
    import torch

    from tal.engine.optim import build_optimizer
    from tal.tasks import build_task

    print(f"head {head}, AMP {'on' if amp else 'off'} ...", file=sys.stderr, flush=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    cfg = head_config(head, sets, quick)
    task = build_task(cfg)
    model = task.build_model().to(device)
    optimizer = build_optimizer(model, cfg["train"])
    batch_size = min(int(cfg["train"]["batch_size"]), 8 if quick else 32, task.num_train_items())
    dtype = amp_dtype(device)
    generator = torch.Generator().manual_seed(0)
    batches = [task.train_batch(model, torch.randint(task.num_train_items(), (batch_size,), generator=generator)
                                .tolist()) for _ in range(2)]
    batches = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in b.items()}
               for b in batches]
    train_step = training_step(model, optimizer, batches, device, amp)

    split = task.eval_split if cfg["task"] == "grounding" else "val"

    def infer() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=amp):
            task.predict(model, split, device)

    model.train()
    train_s = timed(train_step, device, 1 if quick else 5)
    model.eval()
    infer_items = len(task.video_items("val")) if cfg["task"] == "detection" else None
    infer_s = timed(infer, device, 1 if quick else 3)
    return dict(head=head, amp=amp, task=cfg["task"], batch_size=batch_size,
                params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                train_inputs_per_s=batch_size / train_s, infer_s=infer_s,
                infer_videos_per_s=None if infer_items is None else infer_items / infer_s,
                peak_memory_mib=peak_memory_mib(device))


def head_row(head: str, sets: dict[str, Path], device, amp: bool, quick: bool) -> dict:
    """`bench_head`, or the row's error (a head that fails under AMP is a finding, not a crash)."""
    try:
        return bench_head(head, sets, device, amp, quick)
    except RuntimeError as error:
        return dict(head=head, amp=amp, error=str(error).splitlines()[0])


def paper_model(name: str):
    """(model, optimizer, config) of a PAPER row; a grounding head reads given 300-d word vectors."""
    import torch

    import tal.models  # noqa: F401  (registers the heads)
    from tal.config import load_config
    from tal.engine.optim import build_optimizer
    from tal.registry import MODELS

    path, input_dim, num_classes = PAPER[name]
    cfg = load_config(REPO / path)
    model_cfg = dict(cfg["model"], input_dim=input_dim)
    vocab = None
    if num_classes is not None:
        model_cfg["num_classes"] = num_classes
    if cfg["task"] == "grounding":  # the configs name GloVe files: the LSTM gets random word vectors instead
        text = model_cfg["text"]
        model_cfg["text"] = {k: text[k] for k in ("encoder", "embed_dim", "hidden_dim", "num_layers", "bidirectional")
                             if k in text}
        vocab = 2
    torch.manual_seed(0)
    model = MODELS.get(model_cfg["name"])(model_cfg, vocab) if vocab else MODELS.get(model_cfg["name"])(model_cfg)
    return model, build_optimizer(model, cfg["train"]), cfg


def paper_batch(cfg: dict, model, batch_size: int, input_dim: int, num_classes: int | None, generator) -> dict:
    """Random inputs of a PAPER row's size: features [B, T, D] and, for grounding, sentences and moments."""
    import torch

    from profile_heads import make_batch

    if cfg["task"] == "detection":
        return make_batch(int(cfg["dataset"]["num_steps"]), batch_size, input_dim, num_classes or 1, generator)
    steps = model.num_clips * model.frame_stride
    lengths = torch.randint(5, WORDS + 1, (batch_size,), generator=generator)
    mask = torch.arange(WORDS)[None] < lengths[:, None]  # [B, L]
    words = torch.randn(batch_size, WORDS, model.text.embed_dim, generator=generator) * mask[..., None]
    duration = torch.rand(batch_size, generator=generator, dtype=torch.float64) * 100 + 20
    segment = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64).sort(dim=1).values * duration[:, None]
    return dict(features=torch.randn(batch_size, steps, input_dim, generator=generator), words=words, word_mask=mask,
                segment=segment, duration=duration)


def bench_paper(name: str, device, amp: bool, quick: bool) -> dict:
    """Training and inference inputs/s of one head at its paper size on random inputs, AMP off or on."""
    import torch

    print(f"paper {name}, AMP {'on' if amp else 'off'} ...", file=sys.stderr, flush=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, optimizer, cfg = paper_model(name)
    model.to(device)
    _, input_dim, num_classes = PAPER[name]
    batch_size = 1 if quick else int(cfg["train"]["batch_size"])
    batch = paper_batch(cfg, model, batch_size, input_dim, num_classes, torch.Generator().manual_seed(0))
    batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else
             [t.to(device) for t in v] if isinstance(v, list) else v for k, v in batch.items()}
    dtype = amp_dtype(device)
    train_step = training_step(model, optimizer, [batch], device, amp)

    def infer() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=amp):
            model.predict(batch)

    model.train()
    train_s = timed(train_step, device, 1 if quick else 3)
    model.eval()
    infer_s = timed(infer, device, 1 if quick else 3)
    return dict(name=name, head=cfg["model"]["name"], config=PAPER[name][0], amp=amp, batch_size=batch_size,
                params_m=sum(p.numel() for p in model.parameters()) / 1e6, train_inputs_per_s=batch_size / train_s,
                infer_inputs_per_s=batch_size / infer_s, peak_memory_mib=peak_memory_mib(device))


def paper_row(name: str, device, amp: bool, quick: bool) -> dict:
    """`bench_paper`, or the row's error (out of memory on a small GPU is a finding, not a crash)."""
    import torch

    try:
        return bench_paper(name, device, amp, quick)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
        return dict(name=name, amp=amp, error=str(error).splitlines()[0])
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


LOADER_HEADS = ("2dtan", "a2net")


def bench_loader(sets: dict[str, Path], device, quick: bool) -> list[dict]:
    """Training inputs/s of one epoch read from the cache, per num_workers and pin_memory (as the trainer).

    Each head first runs one untimed epoch, so no row pays the process's first-call costs."""
    import torch

    from tal.engine.optim import build_optimizer
    from tal.tasks import build_task
    from tal.tasks.base import Prefetcher, global_batches, to_device

    def epoch(head: str, workers: int, pin: bool) -> tuple[int, float]:
        torch.manual_seed(0)
        cfg = head_config(head, sets, quick)
        task = build_task(cfg)  # fresh: every video is read from the cache again
        model = task.build_model().to(device).train()
        optimizer = build_optimizer(model, cfg["train"])
        batch_size = min(int(cfg["train"]["batch_size"]), 8 if quick else 32)
        order = torch.randperm(task.num_train_items(), generator=torch.Generator().manual_seed(0))
        sync(device)
        start = time.perf_counter()
        items = 0
        for batch in Prefetcher(workers, pin).map(lambda idx: task.train_batch(model, idx),
                                                  global_batches(order, batch_size)):
            loss = model(to_device(batch, device))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            items += len(batch["duration"]) if "duration" in batch else len(batch["features"])
        sync(device)
        return items, time.perf_counter() - start

    rows = []
    pins = (False, True) if device.type == "cuda" else (False,)
    for head in LOADER_HEADS:
        epoch(head, 0, False)
        for workers in (0, 2):
            for pin in pins:
                print(f"loader {head}, num_workers {workers}, pin_memory {'on' if pin else 'off'} ...",
                      file=sys.stderr, flush=True)
                items, seconds = epoch(head, workers, pin)
                rows.append(dict(head=head, num_workers=workers, pin_memory=pin, inputs=items,
                                 train_inputs_per_s=items / seconds))
    return rows


def bench_evaluators(scratch: Path, quick: bool) -> list[dict]:
    import numpy as np

    from tal.eval.detection import evaluate_detection_files
    from tal.eval.grounding import evaluate_grounding

    rng = np.random.default_rng(0)
    num_videos, per_video = (20, 100) if quick else (200, 500)
    database, results = {}, {}
    for v in range(num_videos):
        duration = float(rng.uniform(60, 200))
        starts = rng.uniform(0, duration * 0.8, 5)
        database[f"v{v}"] = {"subset": "validation", "duration": duration, "annotations": [
            {"segment": [s, min(duration, s + rng.uniform(2, 30))], "label": f"c{rng.integers(10)}"} for s in starts]}
        pred_starts = rng.uniform(0, duration * 0.9, per_video)
        results[f"v{v}"] = [{"segment": [s, s + rng.uniform(1, 40)], "score": float(rng.random()),
                             "label": f"c{rng.integers(10)}"} for s in pred_starts]
    gt_path, pred_path = scratch / "eval_gt.json", scratch / "eval_pred.json"
    gt_path.write_text(json.dumps({"database": database}))
    pred_path.write_text(json.dumps({"results": results}))
    start = time.perf_counter()
    detection = evaluate_detection_files(gt_path, pred_path, "validation")
    detection_s = time.perf_counter() - start
    num_queries = 500 if quick else 5000
    truth = np.sort(rng.uniform(0, 30, (num_queries, 2)), axis=1)
    moments = [np.sort(rng.uniform(0, 30, (16, 2)), axis=1) for _ in range(num_queries)]
    start = time.perf_counter()
    evaluate_grounding(moments, truth, recalls=(1, 5), ious=(0.5, 0.7))
    grounding_s = time.perf_counter() - start
    return [dict(evaluator="detection mAP", items=num_videos * per_video, seconds=detection_s,
                 value=float(detection.average_mAP)),
            dict(evaluator="grounding recall", items=num_queries * 16, seconds=grounding_s, value=None)]


def bench_nms(device, quick: bool) -> list[dict]:
    import torch

    from tal.ops.nms import batched_nms, soft_nms

    g = torch.Generator().manual_seed(0)
    rows = []
    for n in ((2000,) if quick else (2000, 10000)):
        start = torch.rand(n, generator=g) * 600
        segments = torch.stack([start, start + torch.rand(n, generator=g) * 60 + 1], 1).to(device)
        scores, labels = torch.rand(n, generator=g).to(device), torch.randint(0, 20, (n,), generator=g).to(device)
        for name, fn in (("hard per class", lambda: batched_nms(segments, scores, labels, 0.5)),
                         ("soft gaussian, max 200", lambda: soft_nms(segments, scores, labels, "gaussian",
                                                                     max_detections=200))):
            rows.append(dict(method=name, segments=n, median_ms=timed(fn, device, 3 if quick else 7) * 1e3))
    return rows


def bench_extract(scratch: Path, device, quick: bool) -> list[dict]:
    from bench_extract import decode_only, make_long_video

    from tal.features.backbones import build_backbone, list_backbones
    from tal.features.extract import (ExtractSettings, VideoJob, decode_size, extract_features, extraction_decoder,
                                      resolve_settings)

    registered = {spec.name for spec in list_backbones()}
    # --quick: 1.2 s of video and back-to-back windows, 2-3 clips per backbone (i3d's RAFT flow takes seconds
    # a clip on a CPU; at its default stride of 4 frames a 6 s video made this section 6 minutes)
    video = make_long_video(scratch / ("video_quick.mp4" if quick else "video.mp4"), 0.02 if quick else 1.0,
                            160 if quick else 320, 120 if quick else 240)
    decoder = extraction_decoder("auto")
    rows = []
    for name in [b for b in EXTRACT_BACKBONES if b in registered]:
        backbone = build_backbone(name, "random", "cpu")
        fps, window, stride = resolve_settings(ExtractSettings(name), backbone.spec)
        stride = window if quick else stride
        out = scratch / f"extract_{name}.h5"
        out.unlink(missing_ok=True)
        settings = ExtractSettings(name, "random", fps, window, stride, 4 if quick else 16, decoder, 0 if quick else 2,
                                   device.type)
        start = time.perf_counter()
        result = extract_features([VideoJob("video", str(video))], out, settings, progress=False)
        e2e_s = time.perf_counter() - start
        if result.num_failed:
            raise SystemExit(f"extraction with {name} failed: {result.failures}")
        clips, decode_s = decode_only([video], fps, window, stride, decoder, decode_size(backbone.spec))
        rows.append(dict(backbone=name, clips=clips, end_to_end_clips_per_s=clips / e2e_s,
                         decode_only_clips_per_s=clips / decode_s, ratio=decode_s / e2e_s))
    return rows


def print_tables(report: dict) -> None:
    print(f"device {report['device']} ({report['device_name']}), torch {report['torch']}, "
          f"{'quick' if report['quick'] else 'full'} settings")
    print(f"\n{'head':<8} {'task':<10} {'amp':<4} {'batch':>5} {'params M':>9} {'train inputs/s':>15} "
          f"{'infer s':>8} {'infer videos/s':>15} {'peak MiB':>9}")
    for r in report["heads"]:
        if "error" in r:
            print(f"{r['head']:<8} {'':<10} {'on' if r['amp'] else 'off':<4} failed: {r['error']}")
            continue
        videos = "-" if r["infer_videos_per_s"] is None else f"{r['infer_videos_per_s']:.1f}"
        print(f"{r['head']:<8} {r['task']:<10} {'on' if r['amp'] else 'off':<4} {r['batch_size']:>5} "
              f"{r['params_m']:>9.2f} {r['train_inputs_per_s']:>15.1f} {r['infer_s']:>8.3f} {videos:>15} "
              f"{r['peak_memory_mib']:>9.0f}")
    print(f"\n{'paper size':<20} {'amp':<4} {'batch':>5} {'params M':>9} {'train inputs/s':>15} "
          f"{'infer inputs/s':>15} {'peak MiB':>9}")
    for r in report["paper"]:
        if "error" in r:
            print(f"{r['name']:<20} {'on' if r['amp'] else 'off':<4} failed: {r['error']}")
            continue
        print(f"{r['name']:<20} {'on' if r['amp'] else 'off':<4} {r['batch_size']:>5} {r['params_m']:>9.2f} "
              f"{r['train_inputs_per_s']:>15.2f} {r['infer_inputs_per_s']:>15.2f} {r['peak_memory_mib']:>9.0f}")
    print(f"\n{'evaluator':<18} {'items':>8} {'seconds':>8}")
    for r in report["evaluators"]:
        print(f"{r['evaluator']:<18} {r['items']:>8} {r['seconds']:>8.3f}")
    print(f"\n{'nms':<24} {'segments':>8} {'median ms':>10}")
    for r in report["nms"]:
        print(f"{r['method']:<24} {r['segments']:>8} {r['median_ms']:>10.2f}")
    print(f"\n{'loader':<8} {'num_workers':>11} {'pin_memory':>10} {'inputs':>7} {'train inputs/s':>15}")
    for r in report["loader"]:
        print(f"{r['head']:<8} {r['num_workers']:>11} {'on' if r['pin_memory'] else 'off':>10} {r['inputs']:>7} "
              f"{r['train_inputs_per_s']:>15.1f}")
    print(f"\n{'backbone':<12} {'clips':>6} {'end to end clips/s':>19} {'decode only clips/s':>20} {'ratio':>6}")
    for r in report["extract"]:
        print(f"{r['backbone']:<12} {r['clips']:>6} {r['end_to_end_clips_per_s']:>19.2f} "
              f"{r['decode_only_clips_per_s']:>20.1f} {r['ratio']:>6.3f}")
    print(f"\ntotal {report['total_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is there")
    parser.add_argument("--quick", action="store_true", help="small sets, few repeats (about a minute on a CPU)")
    parser.add_argument("--heads", nargs="+", help="only these heads (default: every registered head)")
    parser.add_argument("--paper", nargs="+", choices=list(PAPER),
                        help="paper-size rows to run (default: all; with --quick: " + ", ".join(PAPER_QUICK) + ")")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/tal_device_suite"), help="generated inputs")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON")
    args = parser.parse_args(argv)

    import torch

    import tal.models  # noqa: F401  (registers the heads)
    from tal.registry import MODELS

    started = time.perf_counter()
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu (and --quick for the short version)")
    device = torch.device("cpu" if args.cpu else "cuda")
    args.scratch.mkdir(parents=True, exist_ok=True)
    sets = make_sets(args.scratch, args.quick)
    heads = args.heads or [h for h in MODELS.names() if (REPO / "configs" / "synthetic" / f"{h}.yaml").is_file()]
    paper = args.paper or (PAPER_QUICK if args.quick else list(PAPER))
    report = dict(device=device.type, torch=torch.__version__, quick=args.quick,
                  device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  heads=[head_row(h, sets, device, amp, args.quick) for h in heads for amp in (False, True)],
                  paper=[paper_row(n, device, amp, args.quick) for n in paper for amp in (False, True)],
                  evaluators=bench_evaluators(args.scratch, args.quick), nms=bench_nms(device, args.quick),
                  loader=bench_loader(sets, device, args.quick),
                  extract=bench_extract(args.scratch, device, args.quick))
    report["total_s"] = time.perf_counter() - started
    print_tables(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
