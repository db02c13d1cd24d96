"""End-to-end known answer: a tiny pipeline trained from scratch by tokmusic's own recipes must play, on videos it
never saw, the tone that the picture calls for, and the same stages untrained must not.

Corpus (`recipes/tiny_corpus.py --classes 2 --segment 1 --seconds 4`): each clip is cut into 1 s segments; each
segment shows one of two background colours (jittered per segment, under a randomly moving square) and sounds that
colour's tone. The recipes (preprocess, stage1, stage2, stage3) train the three stages on the 22 training clips;
they are called in this process, each as one process without a launcher (a subprocess per recipe would add about
6 s of imports each). Stages 1-2 work in 2 s windows, so a held-out clip is generated in 3 sliding windows. The
tiny codec has random weights (its audio is noise), so `token_judge.Judge` reads the answer off the tokens: every
second of generated semantic ids and coarse codes is classed as the tone it is nearest to (it scores 1.0 on the
held-out clips' real tokens). Chance is 1/classes exactly: the held-out segments are balanced.

Held-out seconds right (semantic / coarse), measured on this 2-core CPU:

                                              trained          untrained
    2 tones, 150 steps, this test (24 s)      1.00 / 0.96      0.46 / 0.50
    2 tones, 150 steps, 16 held-out (64 s)    0.98 / 0.98      0.48 / 0.50
    the same before decoder queries met the memory on a shared clock (commit 1f2baa5, its recipes):
    2 tones, 150 steps, 6 held-out (24 s)     0.58 / 0.67      0.54 / 0.50
    2 tones, 150 steps, 16 held-out (64 s)    0.61 / 0.56      0.56 / 0.50
    2 tones, 600 steps, 16 held-out (64 s)    0.73 / 0.72
    4 tones, 300 steps, test_four_tones       0.83 / 0.83      0.29 / 0.21   (slow)

The module takes about 50 s here without the slow test (about 40 s of it training and sampling); test_four_tones
about 60 s.
"""

import json
from pathlib import Path

import pytest
import torch

from scripts import load_script
from token_judge import Answers, Judge
from tokmusic.audio import load_audio
from tokmusic.pipeline import Pipeline
from tokmusic.stage import Stage

ROOT = Path(__file__).resolve().parents[1]
SEGMENT, SECONDS, ITEMS, VALID = 1.0, 4.0, 28, 6
WINDOW, OVERLAP = 2.0, 1.0  # stages 1-2 generate (and train on) 2 s windows: 3 windows per held-out clip
FINE_CROP = 3.0  # the fine stage's default window
TRAIN = {"lr": 5e-3, "warmup_steps": 10, "batch_size": 8, "ema_decay": 0.0, "num_workers": 0, "eval_every": 0,
         "log_with": "none", "log_every": 50}


def recipe(name):
    return load_script(f"recipes/{name}.py")


def card(tmp: Path, kind: str, steps: int) -> Path:
    """stages/<kind>-tiny.json with this test's training settings (and 2 s windows for stages 1-2)."""
    data = json.loads((ROOT / "stages" / f"{kind}-tiny.json").read_text())
    crop = FINE_CROP
    if kind != "fine":
        data["model"].update(window=WINDOW, overlap=OVERLAP)
        crop = WINDOW
    data["train"] = {**data["train"], **TRAIN, "max_steps": steps, "save_every": steps, "crop_seconds": crop}
    path = tmp / f"{kind}-known-answer.json"
    path.write_text(json.dumps(data))
    return path


def make_corpus(out: Path, classes: int) -> Path:
    args = ["--out", str(out), "--classes", str(classes), "--segment", str(SEGMENT), "--seconds", str(SECONDS),
            "--items", str(ITEMS), "--valid", str(VALID)]
    assert recipe("tiny_corpus").main(args) == 0
    return out


def held_out(corpus: Path) -> list[str]:
    lines = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    return [line["video"] for line in lines if line["split"] == "valid"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("known-answer"), classes=2)


def test_corpus_is_balanced_and_deterministic(corpus, tmp_path):
    answers = Answers.read(corpus)
    valid = held_out(corpus)
    assert len(valid) == VALID and answers.classes == 2
    units = [k for item in valid for k in answers.unit_labels(item, SECONDS)]
    assert len(units) == VALID * SECONDS and units.count(0) == units.count(1)  # chance is exactly 1/2
    tiny_corpus = recipe("tiny_corpus")
    labels = answers.items[valid[0]]
    assert tiny_corpus.segment_classes(SECONDS, SEGMENT, 2, ITEMS - VALID) == labels  # --seed 0: item i's seed is i
    tiny_corpus.write_class_clip(tmp_path / "again.mp4", labels, SECONDS, SEGMENT, ITEMS - VALID)
    assert (tmp_path / "again.mp4").read_bytes() == (corpus / valid[0]).read_bytes()


def test_default_corpus_is_unchanged(tmp_path):
    assert recipe("tiny_corpus").main(["--out", str(tmp_path), "--items", "1", "--seconds", "1"]) == 0
    assert (tmp_path / "manifest.jsonl").read_text() == '{"video": "clips/0000.mp4", "split": "train"}\n'
    assert (tmp_path / "clips" / "0000.mp4").is_file() and not (tmp_path / "labels.json").exists()


def test_judge_is_right_on_the_real_tokens_of_held_out_clips(corpus):
    pipe = Pipeline.from_pretrained(corpus / "pipeline")
    judge = Judge(pipe, Answers.read(corpus))
    coarse, semantic = {}, {}
    for item in held_out(corpus):
        wave = load_audio(corpus / item, pipe.sample_rate, 1)
        with torch.inference_mode():
            coarse[item] = pipe.codec.encode(wave)[: pipe.codec.n_coarse]
            semantic[item] = pipe.semantic_tokenizer.tokenize(wave[0], pipe.sample_rate).long()[None]
    assert judge.accuracy("coarse", coarse) == (1.0, VALID * SECONDS)
    assert judge.accuracy("semantic", semantic) == (1.0, VALID * SECONDS)
    # the judge is not fooled by tokens that ignore the picture: one tone throughout scores chance
    one_tone = {item: codes[:, :50].repeat(1, int(SECONDS)) for item, codes in coarse.items()}
    assert judge.accuracy("coarse", one_tone)[0] == pytest.approx(1 / 2)


def train_and_judge(corpus: Path, steps: dict[str, int]) -> dict[tuple[str, str], float]:
    """Preprocess, train the three stages with the recipes, generate for every held-out clip with the trained
    pipeline and with the same stages untrained -> {(pipeline, "semantic" | "coarse"): accuracy}."""
    data = corpus / "data"
    assert recipe("preprocess").main([str(corpus / "manifest.jsonl"), "--pipeline", str(corpus / "pipeline"),
                                      "--out", str(data), "--quiet"]) == 0
    trained = Pipeline.from_pretrained(corpus / "pipeline")
    for n, kind in enumerate(("semantic", "coarse", "fine"), start=1):
        run = corpus / "runs" / kind  # a new folder in a new folder: the recipe creates both
        assert recipe(f"stage{n}").main(["--data", str(data), "--pipeline", str(corpus / "pipeline"), "--out",
                                         str(run), "--config", str(card(corpus, kind, steps[kind]))]) == 0
        trained.replace_stage(kind, run / "stage")
    untrained = Pipeline.from_pretrained(corpus / "pipeline")  # the baseline: the same stages, untrained
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for kind, stage in trained.stages.items():
            untrained.replace_stage(kind, Stage(stage.cfg))

    judge = Judge(trained, Answers.read(corpus))
    scores = {}
    for name, pipe in (("trained", trained), ("random", untrained)):
        tokens = {item: pipe.generate_tokens(corpus / item, seed=i, progress=False)
                  for i, item in enumerate(held_out(corpus))}
        for kind in ("semantic", "coarse"):
            accuracy, units = judge.accuracy(kind, {item: t[kind] for item, t in tokens.items()})
            assert units == VALID * SECONDS
            scores[name, kind] = accuracy
    print("held-out accuracy:", {f"{n}/{k}": round(v, 3) for (n, k), v in scores.items()})
    return scores


def assert_learned(scores: dict, classes: int, least: float) -> None:
    chance = 1 / classes
    for kind in ("semantic", "coarse"):
        assert scores["trained", kind] >= least, (chance, scores)
        assert abs(scores["random", kind] - chance) <= 0.2, (chance, scores)
        assert scores["trained", kind] - scores["random", kind] >= 0.3, (chance, scores)


def test_trained_pipeline_plays_the_tone_on_screen_of_held_out_videos(corpus):
    scores = train_and_judge(corpus, {"semantic": 150, "coarse": 150, "fine": 10})  # fine: not judged
    assert_learned(scores, classes=2, least=0.8)


@pytest.mark.slow
def test_four_tones(tmp_path):
    corpus = make_corpus(tmp_path, classes=4)
    scores = train_and_judge(corpus, {"semantic": 300, "coarse": 300, "fine": 10})
    assert_learned(scores, classes=4, least=0.6)
