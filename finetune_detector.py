"""Step 5: fine-tune a detector on step 4's dataset with a curriculum, and measure whether the pictures helped.

Reads step 4's ``FINAL_DIR`` (``train_augmented.json`` when present, else ``annotations.json``),
a validation set of real images, and a starting checkpoint of a torchvision detection model
(``--model``, ``--checkpoint``; nothing is downloaded). Evaluates the start on the validation
set, fine-tunes it with the sampling curriculum (``--sampling natural|repeat-factor|dcl``), and
evaluates the result; ``--control`` also fine-tunes the start on the real images alone, with the
same iterations, sampling rule and seed, so that the difference is the generated pictures'.
Writes, under ``OUT_DIR``:

- ``runs/before/metrics.json``; ``runs/<augmented|control>-seed<k>/``: ``checkpoint.pt`` (written
  every epoch; ``--resume`` continues from it), ``train_log.csv`` (the losses), ``metrics.json``;
- ``report.json``, ``per_class_ap.csv`` and ``per_class_ap.png`` (per-class AP before, control
  and augmented, rare categories first); a summary ending ``augmented vs control: AP +x.x (rare third: +y.y)``;
- with ``--sampling-plan-only``, ``sampling_plan.csv`` alone: the curriculum, per epoch and
  category, without loading a model or an image.

Runs on CPU, one GPU (mixed precision) or several under ``torchrun`` (docs/finetune.md). Example::

    python finetune_detector.py -d out/final --val-annotations coco/annotations/instances_val2017.json \\
        --val-images coco/val2017 -o out/finetune --checkpoint my_detector.pth --sampling dcl --epochs 12 --control
"""

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cocoaug import cli
from cocoaug.atomic import atomic_path, remove_stale_temp_files, write_csv_atomic, write_json_atomic
from cocoaug.detection_data import DetectionDataset, check_training_images, collate, load_training_set, load_validation_set
from cocoaug.detection_models import (CHECKPOINT_FORMAT, DEFAULT_MODEL, build_model, load_weights, parse_model_options,
                                      predict_detections, read_checkpoint, unwrapped)
from cocoaug.errors import UserError, listed
from cocoaug.paths import refuse_output_inside
from cocoaug.runtime import distributed_rank, resolve_device, run_cli
from cocoaug.sampling import (CURRICULA, DCL_SCHEDULES, PLAN_FILE, DistributedWeightedSampler, LabelTable, format_plan_table,
                              image_weights, sampling_plan, write_sampling_plan)

log = logging.getLogger("cocoaug")
WARMUP_START = 0.001  # the learning rate starts at this fraction of --lr and rises linearly over --warmup-iters
STEP_MILESTONES = (2 / 3, 8 / 9)  # --lr-schedule step: x0.1 at these fractions of the iterations after warm-up
DEFAULT_LR = {"sgd": 0.005, "adamw": 1e-4}
DEFAULT_WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 0.05}
# A resumed run must be the same run: these settings are stored in its checkpoint and compared.
RUN_SETTINGS = ("model", "model_option", "min_size", "max_size", "sampling", "dcl_schedule", "repeat_factor_threshold",
                "generated_weight", "epochs", "epoch_size", "max_iters", "batch_size", "optimizer", "lr", "weight_decay",
                "lr_schedule", "warmup_iters", "clip_grad", "world_size")


def build_parser():
    parser = cli.new_parser(__doc__)
    parser.add_argument("-d", "--dataset", required=True, metavar="FINAL_DIR", help="step 4's dataset root")
    parser.add_argument("--val-annotations", metavar="VAL.json", help="COCO file of the real validation images")
    parser.add_argument("--val-images", metavar="VAL_IMAGES_DIR", help="folder of the validation images")
    cli.add_output(parser, help="where the runs, the report and the plot go")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=DEFAULT_MODEL, metavar="BUILDER",
                       help=f"a torchvision detection builder, built without downloading weights (default {DEFAULT_MODEL})")
    model.add_argument("--checkpoint", metavar="CHECKPOINT.pt", help="starting weights: your state_dict, or a checkpoint this script wrote")
    model.add_argument("--reset-head", action="store_true", help="train a new class head instead of the checkpoint's")
    model.add_argument("--min-size", type=int, metavar="PIXELS", help="shorter image side the model resizes to (default: the builder's)")
    model.add_argument("--max-size", type=int, metavar="PIXELS", help="longest image side (default: the builder's)")
    model.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                       help="a keyword argument of the builder, e.g. box_batch_size_per_image=64 (repeatable)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--sampling", choices=CURRICULA, default="natural", help="the curriculum (default natural)")
    sampling.add_argument("--dcl-schedule", choices=DCL_SCHEDULES, default="convex", help="DCL's g (default convex)")
    sampling.add_argument("--repeat-factor-threshold", type=cli.finite_float, default=0.001, metavar="T",
                          help="LVIS' t for --sampling repeat-factor (default 0.001)")
    sampling.add_argument("--generated-weight", type=cli.finite_float, default=1.0, metavar="W",
                          help="sampling weight of a generated picture relative to a real one (default 1)")
    sampling.add_argument("--seed", type=int, default=0, help="seed of the draws, flips and model (default 0)")
    sampling.add_argument("--sampling-plan-only", action="store_true", help="write OUT_DIR/sampling_plan.csv and stop: no model, no image")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, metavar="N", help="epochs (default 12, or as many as --max-iters needs)")
    training.add_argument("--epoch-size", type=int, metavar="N", help="images drawn per epoch (default: the training set's size)")
    training.add_argument("--max-iters", type=int, metavar="N", help="stop after N iterations")
    cli.add_batch_size(training, default=4, help="images per iteration and process")
    training.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="SGD with momentum 0.9 (default) or AdamW")
    training.add_argument("--lr", type=cli.finite_float, help="peak learning rate (default 0.005 for sgd, 0.0001 for adamw)")
    training.add_argument("--weight-decay", type=cli.finite_float, help="default 0.0001 for sgd, 0.05 for adamw")
    training.add_argument("--lr-schedule", choices=("cosine", "step"), default="cosine",
                          help="after warm-up: cosine to 0 (default), or x0.1 at 2/3 and 8/9 of the iterations")
    training.add_argument("--warmup-iters", type=int, default=100, metavar="N", help="linear warm-up iterations (default 100)")
    training.add_argument("--clip-grad", type=cli.finite_float, metavar="NORM", help="clip the gradient norm to NORM (default: no clipping)")
    cli.add_num_workers(training, default=2)
    cli.add_device(training, dtype=False)
    measuring = parser.add_argument_group("measuring")
    measuring.add_argument("--control", action="store_true", help="also fine-tune on the real images alone, for comparison")
    measuring.add_argument("--repeats", type=int, default=1, metavar="N", help="runs with seeds SEED .. SEED+N-1 (default 1)")
    measuring.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint on the validation set and stop")
    parser.add_argument("--resume", action="store_true", help="continue the runs in OUT_DIR where they stopped")
    cli.add_overwrite(parser, help="start afresh, replacing the outputs of an earlier run in OUT_DIR")
    cli.add_debug(parser)
    return parser


# ---------------------------------------------------------------- the stage's steps


@dataclass
class Schedule:
    """How long each run trains (the same for the augmented and the control runs)."""

    epochs: int
    epoch_size: int  # images drawn per epoch, all processes together
    iters_per_epoch: int
    total_iters: int


@dataclass
class Run:
    """One fine-tuning run of the starting weights and its folder OUT_DIR/runs/<name>/."""

    name: str  # augmented-seed<k> or control-seed<k>
    seed: int
    indices: np.ndarray  # images of the training set it trains on
    folder: Path


def check_flags(args, world_size: int):
    """Refuse impossible numbers and missing inputs before anything is read; fill the optimizer's defaults."""
    positive = {"--batch-size": args.batch_size, "--epochs": args.epochs, "--epoch-size": args.epoch_size,
                "--max-iters": args.max_iters, "--repeats": args.repeats, "--min-size": args.min_size, "--max-size": args.max_size,
                "--lr": args.lr, "--clip-grad": args.clip_grad, "--repeat-factor-threshold": args.repeat_factor_threshold}
    for flag, value in positive.items():
        if value is not None and value <= 0:
            raise UserError(f"{flag} must be positive", f"{flag} {value}")
    for flag, value in {"--num-workers": args.num_workers, "--warmup-iters": args.warmup_iters,
                        "--generated-weight": args.generated_weight, "--weight-decay": args.weight_decay}.items():
        if value is not None and value < 0:
            raise UserError(f"{flag} must not be negative", f"{flag} {value}")
    if not args.sampling_plan_only and not (args.val_annotations and args.val_images):
        raise UserError("give the validation set: --val-annotations VAL.json --val-images VAL_IMAGES_DIR", "--val-annotations/--val-images")
    if args.eval_only and not args.checkpoint:
        raise UserError("--eval-only evaluates a checkpoint: pass --checkpoint", "--eval-only")
    args.lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    args.weight_decay = args.weight_decay if args.weight_decay is not None else DEFAULT_WEIGHT_DECAY[args.optimizer]
    args.world_size = world_size


def plan_schedule(args, train_size: int, world_size: int) -> Schedule:
    """Epochs and iterations: --epochs (default 12) of --epoch-size images, capped by --max-iters (alone, it sets the epochs)."""
    epoch_size = args.epoch_size or train_size
    iters_per_epoch = math.ceil(math.ceil(epoch_size / world_size) / args.batch_size)
    epochs = args.epochs or (math.ceil(args.max_iters / iters_per_epoch) if args.max_iters else 12)
    total = epochs * iters_per_epoch if args.max_iters is None else min(args.max_iters, epochs * iters_per_epoch)
    return Schedule(epochs, epoch_size, iters_per_epoch, total)


def write_plan(args, train_set, schedule: Schedule, out: Path):
    """--sampling-plan-only: the expected draws per epoch and category, from the weights alone."""
    path = out / PLAN_FILE
    if path.exists() and not args.overwrite:
        raise UserError("a sampling plan is there already; use --overwrite to replace it", path)
    ids = [[train_set.categories.category_of(label) for label in labels] for labels in train_set.image_labels()]
    rows = sampling_plan(ids, train_set.is_generated, curriculum=args.sampling, epochs=schedule.epochs,
                         epoch_size=schedule.epoch_size, schedule=args.dcl_schedule,
                         repeat_threshold=args.repeat_factor_threshold, generated_weight=args.generated_weight)
    names = dict(zip(train_set.categories.category_ids, train_set.categories.names))
    write_sampling_plan(path, rows, names)
    print(format_plan_table(rows, names))
    print(f"{args.sampling} sampling over {schedule.epochs} epochs of {schedule.epoch_size} images "
          f"({int(train_set.is_generated.sum())} generated, {int((~train_set.is_generated).sum())} real in the set) -> {path}")


def plan_runs(args, train_set, out: Path) -> list[Run]:
    """One augmented run per seed on every image, and with --control one on the real images alone."""
    everything = np.arange(len(train_set))
    real = np.flatnonzero(~train_set.is_generated)
    if args.control and not train_set.is_generated.any():
        log.warning("%s holds no generated picture: the control run trains on the same images", train_set.annotation_path)
    if args.control and not len(real):
        raise UserError("--control trains on the real images, and the training set has none", train_set.annotation_path)
    runs = []
    for seed in range(args.seed, args.seed + args.repeats):
        runs.append(Run(f"augmented-seed{seed}", seed, everything, out / "runs" / f"augmented-seed{seed}"))
        if args.control:
            runs.append(Run(f"control-seed{seed}", seed, real, out / "runs" / f"control-seed{seed}"))
    return runs


def check_outputs(args, out: Path, runs: list[Run], before_path: Path, remove: bool):
    """An earlier run's outputs are continued (--resume), replaced (--overwrite: ``remove`` them), or a reason to stop."""
    earlier = [p for p in [before_path, *(r.folder / f for r in runs for f in ("checkpoint.pt", "metrics.json"))] if p.exists()]
    if earlier and not (args.resume or args.overwrite):
        raise UserError(f"{out} holds an earlier run: pass --resume to continue it or --overwrite to start afresh", earlier[0])
    if args.overwrite and remove:
        for path in earlier:
            path.unlink()


def evaluate_model(model, val_set, device, args) -> dict:
    """COCO metrics of ``model`` on the validation set, as metrics.json holds them (EvalResult.to_json)."""
    from cocoaug.detection_eval import evaluate

    detections = predict_detections(unwrapped(model), DetectionDataset(val_set), val_set.categories, device,
                                    args.batch_size, args.num_workers)
    return evaluate(val_set.coco_data, detections).to_json()


def read_metrics(path: Path):
    """A run's metrics.json as an EvalResult."""
    from cocoaug.coco import read_json
    from cocoaug.detection_eval import EvalResult

    return EvalResult.from_json(read_json(path, "metrics file"))


def lr_factor(iteration: int, total: int, warmup: int, schedule: str) -> float:
    """The learning rate at ``iteration`` as a fraction of --lr: linear warm-up, then cosine or step decay."""
    if iteration < warmup:
        return WARMUP_START + (1 - WARMUP_START) * iteration / warmup
    progress = (iteration - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return 0.1 ** sum(progress >= milestone for milestone in STEP_MILESTONES)


def train(run: Run, start_state: dict, ctx: dict, args):
    """Fine-tune a copy of the starting weights on ``run``'s images; continues from its checkpoint with --resume."""
    import torch
    from tqdm import tqdm

    train_set, schedule, device, rank, world_size = ctx["train_set"], ctx["schedule"], ctx["device"], ctx["rank"], ctx["world_size"]
    model = ctx["new_model"]()
    model.load_state_dict(start_state)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    warmup = min(args.warmup_iters, schedule.total_iters)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(i, schedule.total_iters, warmup, args.lr_schedule))
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    table = LabelTable.from_lists([train_set.labels[k].tolist() for k in run.indices])
    generated = train_set.is_generated[run.indices]

    def weights_for_epoch(epoch):
        return image_weights(table, generated, curriculum=args.sampling, epoch=epoch, epochs=schedule.epochs,
                             schedule=args.dcl_schedule, repeat_threshold=args.repeat_factor_threshold,
                             generated_weight=args.generated_weight)

    sampler = DistributedWeightedSampler(weights_for_epoch, schedule.epoch_size, seed=run.seed, rank=rank, world_size=world_size)
    dataset = torch.utils.data.Subset(DetectionDataset(train_set, flip=True, masks=args.model.startswith("maskrcnn")),
                                      run.indices.tolist())
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
                                         collate_fn=collate)
    checkpoint_path = run.folder / "checkpoint.pt"
    epoch, iteration, rows = 0, 0, []
    if checkpoint_path.exists():  # --resume: check_outputs removed it otherwise
        saved = read_checkpoint(checkpoint_path)
        changed = [f"--{key.replace('_', '-')}" for key in RUN_SETTINGS if saved["settings"].get(key) != getattr(args, key)]
        if changed:
            raise UserError(f"the run was started with other {listed(changed)}: use the same flags to resume, or --overwrite",
                            checkpoint_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        epoch, iteration, rows = saved["epoch"] + 1, saved["iteration"], saved["log"]
        torch.set_rng_state(saved["rng"]["torch"])
        if cuda and saved["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
        log.info("%s: resuming at iteration %d of %d", run.name, iteration, schedule.total_iters)
    else:
        torch.manual_seed(run.seed)
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    bar = tqdm(total=schedule.total_iters, initial=iteration, desc=run.name, unit="it", disable=rank != 0)
    while iteration < schedule.total_iters:
        model.train()
        sampler.set_epoch(epoch)
        started = time.perf_counter()  # images/s counts the loading of each batch too
        for images, targets in loader:
            images = [image.to(device, non_blocking=True) for image in images]
            targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
                losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise UserError(f"the loss is {loss.item()} at iteration {iteration}: lower --lr or set --clip-grad", run.name)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if args.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            rows.append({"iteration": iteration, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "loss": loss.item(),
                         **{k: v.item() for k, v in losses.items()},
                         "images_per_s": len(images) * world_size / (time.perf_counter() - started)})
            started = time.perf_counter()
            scheduler.step()
            iteration += 1
            bar.update()
            bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}", img_s=f"{rows[-1]['images_per_s']:.1f}")
            if iteration >= schedule.total_iters:
                break
        if rank == 0:
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler, epoch, iteration, rows, ctx, args)
            write_csv_atomic(run.folder / "train_log.csv", rows, list(rows[0]))
        epoch += 1
    bar.close()
    return unwrapped(model)


def save_checkpoint(path, model, optimizer, scheduler, scaler, epoch, iteration, rows, ctx, args):
    """Everything --resume needs to continue exactly, written atomically (a kill leaves the previous epoch's)."""
    import torch

    cuda = ctx["device"].type == "cuda"
    state = {"format": CHECKPOINT_FORMAT, "model": unwrapped(model).state_dict(), "categories": ctx["train_set"].categories.as_dict(),
             "model_name": args.model, "settings": {key: getattr(args, key) for key in RUN_SETTINGS},
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
             "epoch": epoch, "iteration": iteration, "log": rows,
             "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(ctx["device"]) if cuda else None}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def main(args):
    # 1. Check inputs: every file, before any model is built
    rank, world_size = distributed_rank()
    check_flags(args, world_size)
    train_set = load_training_set(args.dataset)
    out = Path(args.output)
    refuse_output_inside([out], {"dataset root": Path(args.dataset), **({"validation image folder": Path(args.val_images)}
                                                                         if args.val_images else {})})
    schedule = plan_schedule(args, len(train_set), world_size)
    if args.sampling_plan_only:
        return write_plan(args, train_set, schedule, out)
    val_set = load_validation_set(args.val_annotations, args.val_images, train_set.categories)
    check_training_images(train_set, range(len(train_set)))
    options = parse_model_options(args.model_option)
    runs = [] if args.eval_only else plan_runs(args, train_set, out)
    before_path = out / ("metrics.json" if args.eval_only else "runs/before/metrics.json")
    check_outputs(args, out, runs, before_path, remove=rank == 0)  # every process stops on an earlier run
    if rank == 0 and out.is_dir():
        remove_stale_temp_files(out, recursive=True)

    # 2. The starting model
    import torch

    device = resolve_device(args.device)
    if world_size > 1 and device.type == "cuda" and device.index is None:  # --device cuda: this process's GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if world_size > 1:
        import datetime

        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(days=1))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.barrier()  # rank 0 has removed what --overwrite replaces

    def new_model():
        return build_model(args.model, train_set.categories.num_classes, options, args.min_size, args.max_size,
                           frozen_batchnorm=bool(args.checkpoint))

    torch.manual_seed(args.seed)
    start = new_model()
    if args.checkpoint:
        log.info("%s: %s", args.checkpoint, load_weights(start, args.model, read_checkpoint(args.checkpoint), args.checkpoint,
                                                         train_set.categories, args.reset_head))
    elif args.reset_head:
        log.warning("--reset-head without --checkpoint: the whole model starts from random weights anyway")
    start_state = {k: v.clone() for k, v in start.state_dict().items()}
    ctx = {"train_set": train_set, "schedule": schedule, "device": device, "rank": rank, "world_size": world_size,
           "new_model": new_model}

    # 3. Evaluate the start (rank 0)
    if rank == 0 and not before_path.exists():
        write_json_atomic(before_path, evaluate_model(start.to(device), val_set, device, args))
    if args.eval_only:
        return print_eval(read_metrics(before_path), train_set, before_path) if rank == 0 else None

    # 4. Fine-tune each run, then evaluate it (rank 0); finished runs are kept
    trained = 0
    for run in runs:
        if (run.folder / "metrics.json").exists():
            log.info("%s: finished earlier, its metrics are kept", run.name)
            continue
        model = train(run, start_state, ctx, args)
        trained += 1
        if rank == 0:
            write_json_atomic(run.folder / "metrics.json", evaluate_model(model, val_set, device, args))
        if world_size > 1:
            torch.distributed.barrier()
    if world_size > 1:
        torch.distributed.destroy_process_group()
    if rank != 0:
        return

    # 5. Report
    from cocoaug.finetune_report import build_report, summary_lines, write_report

    metrics = {run.name: read_metrics(run.folder / "metrics.json") for run in runs}
    settings = {key: getattr(args, key) for key in RUN_SETTINGS} | {"dataset": str(train_set.annotation_path),
                                                                     "checkpoint": args.checkpoint, "seeds": [r.seed for r in runs]}
    report = build_report(read_metrics(out / "runs/before/metrics.json"),
                          [metrics[r.name] for r in runs if r.name.startswith("control")],
                          [metrics[r.name] for r in runs if r.name.startswith("augmented")],
                          dict(zip(train_set.categories.category_ids, train_set.categories.names)),
                          train_set.boxes_per_category(generated=False), train_set.boxes_per_category(generated=True), settings)
    write_report(out, report)
    print(f"trained {trained} run(s), kept {len(runs) - trained} finished earlier; {schedule.total_iters} iterations per run "
          f"({schedule.epochs} epochs of {schedule.epoch_size} images, {args.sampling} sampling) on {len(train_set)} images "
          f"({int(train_set.is_generated.sum())} generated); wrote {out / 'report.json'}, per_class_ap.csv, per_class_ap.png")
    print("\n".join(summary_lines(report)))


def print_eval(metrics, train_set, path: Path):
    """--eval-only's summary: the COCO metrics, then AP per category."""
    print("  ".join(f"{key} {100 * value:.1f}" for key, value in metrics.summary.items()))
    for category_id, name in zip(train_set.categories.category_ids, train_set.categories.names):
        print(f"  {name:<20} AP {100 * metrics.per_class.get(category_id, math.nan):.1f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    run_cli(main, build_parser())
