"""Build the demo bundle: render the demo world, train every part on it, assemble the default pipeline.

    python recipes/build_demo.py --out BUILD [--install]

One command, in order (each step is skipped when a re-run finds it done; the training steps resume from their
checkpoints, so an interrupted build continues where it stopped):

  1. corpus     recipes/demo_corpus.py: Bach chorales rendered with a General MIDI soundfont, paired with
                photographs under camera motion and cuts, and --unpaired (120) more training clips whose camera
                and colour are drawn apart from their music, which teach text control (BUILD/corpus)
  2. base       a fresh pipeline: EfficientNet-Lite0 (ImageNet weights from its package) + motion features
                with the camera's speed + colour features at FPS frames/s, an untrained EnCodec-architecture
                codec, a spectral k-means semantic tokenizer, a MiniLM text encoder (frozen, from its package)
                with an untrained audio tower (BUILD/base)
  3. semantic   recipes/fit_semantic.py: k-means centroids of the spectral frames (BUILD/with-semantic)
  4. control    recipes/fit_control.py: the audio tower trained against the captions (BUILD/with-control)
  5. codec      recipes/fit_codec.py: the codec trained on the corpus's music (BUILD/parts)
  6. preprocess recipes/preprocess.py: features, codes, semantic ids, control embeddings (BUILD/data)
  7-9. stage1 / stage2 / stage3: the three stages from stages/<kind>-demo.json (BUILD/run-<kind>); on a CPU
                they train side by side, one process each with a share of the cores (--stage-jobs)
 10. assemble   the trained stages put into the pipeline (BUILD/pipeline); --install copies it to
                tokmusic/pretrained/demo, the default pipeline

BUILD/build.json records each step's wall time. Works on a CPU (the README gives the time on 2 cores); with a
GPU, accelerate puts the training steps on it. The data packages it needs:

    pip install music21 pretty_midi scikit-image && pip install --no-deps tinysoundfont
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tokmusic.training.cli import RecipeParser, run

RECIPES = Path(__file__).resolve().parent
ROOT = RECIPES.parent
FPS = 8.0  # frames/s read from the video: the demo corpus's beat surges need more than two frames per beat
IMAGE_SIZE = 160  # EfficientNet input: 160 px runs ~3x faster than 224 on a CPU
CODEC = {"sample_rate": 16000, "hop_length": 320, "n_q": 4, "n_coarse": 2, "codebook_size": 256}
SEMANTIC_CLUSTERS = 64
STEPS = ("corpus", "base", "semantic", "control", "codec", "preprocess", "stage1", "stage2", "stage3", "assemble")
STAGE_KINDS = {"stage1": "semantic", "stage2": "coarse", "stage3": "fine"}
STAGE_STEPS = tuple(STAGE_KINDS)


def recipe(name: str):
    """The ``main`` of recipes/<name>.py (this folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def base_pipeline(seed: int):
    """A fresh pipeline of the demo bundle's shape: pretrained visual and text encoders, every other part
    untrained, stages from the demo cards."""
    import torch

    from tokmusic.cards import read_card, stage_config
    from tokmusic.compatibility import PipelineShape
    from tokmusic.efficientnet_encoder import EfficientNetEncoder
    from tokmusic.pipeline import Pipeline
    from tokmusic.stage import Stage
    from tokmusic.training.codec_build import new_codec
    from tokmusic.sentence_control import sentence_audio_control
    from tokmusic.spectral_tokenizer import spectral_tokenizer
    from tokmusic.visual_encoders import ColourEncoder, ConcatEncoder, MotionEncoder

    parts = {
        "visual_encoder": ConcatEncoder([EfficientNetEncoder.from_pretrained(size=IMAGE_SIZE),
                                          MotionEncoder(size=64, grid=4, speed=True), ColourEncoder()]),
        "codec": new_codec(seed=seed, **CODEC),
        "control": sentence_audio_control(sample_rate=CODEC["sample_rate"], seed=seed),
        "semantic_tokenizer": spectral_tokenizer(SEMANTIC_CLUSTERS, seed=seed, sample_rate=CODEC["sample_rate"]),
    }
    shape = PipelineShape.of(parts["visual_encoder"], parts["codec"], parts["control"], parts["semantic_tokenizer"],
                             FPS)
    stages = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for kind in ("semantic", "coarse", "fine"):
            card_path = ROOT / "stages" / f"{kind}-demo.json"
            stages[kind] = Stage(stage_config(read_card(card_path), shape, where=str(card_path))).eval()
    return Pipeline(stages=stages, fps=FPS, **parts)


def main(argv: list[str] | None = None) -> int:
    p = RecipeParser(prog="recipes/build_demo.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="build directory (re-running the same command resumes)")
    p.add_argument("--count", type=int, default=336, help="corpus clips")
    p.add_argument("--valid", type=int, default=32, help="held-out corpus clips")
    p.add_argument("--renditions", type=int, default=1, help="paired renderings of each training chorale, each at "
                   "its own tempo, instrument and photographs (recipes/demo_corpus.py; default %(default)s)")
    p.add_argument("--unpaired", type=int, default=120, help="extra training clips whose camera speed and colour "
                   "are drawn apart from the music (they teach text control; recipes/demo_corpus.py; default "
                   "%(default)s)")
    p.add_argument("--codec-steps", type=int, default=6000)
    p.add_argument("--control-steps", type=int, default=600)
    p.add_argument("--stage-steps", type=int, help="training steps of each stage (default: each card's max_steps)")
    p.add_argument("--stage-jobs", type=int, help="stages trained side by side, each in its own process (default: "
                   "3 on a CPU, each with a share of the cores; 1 with a GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--until", choices=STEPS, help="stop after this step (re-run without it to go on)")
    p.add_argument("--install", action="store_true", help="copy the pipeline to tokmusic/pretrained/demo")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "build.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"steps": {}}
    manifest = str(out / "corpus" / "manifest.jsonl")
    quiet = ["--quiet"] if args.quiet else []

    def stage_args(kind: str) -> list[str]:
        steps = [] if args.stage_steps is None else ["--max-steps", str(args.stage_steps)]
        return ["--data", str(out / "data"), "--pipeline", str(out / "parts"), "--out", str(out / f"run-{kind}"),
                "--config", str(ROOT / "stages" / f"{kind}-demo.json")] + steps

    jobs = args.stage_jobs or (1 if _has_cuda() else 3)

    actions = {
        "corpus": lambda: recipe("demo_corpus")(["--out", str(out / "corpus"), "--count", str(args.count),
                                                 "--valid", str(args.valid), "--renditions", str(args.renditions),
                                                 "--unpaired", str(args.unpaired),
                                                 "--seed", str(args.seed)] + quiet),
        "base": lambda: base_pipeline(args.seed).save_pretrained(out / "base") or 0,
        "semantic": lambda: recipe("fit_semantic")([manifest, "--pipeline", str(out / "base"), "--out",
                                                    str(out / "with-semantic"), "--clusters",
                                                    str(SEMANTIC_CLUSTERS), "--seed", str(args.seed)] + quiet),
        "control": lambda: recipe("fit_control")([manifest, "--pipeline", str(out / "with-semantic"), "--out",
                                                  str(out / "with-control"), "--steps", str(args.control_steps),
                                                  "--seed", str(args.seed)] + quiet),
        "codec": lambda: recipe("fit_codec")([manifest, "--pipeline", str(out / "with-control"), "--out",
                                              str(out / "parts"), "--steps", str(args.codec_steps),
                                              "--seed", str(args.seed)] + quiet),
        "preprocess": lambda: recipe("preprocess")([manifest, "--pipeline", str(out / "parts"), "--out",
                                                    str(out / "data")] + quiet),
        **{step: (lambda step=step: recipe(step)(stage_args(STAGE_KINDS[step]))) for step in STAGE_STEPS},
        "assemble": lambda: assemble(out),
    }
    def save_record(step: str, seconds: float) -> None:
        record["steps"][step] = round(seconds, 1)
        tmp = record_path.with_suffix(".partial")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, record_path)

    started = time.perf_counter()
    for i, step in enumerate(STEPS, 1):
        if step in record["steps"]:
            print(f"[{i}/{len(STEPS)}] {step}: done earlier ({record['steps'][step]:.0f} s)", flush=True)
            continue
        together = [s for s in STAGE_STEPS if s not in record["steps"]] if step in STAGE_STEPS and jobs > 1 else []
        if len(together) > 1:  # the stages side by side, each process with its share of the cores
            print(f"[{i}/{len(STEPS)}] {', '.join(together)} side by side (logs: {out}/<step>.log) ...", flush=True)
            commands = {step: [sys.executable, str(RECIPES / f"{step}.py"), *stage_args(STAGE_KINDS[step])]
                        for step in together}
            status, seconds = train_stages_together(commands, out, jobs)
            record["stages_side_by_side"] = True
            for name, took in seconds.items():
                save_record(name, took)
                print(f"  {name}: {took:.0f} s", flush=True)
            if status:
                print(f"recipes/build_demo.py: {status}; fix it and re-run to resume")
                return 1
            if args.until in together:
                print(f"stopped after {args.until} (--until); re-run without --until to go on")
                return 0
            continue
        print(f"[{i}/{len(STEPS)}] {step} ...", flush=True)
        t0 = time.perf_counter()
        status = actions[step]()
        if status:
            print(f"recipes/build_demo.py: step {step} failed (exit {status}); fix it and re-run to resume")
            return status
        save_record(step, time.perf_counter() - t0)
        print(f"[{i}/{len(STEPS)}] {step}: {record['steps'][step]:.0f} s", flush=True)
        if step == args.until:
            print(f"stopped after {step} (--until); re-run without --until to go on")
            return 0
    total = sum(record["steps"].values())
    side = 0.0  # stage time spent while another stage trained
    if record.get("stages_side_by_side"):
        side = sum(record["steps"][s] for s in STAGE_STEPS) - max(record["steps"][s] for s in STAGE_STEPS)
    print(f"built {out / 'pipeline'} (wall time of all steps {(total - side) / 60:.1f} min, the stages side by side; "
          f"this run {(time.perf_counter() - started) / 60:.1f} min)")
    if args.install:
        install(out / "pipeline")
    return 0


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def train_stages_together(commands: dict[str, list[str]], out: Path, jobs: int) -> tuple[str, dict[str, float]]:
    """Run ``commands`` ({step: argv}) as up to ``jobs`` processes at once, the cores shared out by
    OMP_NUM_THREADS, each logging to BUILD/<step>.log -> (failure message or "", {step: wall seconds} of those
    that succeeded)."""
    threads = max(1, (os.cpu_count() or 1) // min(jobs, len(commands)))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    waiting, running, seconds, failed = list(commands), {}, {}, []
    while waiting or running:
        while waiting and len(running) < jobs:
            step = waiting.pop(0)
            log = open(out / f"{step}.log", "a")
            running[step] = (subprocess.Popen(commands[step], env=env, stdout=log, stderr=subprocess.STDOUT), log,
                             time.perf_counter())
        time.sleep(0.2)
        for step, (proc, log, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[step]
            if proc.returncode:
                failed.append(f"{step} failed (exit {proc.returncode}; see {out / (step + '.log')})")
            else:
                seconds[step] = time.perf_counter() - t0
    return "; ".join(failed), seconds


def assemble(out: Path) -> int:
    from tokmusic.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(out / "parts")
    for kind in ("semantic", "coarse", "fine"):
        pipe.replace_stage(kind, out / f"run-{kind}" / "stage")
    pipe.save_pretrained(out / "pipeline")
    return 0


def install(pipeline_dir: Path) -> None:
    """Copy ``pipeline_dir`` to tokmusic/pretrained/demo, replacing the bundle in one rename."""
    from tokmusic.default import BUNDLE_DIR

    tmp = BUNDLE_DIR.with_name(".demo.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(pipeline_dir, tmp)
    old = BUNDLE_DIR.with_name(".demo.old")
    shutil.rmtree(old, ignore_errors=True)
    if BUNDLE_DIR.exists():
        os.replace(BUNDLE_DIR, old)
    os.replace(tmp, BUNDLE_DIR)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(f.stat().st_size for f in BUNDLE_DIR.rglob("*") if f.is_file())
    print(f"installed the demo bundle in {BUNDLE_DIR} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    run(main)
