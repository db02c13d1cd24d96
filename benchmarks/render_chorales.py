"""Render Bach chorales from music21's corpus to audio with exact ground truth (beats, tempo, key).

Runs in its own environment (these packages are not tokmusic dependencies):

    python3 -m venv /tmp/rvenv && /tmp/rvenv/bin/pip install music21 pretty_midi soundfile numpy \
        && /tmp/rvenv/bin/pip install --no-deps tinysoundfont
    /tmp/rvenv/bin/python benchmarks/render_chorales.py /tmp/chorales_b --count 40 --skip 60

Each four-part chorale is played at a random tempo (70-130 BPM) with the General MIDI soundfont that ships
in pretty_midi (TimGM6mb), once as piano and once as organ: OUT/piano/*.wav, OUT/organ/*.wav and
OUT/truth.json (beat times from the score's quarter-note grid, tempo, music21's key analysis).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pretty_midi
import soundfile as sf
import tinysoundfont
from music21 import corpus

SAMPLE_RATE = 22050
LEAD_IN = 0.5  # seconds of silence before the first note
INSTRUMENTS = ((0, "piano"), (19, "organ"))  # General MIDI programs
SOUNDFONT = os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")


def render(events: list[tuple], seconds: float, program: int) -> np.ndarray:
    """(time, "on"|"off", channel, key) events -> stereo float32 [samples, 2]."""
    synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
    font = synth.sfload(SOUNDFONT)
    for channel in range(4):
        synth.program_select(channel, font, 0, program)
    out, now = [], 0
    for t, kind, channel, key in sorted(events, key=lambda e: (e[0], e[1] == "on")):
        n = int(round(t * SAMPLE_RATE)) - now
        if n > 0:
            out.append(np.frombuffer(synth.generate(n), dtype=np.float32).reshape(-1, 2))
            now += n
        synth.noteon(channel, key, 90) if kind == "on" else synth.noteoff(channel, key)
    tail = int(round(seconds * SAMPLE_RATE)) - now
    if tail > 0:
        out.append(np.frombuffer(synth.generate(tail), dtype=np.float32).reshape(-1, 2))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output directory")
    parser.add_argument("--count", type=int, default=40, help="chorales to render")
    parser.add_argument("--skip", type=int, default=0, help="four-part chorales to pass over first (a held-out set)")
    args = parser.parse_args()
    for _, label in INSTRUMENTS:
        os.makedirs(os.path.join(args.out, label), exist_ok=True)
    rng = np.random.default_rng(args.skip)
    done, seen = [], 0
    for path in sorted(corpus.getComposer("bach"), key=str):
        if len(done) >= args.count:
            break
        try:
            score = corpus.parse(path)
        except Exception:  # a few corpus files do not parse; they are simply not used
            continue
        parts = score.parts
        if len(parts) != 4:
            continue
        seen += 1
        if seen <= args.skip:
            continue
        bpm = float(rng.uniform(70, 130))
        spq = 60.0 / bpm  # seconds per quarter note
        events, first, last = [], None, 0.0
        for channel, part in enumerate(parts):
            for note in part.stripTies().flatten().notes:
                on = float(note.getOffsetInHierarchy(part)) * spq
                off = on + float(note.quarterLength) * spq
                for pitch in note.pitches:
                    events += [(on + LEAD_IN, "on", channel, pitch.midi), (off + LEAD_IN - 0.01, "off", channel, pitch.midi)]
                first = on if first is None else min(first, on)
                last = max(last, off)
        if not events or last < 8:
            continue
        # beats are quarter notes counted from the first full bar, so a pickup lands on beats too
        measures = parts[0].getElementsByClass("Measure")
        shift = float(measures[1].offset) % 1.0 if len(measures) > 1 else 0.0
        beats = [LEAD_IN + q * spq for q in np.arange(shift, last / spq - 1e-6, 1.0) if q * spq >= first - 1e-6]
        key = score.analyze("key")
        name = os.path.splitext(os.path.basename(str(path)))[0]
        for program, label in INSTRUMENTS:
            audio = render(events, last + 1.5, program)
            sf.write(os.path.join(args.out, label, f"{name}.wav"), 0.5 * audio / max(1e-6, np.abs(audio).max()),
                     SAMPLE_RATE)
        done.append({"name": name, "bpm": bpm, "beats": beats, "key_tonic": key.tonic.pitchClass,
                     "key_mode": key.mode, "key": f"{key.tonic.name} {key.mode}"})
        print(len(done), name, round(bpm, 1), key, len(beats), flush=True)
    with open(os.path.join(args.out, "truth.json"), "w") as f:
        json.dump(done, f, indent=1)


if __name__ == "__main__":
    main()
