"""Render the demo world: Bach chorales played to photographs, with video-to-music correspondences that are known.

    python recipes/demo_corpus.py --out DIR [--count 120] [--valid 16] [--renditions 1] [--unpaired 0] [--seed 0]
                                  [--max-seconds 30] [--organ-release 0.12]

Needs the packages that hold the data (not tokmusic dependencies):

    pip install music21 pretty_midi scikit-image && pip install --no-deps tinysoundfont

Music: four-part Bach chorales from music21's corpus (the compositions are public domain; the encodings ship with
music21 under its corpus terms, ``music21/corpus/license.txt``), rendered at 16 kHz mono with the General MIDI
soundfont TimGM6mb that ships in pretty_midi, through tinysoundfont. Pictures: photographs from scikit-image's
``skimage.data``. Every clip is drawn from the seed and its index, so the same arguments give the same corpus, and
a clip already on disk is kept (re-running finishes an interrupted render).

The correspondences, each one observable in the video and checkable in the music:

* **motion -> tempo and beat**: the camera pans across the photograph at ``PAN_PIXELS_PER_BEAT`` pixels (of the
  output frame) per beat, so its mean speed in pixels per second = tempo / 60 * PAN_PIXELS_PER_BEAT; tempi are
  drawn from ``TEMPO_RANGE`` BPM. The pan moves in surges, one per beat: its speed is the mean times
  1 + ``PAN_SURGE`` cos(2 pi beats), fastest on each beat of the music's grid (rests included), so the video
  shows where the beats fall as well as how fast they come. A video needs more than two frames per beat to show
  the surges (8 fps against 140 BPM gives 3.4).
* **cuts -> phrase boundaries**: each phrase of the chorale (phrases end on the fermatas) is one scene
  with its own photograph; after each phrase the music breathes for 1 to ``MAX_BREATH_BEATS`` beats of silence
  (drawn per phrase) and the next phrase starts with the cut. The breath's length varies so that only the cut,
  not the music before it, says when the next phrase starts.
* **colour -> instrument**: the whole clip is graded warm (``TINTS["piano"]``) when the chorale is played on
  piano and cool (``TINTS["organ"]``) when on church organ.

The organ is played detached, as organists articulate: each note is released ``--organ-release`` seconds
(``ORGAN_RELEASE``; at most half the note) before the next note of its voice starts (``articulate``; 0 plays it
legato, as corpora written before this option did). A held organ tone has no attack, so
played legato its notes change pitch but not loudness, and a codec that keeps loudness but not pitch (the demo
codec) loses the organ's rhythm and tempo; the short release before each note makes the beat a loudness pattern.

Captions come from the score: tempo word, instrument and mode, e.g. "a fast Bach chorale in a minor key played on
church organ". The last ``--valid`` chorales are held out, and they are shown only with the held-out
photographs ``VALID_IMAGES``, which no training clip uses.

**More renditions** (``--renditions R``, training only): every training chorale is rendered R times, each
rendition a paired clip of its own (tempo, instrument, photographs and breaths drawn afresh; rendition r >= 2 of
clip i draws from the seed and index ``r * RENDITION_INDEX + i`` and is named ``clips/rNN-IIII.mp4``). With one
rendition a stage can recall a training clip's tempo from its chorale and photographs; with several, the same
chorale comes at several tempi and only the camera tells which.

**Unpaired clips** (``--unpaired N``, training only): N more renderings of the first N training chorales, each at
a fresh tempo and instrument, whose camera speed and colour grade are drawn on their own instead of from the
music (their cuts still start the phrases). In them only the caption, or the music itself, says the tempo and
the instrument, so a stage that reads a control learns to let it override the video: what a text prompt needs.
Their truth holds the music's ``tempo`` and ``instrument`` and the video's ``video_tempo`` and
``video_instrument``; they are named ``clips/unpaired-NNNN.mp4``, and the manifest marks them ``keep_control``
(their control is never dropped in training, so what a stage learns without a control comes only from clips
whose video and music agree).

Writes DIR/clips/NNNN.mp4 (H.264 at ``--fps``, lossless ALAC audio), DIR/manifest.jsonl (video, text, split,
keep_control) and
DIR/truth.json (per clip: tempo, beat times, cut times, phrase ends, instrument, mode, caption, photographs, and
``release``, the organ's release in seconds, 0 for the piano). A re-run keeps a clip only if it was rendered with
the same release.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tokmusic.evaluation.known_answer import TEMPO_RANGE  # BPM, quarter-note beats; the judge folds into it
from tokmusic.training.cli import RecipeParser, run
from tokmusic.training.clip_writer import write_av

SAMPLE_RATE = 16000
TEMPO_WORDS = ((85.0, "slow"), (115.0, "moderate"), (float("inf"), "fast"))  # upper bound -> word
INSTRUMENTS = {"piano": 0, "organ": 19}  # General MIDI programs: acoustic grand, church organ
INSTRUMENT_WORDS = {"piano": "piano", "organ": "church organ"}
TINTS = {"piano": ((1.15, 0.95, 0.65), (30, 10, 0)), "organ": ((0.65, 0.9, 1.2), (0, 10, 35))}  # gain, offset
PAN_PIXELS_PER_BEAT = 48.0
PAN_SURGE = 0.8  # the pan's speed swings between 0.2 and 1.8 times its mean, fastest on each beat
MAX_BREATH_BEATS = 3  # the silence between phrases lasts 1, 2 or 3 beats
LEAD_IN = 0.5  # seconds before the first note
TAIL = 0.75  # seconds after the last note (releases)
VELOCITY = 90
ORGAN_RELEASE = 0.12  # seconds of silence in a voice before its next organ note (``articulate``)
TRAIN_IMAGES = ("astronaut", "brick", "camera", "chelsea", "coins", "grass", "hubble_deep_field",
                "immunohistochemistry", "retina", "colorwheel", "cell", "clock", "logo", "shepp_logan_phantom")
VALID_IMAGES = ("coffee", "horse", "moon", "rocket", "gravel")
UNPAIRED_INDEX = 100_000  # unpaired clip j draws from the seed and index UNPAIRED_INDEX + j
RENDITION_INDEX = 100_000  # rendition r >= 2 of training clip i draws from index r * RENDITION_INDEX + i


def tempo_word(bpm: float) -> str:
    return next(word for bound, word in TEMPO_WORDS if bpm < bound)


def chorales() -> list[str]:
    """Paths of music21's four-part Bach chorales that have at least two fermatas, in a fixed order."""
    from music21 import corpus

    return sorted(str(p) for p in corpus.getComposer("bach"))


def read_chorale(path: str):
    """(notes [(onset_q, end_q, channel, midi)], phrase ends in quarters, mode) or None if unusable."""
    from music21 import corpus, expressions

    try:
        score = corpus.parse(path)
    except Exception:  # a few corpus files do not parse; they are simply not used
        return None
    parts = score.parts
    if len(parts) != 4:
        return None
    notes = []
    for channel, part in enumerate(parts):
        for note in part.stripTies().flatten().notes:
            on = float(note.getOffsetInHierarchy(part))
            pitches = [note.pitch] if note.isNote else list(note.pitches)
            notes += [(on, on + float(note.quarterLength), channel, p.midi) for p in pitches]
    ends = sorted({float(n.getOffsetInHierarchy(part)) + float(n.quarterLength) for part in parts
                   for n in part.stripTies().flatten().notes
                   if any(isinstance(e, expressions.Fermata) for e in n.expressions)})
    if len(ends) < 2 or not notes:
        return None
    try:
        mode = score.analyze("key").mode
    except Exception:
        mode = "major"
    return notes, ends, mode


def plan_clip(notes, ends, bpm: float, max_seconds: float, breaths: list[int] | None = None) -> dict:
    """Time every note: quarter q -> seconds, with ``breaths[k]`` beats of silence after phrase k (default one
    each); keep whole phrases while the clip stays within ``max_seconds`` (at least two)."""
    spq = 60.0 / bpm
    ends = [e for e in ends if e > 0]
    if ends[-1] < max(n[1] for n in notes):
        ends = ends + [max(n[1] for n in notes)]
    rests = [1] * len(ends) if breaths is None else list(breaths)
    if len(rests) < len(ends):
        raise ValueError(f"{len(ends)} phrases need as many breaths, got {len(rests)}")

    def seconds(q: float) -> float:
        beats = sum(r for e, r in zip(ends, rests) if q >= e - 1e-6)  # breaths of the phrases finished by q
        return LEAD_IN + (q + beats) * spq

    keep = 2
    while keep < len(ends) and seconds(ends[keep]) - rests[keep] * spq + TAIL <= max_seconds:
        keep += 1
    last = ends[keep - 1]
    events = [(seconds(on), seconds(on) + (end - on) * spq, ch, key) for on, end, ch, key in notes if on < last - 1e-6]
    phrase_ends = [seconds(e) - r * spq for e, r in zip(ends[:keep], rests)]  # the breath starts here
    cuts = [seconds(e) for e in ends[: keep - 1]]  # the next phrase starts with the cut
    duration = phrase_ends[-1] + TAIL
    beats, q = [], 0.0
    while q < last - 1e-6:
        beats.append(seconds(q))
        q += 1.0
    return {"events": events, "phrase_ends": phrase_ends, "cuts": cuts, "duration": duration, "beats": beats}


def articulate(events, release: float) -> list:
    """Detached playing: each (on_s, off_s, channel, key) note that runs into the next note of its voice (its
    channel) ends ``release`` seconds early, or halfway through when shorter than twice that; a note followed by a
    rest keeps its length."""
    starts: dict[int, list[float]] = {}
    for on, _, channel, _ in events:
        starts.setdefault(channel, []).append(on)
    out = []
    for on, off, channel, key in events:
        if any(abs(s - off) < 1e-6 for s in starts[channel]):
            off = max(on + 0.5 * (off - on), off - release)
        out.append((on, off, channel, key))
    return out


def clip_release(instrument: str, organ_release: float) -> float:
    """The release ``articulate`` plays ``instrument`` with: ``organ_release`` for the organ, 0 for the piano (a
    struck note has its own attack)."""
    return organ_release if instrument == "organ" else 0.0


def render(events, seconds: float, program: int):
    """(on_s, off_s, channel, key) notes -> mono float32 audio at SAMPLE_RATE through TimGM6mb."""
    import numpy as np
    import pretty_midi
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
    font = synth.sfload(os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2"))
    for channel in range(4):
        synth.program_select(channel, font, 0, program)
    timeline = [(on, 1, ch, key) for on, _, ch, key in events] + [(off, 0, ch, key) for _, off, ch, key in events]
    out, now = [], 0
    for t, on, channel, key in sorted(timeline):  # at equal times note-offs (0) come before note-ons
        n = int(round(t * SAMPLE_RATE)) - now
        if n > 0:
            out.append(np.frombuffer(synth.generate(n), dtype=np.float32).reshape(-1, 2))
            now += n
        synth.noteon(channel, key, VELOCITY) if on else synth.noteoff(channel, key)
    tail = int(round(seconds * SAMPLE_RATE)) - now
    if tail > 0:
        out.append(np.frombuffer(synth.generate(tail), dtype=np.float32).reshape(-1, 2))
    wave = np.concatenate(out).mean(axis=1)[: int(round(seconds * SAMPLE_RATE))]
    return (wave / max(1.0, float(np.abs(wave).max()) / 0.9)).astype(np.float32)


def photograph(name: str):
    """An skimage.data photograph as uint8 RGB [H, W, 3]."""
    import numpy as np
    from skimage import data

    img = np.asarray(getattr(data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.dtype != np.uint8:  # a binary silhouette or a float image
        img = img.astype(np.float32)
        img = (255 * (img - img.min()) / max(1e-9, float(img.max() - img.min()))).astype(np.uint8)
    return img


def pan_distance(t, bpm: float):
    """Output pixels the camera has travelled by time ``t`` (seconds, array or float) at ``bpm``: the integral of
    its speed, PAN_PIXELS_PER_BEAT per beat with a surge on each beat (beats at LEAD_IN + k * 60 / bpm)."""
    import numpy as np

    spq = 60.0 / bpm
    return PAN_PIXELS_PER_BEAT / spq * (t + PAN_SURGE * spq / (2 * np.pi) * np.sin(2 * np.pi * (t - LEAD_IN) / spq))


def scene_frames(img, size: int, travelled, rng):
    """Frames of a camera panning across ``img`` in a random direction from a random start, bouncing off the
    edges; ``travelled``: output pixels covered by each frame's time (one frame per entry)."""
    import numpy as np

    h, w = img.shape[:2]
    crop = int(min(h, w) * 0.6)
    scale = crop / size  # image pixels per output pixel
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.sin(angle), np.cos(angle)]) * scale
    pos = np.array([rng.uniform(0, h - crop), rng.uniform(0, w - crop)])
    limit = np.array([h - crop, w - crop], dtype=float)
    idx = (np.arange(size) * scale).astype(int)
    frames = []
    for k in range(len(travelled)):
        if k:
            pos = pos + direction * (travelled[k] - travelled[k - 1])
            for d in range(2):  # bounce
                if pos[d] < 0 or pos[d] > limit[d]:
                    direction[d] = -direction[d]
                    pos[d] = min(max(pos[d], 0.0), limit[d])
        y, x = int(pos[0]), int(pos[1])
        frames.append(img[y + idx][:, x + idx])
    return frames


def make_clip(path: Path, index: int, chorale: str, split: str, seed: int, max_seconds: float, size: int,
              fps: int, unpaired: bool = False, organ_release: float = ORGAN_RELEASE) -> dict | None:
    """Render one clip to ``path`` (atomically); its ground truth, or None when the chorale is unusable.
    ``unpaired``: the camera speed and colour grade are drawn apart from the music's tempo and instrument;
    ``organ_release``: seconds of silence before each organ note that follows another (``articulate``)."""
    import numpy as np

    read = read_chorale(chorale)
    if read is None:
        return None
    notes, ends, mode = read
    rng = np.random.default_rng([seed, index])
    bpm = float(rng.uniform(*TEMPO_RANGE))
    instrument = ("piano", "organ")[int(rng.integers(2))]
    video_bpm, video_instrument = bpm, instrument
    if unpaired:
        drawn = np.random.default_rng([seed, index, 2])
        video_bpm = float(drawn.uniform(*TEMPO_RANGE))
        video_instrument = ("piano", "organ")[int(drawn.integers(2))]
    breaths = np.random.default_rng([seed, index, 1]).integers(1, MAX_BREATH_BEATS + 1, size=len(ends) + 1)
    plan = plan_clip(notes, ends, bpm, max_seconds, [int(b) for b in breaths])
    duration = plan["duration"]
    pool = VALID_IMAGES if split == "valid" else TRAIN_IMAGES
    bounds = [0.0] + plan["cuts"] + [duration]
    names = [str(n) for n in rng.choice(pool, size=len(bounds) - 1, replace=len(bounds) - 1 > len(pool))]
    gain, offset = (np.array(v, dtype=np.float32) for v in TINTS[video_instrument])
    speed = video_bpm / 60.0 * PAN_PIXELS_PER_BEAT
    total = int(round(duration * fps))
    frames = []
    for k, name in enumerate(names):
        first, stop = int(round(bounds[k] * fps)), int(round(bounds[k + 1] * fps))
        travelled = pan_distance(np.arange(first, stop) / fps, video_bpm)
        frames += scene_frames(photograph(name), size, travelled, rng)
    frames = frames[:total]
    graded = [np.clip(f.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8) for f in frames]
    release = clip_release(instrument, organ_release)
    wave = render(articulate(plan["events"], release), duration, INSTRUMENTS[instrument])
    caption = f"a {tempo_word(bpm)} Bach chorale in a {mode} key played on {INSTRUMENT_WORDS[instrument]}"
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    write_av(tmp, len(graded), graded.__getitem__, wave, fps, size, SAMPLE_RATE, audio_codec="alac")
    os.replace(tmp, path)
    r = lambda xs: [round(float(x), 4) for x in xs]  # noqa: E731
    info = {"chorale": os.path.basename(chorale), "split": split, "tempo": round(bpm, 3), "instrument": instrument,
            "mode": mode, "caption": caption, "duration": round(duration, 4), "beats": r(plan["beats"]),
            "cuts": r(plan["cuts"]), "phrase_ends": r(plan["phrase_ends"]), "photographs": names,
            "pan_pixels_per_second": round(speed, 3), "release": release}
    if unpaired:
        info.update(unpaired=True, video_tempo=round(video_bpm, 3), video_instrument=video_instrument)
    return info


def main(argv: list[str] | None = None) -> int:
    p = RecipeParser(prog="recipes/demo_corpus.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=120, help="clips (one chorale each)")
    p.add_argument("--valid", type=int, default=16, help="held-out clips: the last chorales, held-out photographs")
    p.add_argument("--renditions", type=int, default=1,
                   help="paired renderings of each training chorale, each at its own tempo, instrument and photographs")
    p.add_argument("--unpaired", type=int, default=0,
                   help="extra training clips whose camera speed and colour are drawn apart from the music")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=30.0, help="whole phrases are kept up to this length")
    p.add_argument("--size", type=int, default=192, help="video width and height")
    p.add_argument("--fps", type=int, default=8, help="video frames per second")
    p.add_argument("--organ-release", type=float, default=ORGAN_RELEASE,
                   help="seconds the organ releases each note before the next in its voice (0: legato; "
                        "default %(default)s)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.count < 2 or not 0 < args.valid < args.count:
        p.error(f"need --count >= 2 and 0 < --valid < --count, got {args.count} and {args.valid}")
    if not 1 <= args.renditions <= 9 or args.count >= UNPAIRED_INDEX:
        p.error(f"need 1 <= --renditions <= 9 and --count < {UNPAIRED_INDEX}, got {args.renditions} and {args.count}")
    if not 0 <= args.unpaired <= args.count - args.valid:
        p.error(f"need 0 <= --unpaired <= the training clips ({args.count - args.valid}), got {args.unpaired}")
    if args.max_seconds < 5 or args.size < 32 or args.fps < 1:
        p.error("need --max-seconds >= 5, --size >= 32 and --fps >= 1")
    if not 0 <= args.organ_release <= 0.5:
        p.error(f"need 0 <= --organ-release <= 0.5 seconds, got {args.organ_release}")
    try:
        import music21  # noqa: F401
        import pretty_midi  # noqa: F401
        import skimage  # noqa: F401
        import tinysoundfont  # noqa: F401
    except ImportError as exc:
        p.error(f"{exc.name} is missing: pip install music21 pretty_midi scikit-image && "
                "pip install --no-deps tinysoundfont")
    from tqdm.auto import tqdm

    out = Path(args.out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    truth_path = out / "truth.json"
    truth = json.loads(truth_path.read_text())["clips"] if truth_path.exists() else {}
    # Held-out clips come from the end of the corpus, training clips from the start: no chorale is in both.
    paths = chorales()
    plan = [(i, "train") for i in range(args.count - args.valid)]
    plan += [(args.count - args.valid + j, "valid") for j in range(args.valid)]
    train_paths, valid_paths = iter(paths), iter(reversed(paths))
    used: set[str] = set()
    chosen: list[str] = []  # this run's clips, in order
    train_chorales: list[str] = []

    def keep(name: str, index: int, chorale: str, split: str, unpaired: bool = False) -> bool:
        """Whether clip ``name`` is (now) on disk with ``chorale``; False when the chorale is unusable."""
        if (name in truth and truth[name]["chorale"] == os.path.basename(chorale) and (out / name).exists()
                and truth[name].get("unpaired", False) == unpaired
                and truth[name].get("release", 0.0) == clip_release(truth[name]["instrument"], args.organ_release)):
            return True
        info = make_clip(out / name, index, chorale, split, args.seed, args.max_seconds, args.size, args.fps, unpaired,
                         args.organ_release)
        if info is None:
            return False
        truth[name] = info
        tmp = truth_path.with_suffix(".partial")
        tmp.write_text(json.dumps({"sample_rate": SAMPLE_RATE, "fps": args.fps, "clips": truth}) + "\n")
        os.replace(tmp, truth_path)
        return True

    extra = (args.renditions - 1) * (args.count - args.valid)
    bar = tqdm(total=len(plan) + extra + args.unpaired, desc="clips", unit="clip", disable=args.quiet)
    for index, split in plan:
        name = f"clips/{index:04d}.mp4"
        source = train_paths if split == "train" else valid_paths
        while True:  # the next usable chorale of this split
            chorale = next(source, None)
            if chorale is None:
                p.error(f"music21's corpus ran out of usable chorales at clip {index}: lower --count")
            if chorale in used:
                continue
            used.add(chorale)
            if keep(name, index, chorale, split):
                break
        chosen.append(name)
        if split == "train":
            train_chorales.append(chorale)
        bar.update()
    for r in range(2, args.renditions + 1):
        for i, chorale in enumerate(train_chorales):  # each rendered before, so usable
            name = f"clips/r{r:02d}-{i:04d}.mp4"
            keep(name, r * RENDITION_INDEX + i, chorale, "train")
            chosen.append(name)
            bar.update()
    for j, chorale in enumerate(train_chorales[: args.unpaired]):
        name = f"clips/unpaired-{j:04d}.mp4"
        keep(name, UNPAIRED_INDEX + j, chorale, "train", unpaired=True)  # the chorale rendered before, so usable
        chosen.append(name)
        bar.update()
    bar.close()
    lines = [{"video": name, "text": truth[name]["caption"], "split": truth[name]["split"],
              **({"keep_control": True} if truth[name].get("unpaired") else {})} for name in sorted(chosen)]
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    seconds = sum(truth[line["video"]]["duration"] for line in lines)
    print(f"wrote {len(lines)} clips ({args.valid} held out, {args.renditions} rendition(s) of each training chorale, "
          f"{args.unpaired} unpaired, {seconds / 60:.1f} min of "
          f"music) and {out / 'manifest.jsonl'}; ground truth in {truth_path}")
    return 0


if __name__ == "__main__":
    run(main)
