"""Does the music follow the video? The demo world's known-answer benchmark, side by side with baselines.

    python recipes/demo_corpus.py --out /tmp/demo-corpus          # or the corpus recipes/build_demo.py made
    python benchmarks/known_answer.py --corpus /tmp/demo-corpus [--pipeline DIR] [--against DIR ...] [--clips N] [--json]

On the corpus's held-out clips (held-out chorales shown with held-out photographs; see recipes/demo_corpus.py
for the correspondences) it compares, in one run:

* ``truth``    the ground-truth rendering (the soundtrack of the clip): the ceiling of every measure;
* ``pipeline`` the pipeline under test (default: tokmusic's bundled default) generating for the clip's video;
* ``shuffled`` the same generated music judged against another clip's answers (a derangement): what a
  pipeline that ignores the video would score;
* ``random``   ``tokmusic.testing.tiny_pipeline()`` (random weights) generating for the clip's video;
* ``against``  with ``--against DIR``, another pipeline (say the bundle a new build would replace) generating for
  the clip's video with the same seeds, so two pipelines are compared in one run (``--against A B`` adds rows
  ``against`` and ``against_2``: three pipelines in one run, the baselines and the truth measured once);
* ``codec``    the truth encoded and decoded by the pipeline's codec: the ceiling of any music made of its tokens;
* ``given_semantic`` the pipeline's coarse and fine stages run on the truth's semantic tokens: what the
  acoustic stages and the codec keep of a perfect semantic stage (left out for a pipeline without a semantic
  tokenizer). With ``codec`` it says where along the chain a correspondence is lost.

Measures:

(a) codec: multi-scale log-mel distance, SI-SNR and chroma agreement (do the notes survive? see
    ``tokmusic.evaluation.reconstruction.chroma_agreement``) of the pipeline codec's reconstruction of the truth
    (and of the random pipeline's codec); ``--only codec`` measures just this;
(b) tempo: Spearman correlation across clips between the tempo of the music (autocorrelation of the fine log-mel
    onset envelope, ``tokmusic.evaluation.spectral.onset_strength``, under a prior centred at 110 BPM,
    ``TEMPO_PRIOR``, folded by octaves into the corpus's tempo range when it lies outside it, ``fold_tempo``) and
    the tempo the video implies (the rate of its pan's surges), and the share of clips within 8 % of it, overall
    and per instrument (an organ's notes change pitch, not loudness); ``--tempo-seeds K`` measures the Spearman of
    the pipeline (and of ``--against``) again with K - 1 more seed sets, as one draw of it moves with the sampling
    seed far more than the phrase F1 does;
(c) phrases: the times where the music resumes after a pause, against the video's cuts: F1 at +-0.5 s; beat
    coverage and hit scores (BCS = generated beats / truth beats, BHS = generated beats within 0.1 s of a truth
    beat / truth beats) and the share of cuts with a generated beat within 0.1 s;
(d) text control, on the same video: "fast" vs "slow" prompts (share of clips where the fast one is faster) and
    "piano" vs "church organ" (share where the piano prompt sounds more like piano to the judge below), over
    all the clips and over the clips whose video shows each instrument, with each clip's readings (``per_clip``);
    ``--only text`` measures just this (with ``--prompt-clips``);
(e) Frechet distance of the music's embeddings to the truth's, with two offline embedders: the pipeline's own
    audio tower (5 s windows) and the weight-free spectral embedder (1 s windows).

Instrument is judged zero-shot by the pipeline's control embedder: which caption, "... played on piano" or
"... played on church organ", the audio embeds nearer to; its accuracy on the truth is reported as its ceiling.
The judge of one waveform and the sums over clips are ``tokmusic.evaluation.known_answer``. Progress goes to
stderr (``--quiet`` silences it), the table or the ``--json`` object to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tokmusic.evaluation.known_answer import (INSTRUMENT_PROMPTS, TEMPO_PROMPTS, Judge, derangement, fold_tempo,
                                              frechet, judge_tempo, read_truth, spearman, summarize)

SEED_STRIDE = 1000  # --tempo-seeds: seed set k generates clip i with seed SEED + SEED_STRIDE * k + i
SPECTROGRAM_SECONDS = 15  # of each of the first two clips, in --out's spectrogram.png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, help="a corpus written by recipes/demo_corpus.py")
    p.add_argument("--pipeline", help="pipeline directory (default: tokmusic's bundled default)")
    p.add_argument("--against", nargs="+", metavar="DIR",
                   help="other pipeline directories, measured in the same run (rows 'against', 'against_2', ...)")
    p.add_argument("--clips", type=int, help="held-out clips to use (default: all of them)")
    p.add_argument("--seconds", type=float, help="only the first SECONDS of each clip (default: all)")
    p.add_argument("--prompt-clips", type=int, default=8, help="clips for the text-control test (d); 0 skips it")
    p.add_argument("--prompt-seconds", type=float, default=12.0, help="seconds generated per prompt in (d)")
    p.add_argument("--seed", type=int, default=0, help="clip i is generated with seed SEED + i")
    p.add_argument("--tempo-seeds", type=int, default=1, metavar="K",
                   help="measure the tempo Spearman of the pipeline (and --against) over K seed sets, SEED,"
                        f" SEED + {SEED_STRIDE}, ...: one draw of it is noisy (default 1)")
    p.add_argument("--out", help="also write the generated music here (WAV) and a spectrogram PNG of the first two clips")
    p.add_argument("--only", choices=("codec", "text"),
                   help="measure only (a), the codecs' reconstructions (fast), or only (d), the text control")
    p.add_argument("--sampling", type=json_object, default={}, metavar="JSON",
                   help="sampling options for every pipeline's music, as Pipeline.generate takes them, one value or"
                        """ one per stage, e.g. '{"cfg_scale": {"semantic": 6}}' (default: each stage's own)""")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    if args.tempo_seeds < 1:
        p.error(f"--tempo-seeds {args.tempo_seeds}: give 1 or more seed sets")
    if args.prompt_clips < (1 if args.only == "text" else 0):
        p.error(f"--prompt-clips {args.prompt_clips}: give 1 or more clips for the text control"
                + ("" if args.only == "text" else ", or 0 to skip it"))

    import tokmusic
    from tokmusic.audio import load_audio
    from tokmusic.default import default_pipeline
    from tokmusic.evaluation.embedders import SpectralEmbedder
    from tokmusic.evaluation.reconstruction import chroma_agreement, mel_distance, si_snr
    from tokmusic.testing import tiny_pipeline

    corpus = Path(args.corpus)
    truth_file = corpus / "truth.json"
    if not truth_file.is_file():
        p.error(f"{truth_file} not found: make the corpus with recipes/demo_corpus.py --out {corpus}")
    clips = read_truth(truth_file, need=("split",))
    names = sorted(n for n, c in clips.items() if c["split"] == "valid")[: args.clips]
    if len(names) < 3:
        p.error(f"{corpus}: need at least 3 held-out clips, found {len(names)}")
    pipe = tokmusic.Pipeline.from_pretrained(args.pipeline) if args.pipeline else default_pipeline()
    random_pipe = tiny_pipeline(seed=0)
    others = againsts(args)  # row -> directory
    systems = {"pipeline": pipe, "random": random_pipe,
               **{label: tokmusic.Pipeline.from_pretrained(d) for label, d in others.items()}}
    for system in systems.values():
        system.check_request(**args.sampling)  # a bad --sampling fails here, before any music is made
    sr = pipe.sample_rate
    judge = Judge(pipe.control, sr)
    started = time.perf_counter()

    def log(message: str) -> None:
        """A progress line on stderr, with the seconds since the start."""
        if not args.quiet:
            print(f"{message} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    if args.only == "text":
        answers = [{**clips[n], "duration": min(clips[n]["duration"], args.seconds or math.inf)} for n in names]
        result = {"clips": len(names), "corpus": str(corpus), "seed": args.seed, "sampling": args.sampling,
                  "pipeline": args.pipeline or "default", "against": others,
                  "text_control": text_control(systems, corpus, names, answers, judge, args, log)}
        print(json.dumps(result) if args.json else "\n".join(text_lines(result)))
        return 0

    spectral = SpectralEmbedder()
    answers, waves = [], {"truth": [], "codec": [], **{label: [] for label in systems}}
    if pipe.semantic_tokenizer is not None:
        waves["given_semantic"] = []
    codec = {label: {"mel_distance": [], "si_snr": [], "chroma_agreement": []} for label in systems}
    generated_seconds = 0.0
    for i, name in enumerate(names):
        answer = dict(clips[name])
        video = corpus / name
        truth = load_audio(video, sr, 1)
        if args.seconds:
            truth = truth[:, : int(args.seconds * sr)]
        answer["duration"] = truth.shape[-1] / sr
        answers.append(answer)
        waves["truth"].append(truth)
        for label, system in systems.items():
            with torch.inference_mode():
                rebuilt = system.codec.decode(system.codec.encode(load_audio(video, system.sample_rate, 1)
                                                                  [:, : truth.shape[-1] * system.sample_rate // sr]))
            rebuilt = load_rate(rebuilt, system.sample_rate, sr)
            codec[label]["mel_distance"].append(mel_distance(truth, rebuilt, sr))
            codec[label]["si_snr"].append(si_snr(truth, rebuilt))
            codec[label]["chroma_agreement"].append(chroma_agreement(truth, rebuilt, sr))
            if args.only == "codec":
                continue
            if label == "pipeline":
                waves["codec"].append(rebuilt)
                if "given_semantic" in waves:
                    semantic_given = given_semantic(system, video, truth, args.seed + i, args.sampling)
                    waves["given_semantic"].append(semantic_given)
            waves[label].append(generated(system, video, sr, args.seed + i, answer["duration"], None, args.sampling))
            generated_seconds += answer["duration"] if label != "random" else 0.0
        log(f"  clip {i + 1}/{len(names)} {name}: done")
    gen_wall = time.perf_counter() - started

    codec_means = {label: {k: round(float(np.nanmean(v)), 4) for k, v in m.items()} for label, m in codec.items()}
    if args.only == "codec":
        result = {"clips": len(names), "corpus": str(corpus), "pipeline": args.pipeline or "default",
                  "codec": codec_means}
        print(json.dumps(result) if args.json else "\n".join(codec_lines(result)))
        return 0

    log(f"judging {len(names)} clips of {len(waves)} systems")
    shuffle = derangement(len(names), args.seed)
    heard = [judge.analyse(w) for w in waves["pipeline"]]  # the shuffled row scores the same music
    rows = {
        "truth": [judge.measure(w, a) for w, a in zip(waves["truth"], answers)],
        "pipeline": [judge.score(h, a) for h, a in zip(heard, answers)],
        "shuffled": [judge.score(heard[j], a) for j, a in zip(shuffle, answers)],
    }
    rows.update({label: [judge.measure(w, a) for w, a in zip(waves[label], answers)]
                 for label in ("random", *others, "codec", "given_semantic") if label in waves})
    result: dict = {"clips": len(names), "corpus": str(corpus), "seed": args.seed, "sampling": args.sampling,
                    "pipeline": args.pipeline or "default", "against": others, "systems": {}}
    truth_emb = [judge.audio_embeddings(w) for w in waves["truth"]]
    truth_spec = [spectral.embed_windows(w, sr) for w in waves["truth"]]
    embedded: dict = {}  # waves -> their (control, spectral) embeddings: the shuffled row shares the pipeline's
    for label, system_rows in rows.items():
        summary = summarize(system_rows, answers)
        source = {"shuffled": "pipeline"}.get(label, label)
        if label != "truth":
            if source not in embedded:
                embedded[source] = ([judge.audio_embeddings(w) for w in waves[source]],
                                    [spectral.embed_windows(w, sr) for w in waves[source]])
            control_emb, spectral_emb = embedded[source]
            summary["fd_control"] = frechet(control_emb, truth_emb)
            summary["fd_spectral"] = frechet(spectral_emb, truth_spec)
        result["systems"][label] = summary
    result["codec"] = codec_means

    # (b) again over more seed sets: one pipeline's tempo Spearman moves with the sampling seed
    implied = [a["tempo"] for a in answers]
    seeds = [args.seed + SEED_STRIDE * k for k in range(args.tempo_seeds)]
    result["tempo_seeds"] = {"seeds": seeds}
    for label in ("pipeline", *others):
        values = [result["systems"][label]["tempo_spearman"]]
        for seed in seeds[1:]:
            tempi = []
            for i, name in enumerate(names):
                wave = generated(systems[label], corpus / name, sr, seed + i, answers[i]["duration"], None,
                                 args.sampling)
                tempi.append(fold_tempo(judge_tempo(wave, sr)))
            values.append(round(spearman(tempi, implied), 4))
            log(f"  tempo {label} seed {seed}: Spearman {values[-1]:.3f}")
        result["tempo_seeds"][label] = values

    # (d) text control on the same videos
    result["text_control"] = text_control(systems, corpus, names, answers, judge, args, log)
    result["generation"] = {"seconds_of_music": round(generated_seconds, 1), "wall_seconds": round(gen_wall, 1)}

    if args.out:
        write_outputs(Path(args.out), names, waves, sr)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


def text_control(systems: dict, corpus: Path, names: list[str], answers: list[dict], judge, args, log) -> dict:
    """(d): per system, the share of the first ``--prompt-clips`` clips where the "fast" prompt gives faster music
    than the "slow" one, and where the piano prompt sounds more like piano than the organ prompt, same video and
    seed; the same share over the clips whose video shows each instrument, and each clip's readings."""
    k, sr = min(args.prompt_clips, len(names)), judge.sample_rate
    text: dict = {}
    for label, system in systems.items() if k else ():
        clips = []
        for i, name in enumerate(names[:k]):
            video, secs = corpus / name, min(args.prompt_seconds, answers[i]["duration"])

            def make(prompt, system=system, video=video, secs=secs, i=i):
                return generated(system, video, sr, args.seed + 100 + i, secs, prompt, args.sampling)

            tempo = {w: fold_tempo(judge_tempo(make(t), sr)) for w, t in TEMPO_PROMPTS.items()}
            score = {w: judge.piano_score(make(t)) for w, t in INSTRUMENT_PROMPTS.items()}
            clips.append({"clip": name, "instrument": answers[i].get("instrument"), "tempo": answers[i].get("tempo"),
                          **{f"{w}_bpm": float(v) for w, v in tempo.items()},  # unrounded: the shares compare them
                          **{f"{w}_prompt_piano_score": float(v) for w, v in score.items()}})
            log(f"  prompts {label} {i + 1}/{k}")
        text[label] = {**prompt_shares(clips), "by_video_instrument": {
            kind: prompt_shares([c for c in clips if c["instrument"] == kind])
            for kind in sorted({c["instrument"] for c in clips if c["instrument"]})}, "per_clip": clips}
    return text


def prompt_shares(clips: list[dict]) -> dict:
    """The share of ``clips`` where "fast" played faster than "slow", and where "piano" sounded more piano."""
    n = len(clips)
    return {"fast_faster_than_slow": round(sum(c["fast_bpm"] > c["slow_bpm"] for c in clips) / n, 4),
            "piano_prompt_more_piano": round(sum(c["piano_prompt_piano_score"] > c["organ_prompt_piano_score"]
                                                 for c in clips) / n, 4), "clips": n}


def json_object(text: str) -> dict:
    """``--sampling``'s value: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r}: give a JSON object such as '{{\"temperature\": 0.8}}'")
    return value


def againsts(args) -> dict[str, str]:
    """Row -> directory of every ``--against`` pipeline: against, against_2, ..."""
    return {"against" if n == 1 else f"against_{n}": d for n, d in enumerate(args.against or [], start=1)}


def given_semantic(pipe, video: Path, truth: torch.Tensor, seed: int, sampling: dict) -> torch.Tensor:
    """The music of ``pipe``'s coarse and fine stages for ``video`` given the truth's semantic tokens (``pipe``
    has a semantic tokenizer)."""
    with torch.inference_mode():
        semantic = pipe.semantic_tokenizer.tokenize(truth, pipe.sample_rate).reshape(1, -1)
    duration = truth.shape[-1] / pipe.sample_rate
    tokens = pipe._tokens(video, None, [seed], duration, False, sampling, given={"semantic": semantic})[0]
    return load_rate(pipe._decode(tokens).waveform, pipe.sample_rate, pipe.sample_rate)  # mono [1, N]


def generated(system, video: Path, sr: int, seed: int, seconds: float, prompt: str | None = None,
              sampling: dict | None = None) -> torch.Tensor:
    """``system``'s music for ``video`` (and ``prompt``), mono ``[1, N]`` at the judge's ``sr``."""
    music = system.generate(video, prompt, seed=seed, seconds=seconds, progress=False, **(sampling or {}))
    return load_rate(music.waveform, system.sample_rate, sr)


def load_rate(wave: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """Mono ``[1, N]`` at ``target`` Hz."""
    from tokmusic.resample import resample

    wave = wave.float().mean(0, keepdim=True) if wave.dim() == 2 else wave.float().reshape(1, -1)
    return wave if rate == target else resample(wave, rate, target)


def write_outputs(out: Path, names: list[str], waves: dict, sr: int) -> None:
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    for label in ("truth", "pipeline", "random"):
        for name, wave in zip(names, waves[label]):
            sf.write(out / f"{Path(name).stem}-{label}.wav", wave[0].numpy(), sr)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    labels, shown = ("truth", "pipeline", "random"), names[:2]
    fig, axes = plt.subplots(len(labels), len(shown), figsize=(6 * len(shown), 6), sharex=True, squeeze=False)
    for col, name in enumerate(shown):
        for row, label in enumerate(labels):
            x = waves[label][col][0][: SPECTROGRAM_SECONDS * sr]
            spec = torch.stft(x, 1024, 256, window=torch.hann_window(1024), return_complex=True).abs()
            ax = axes[row, col]
            ax.imshow(20 * np.log10(spec.numpy() + 1e-5), origin="lower", aspect="auto", cmap="magma",
                      extent=(0, x.shape[0] / sr, 0, sr / 2000), vmin=-60)
            ax.set_title(f"{name}: {label}", fontsize=9)
            ax.set_ylabel("kHz")
        axes[-1, col].set_xlabel("seconds")
    fig.suptitle("ground-truth rendering, the pipeline's music and the random pipeline's, for the same videos")
    fig.tight_layout()
    fig.savefig(out / "spectrogram.png", dpi=80)
    plt.close(fig)


def codec_lines(result: dict) -> list[str]:
    return [f"codec ({label}): mel distance {c['mel_distance']:.3f}, SI-SNR {c['si_snr']:.2f} dB, chroma agreement "
            f"{c['chroma_agreement']:.3f} (1: the notes survive, 0: only the key)"
            for label, c in result["codec"].items()]


def text_lines(result: dict) -> list[str]:
    lines = []
    for label, t in result["text_control"].items():
        by = "".join(f"; {kind} videos {s['fast_faster_than_slow']:.0%} / {s['piano_prompt_more_piano']:.0%} "
                     f"({s['clips']})" for kind, s in t.get("by_video_instrument", {}).items())
        lines.append(f"text control ({label}, {t['clips']} clips): fast prompt faster {t['fast_faster_than_slow']:.0%}, "
                     f"piano prompt more piano {t['piano_prompt_more_piano']:.0%}{by}")
    return lines


def print_table(result: dict) -> None:
    systems = result["systems"]
    keys = ["tempo_spearman", "tempo_within_8pct", "tempo_within_8pct_piano", "tempo_within_8pct_organ",
            "tempo_steady", "phrase_f1", "bcs", "bhs", "cut_beat_hit_rate", "instrument_accuracy", "fd_control", "fd_spectral"]
    print(f"known-answer benchmark: {result['clips']} held-out clips of {result['corpus']}, "
          f"pipeline {result['pipeline']}" + "".join(f", {k} {d}" for k, d in result["against"].items()))
    widths = {s: max(12, len(s) + 2) for s in systems}
    print(f"{'':22s}" + "".join(f"{s:>{widths[s]}s}" for s in systems))
    for key in keys:
        cells = "".join(f"{systems[s].get(key, float('nan')):>{widths[s]}.3f}" for s in systems)
        print(f"{key:22s}{cells}")
    print("\n".join(codec_lines(result)))
    for line in text_lines(result):
        print(line)
    g = result["generation"]
    print(f"generation: {g['seconds_of_music']} s of music (pipeline{''.join(' and ' + k for k in result['against'])}) "
          f"in {g['wall_seconds']} s, the random pipeline's included")
    spread = result["tempo_seeds"]
    if len(spread["seeds"]) > 1:
        for label in ("pipeline", *result["against"]):
            values = spread[label]
            print(f"tempo Spearman {label} over seeds {', '.join(map(str, spread['seeds']))}: "
                  f"{' / '.join(f'{v:.3f}' for v in values)} (mean {float(np.mean(values)):.3f})")
    if not math.isnan(systems["shuffled"]["tempo_spearman"]):
        print(f"tempo Spearman pipeline / shuffled: {systems['pipeline']['tempo_spearman']:.3f} / "
              f"{systems['shuffled']['tempo_spearman']:.3f}")


if __name__ == "__main__":
    from tokmusic.training.cli import run

    run(main)  # a wrong path or pipeline: one line naming it, exit 2
