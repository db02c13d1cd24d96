"""``tokmusic app``: a local web page that writes music for an uploaded video (Gradio, the ``app`` extra).

    pip install "tokmusic[app]"
    tokmusic app                                  # http://127.0.0.1:7860, the default pipeline
    tokmusic app --pipeline DIR --port 8000 --max-seconds 60

Upload a video, optionally type a prompt and set the seed, the seconds to score and the sampling settings, and
press Generate. The page shows progress while the three stages run, then the video with its new soundtrack in a
player, download links for that MP4 and for the music alone (WAV), and a spectrogram of the music.

A problem (not a video, longer than ``--max-seconds``, a bad setting, a failed generation) is shown as a message
on the page and the server goes on serving. Uploads and results live in one temporary folder, deleted when the
server stops. The page listens on 127.0.0.1 (this computer only) unless ``host`` says otherwise.

In Python, ``MusicApp(pipeline).generate(video, ...)`` is what the Generate button runs; ``MusicApp.build()``
returns the ``gradio.Blocks`` page and ``serve()`` runs it until Ctrl-C.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch

from .errors import ConfigError, TokmusicError

DEFAULT_MAX_SECONDS = 120.0  # the longest video (or --seconds) the page accepts; longer ones: `tokmusic generate`
INSTALL_HINT = 'pip install "tokmusic[app]"'
RESULT_TTL = 3600.0  # seconds a result stays in the temporary folder while the server runs
_SEED_RANGE = 2**31  # a seed drawn for the user fits a number field
Number = Union[float, str, None]  # a number, or the text of a field of the page ("" for empty)


def require_gradio():
    """The ``gradio`` module, or ConfigError telling how to install it."""
    try:
        import gradio
    except ImportError:
        raise ConfigError(f"the web page needs gradio, which is not installed; install it with "
                          f"{INSTALL_HINT}") from None
    return gradio


@dataclass
class AppResult:
    """What one press of Generate makes: the video with the music, the music, its spectrogram, and a line
    about it (duration, rate, the seed that reproduces it)."""

    video: Path
    wav: Path
    spectrogram: Path
    seed: int
    duration: float
    sample_rate: int

    @property
    def info(self) -> str:
        """One line for the page (Markdown)."""
        return (f"**{self.duration:.1f} s** of music at {self.sample_rate} Hz, seed **{self.seed}** "
                "(enter it again to get the same music)")


class MusicApp:
    """The page's state: one pipeline (loaded once) and one temporary folder for uploads and results.

    ``pipeline``: None (the default pipeline), a directory, or a ``tokmusic.Pipeline``. ``max_seconds``: the
    longest stretch of video the page scores. ``workdir``: where uploads and results go (default: a new
    temporary folder, removed by ``close()``).
    """

    def __init__(self, pipeline=None, *, max_seconds: float = DEFAULT_MAX_SECONDS,
                 workdir: str | os.PathLike | None = None):
        if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not 0 < max_seconds < math.inf:
            raise ConfigError(f"max_seconds must be a number of seconds > 0, got {max_seconds!r}")
        self.max_seconds = float(max_seconds)
        self._pipeline_arg = pipeline
        self._pipe = None
        self._lock = threading.Lock()
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="tokmusic-app-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    # -- the pipeline ------------------------------------------------------------------------------------------
    @property
    def pipeline(self):
        """The pipeline, loaded on first use (``serve`` loads it before the page opens)."""
        with self._lock:
            if self._pipe is None:
                from .default import resolve_pipeline

                self._pipe = resolve_pipeline(self._pipeline_arg, warn_missing=False)
            return self._pipe

    # -- what the Generate button runs -------------------------------------------------------------------------
    def generate(self, video: str | os.PathLike | None, prompt: str | None = None, seed: Number = None,
                 seconds: Number = None, temperature: Number = None, top_k: Number = None, top_p: Number = None,
                 cfg_scale: Number = None, progress: Callable[..., Any] | None = None) -> AppResult:
        """Music for the uploaded ``video``; returns an AppResult. Empty values (None, "") mean: no prompt, a
        random seed, the whole video, the pipeline's own sampling settings; numbers may come as text (the page's
        fields are text). ``progress(fraction, desc=...)`` is told how far it got. A problem raises a
        TokmusicError whose message is meant for the page."""
        from .video import probe

        if video is None or not str(video):
            raise ConfigError("upload a video first")
        video = Path(video)
        name = video.name
        prompt = prompt.strip() if isinstance(prompt, str) and prompt.strip() else None
        seed = _whole(seed, "seed")
        if seed is None:
            seed = random.randrange(_SEED_RANGE)
        seconds = _number(seconds, "seconds")
        sampling = {k: v for k, v in (("temperature", _number(temperature, "temperature")),
                                      ("top_k", _whole(top_k, "top-k")), ("top_p", _number(top_p, "top-p")),
                                      ("cfg_scale", _number(cfg_scale, "CFG scale"))) if v is not None}
        step = progress or (lambda *a, **k: None)

        step(0.0, desc="reading the video")
        try:
            info = probe(video)
        except TokmusicError as exc:
            raise type(exc)(_named(str(exc), video, name)) from None
        length = info.duration if seconds is None else min(seconds, info.duration)
        if length > self.max_seconds + 1e-6:
            raise ConfigError(
                f"{name} is {info.duration:.1f} s long; this page scores at most {self.max_seconds:g} s. Set "
                f"'Seconds' to {self.max_seconds:g} or less to score the start of it, or run "
                f"`tokmusic generate {name} -o out.mp4` for the whole video")

        pipe = self.pipeline
        self._prune()
        job = self.workdir / "results" / uuid.uuid4().hex[:12]
        job.mkdir(parents=True)
        stem = _safe_stem(name)
        result = AppResult(video=job / f"{stem}-with-music.mp4", wav=job / f"{stem}-music.wav",
                           spectrogram=job / f"{stem}-spectrogram.png", seed=seed, duration=0.0,
                           sample_rate=pipe.sample_rate)
        step(0.05, desc="writing music")
        try:
            music = pipe.generate(video, prompt, seed=seed, seconds=seconds, progress=True, **sampling)
            step(0.9, desc="putting the music into the video")
            music.save(result.wav)
            music.mux(video, result.video)
            spectrogram_png(music.waveform, music.sample_rate, result.spectrogram)
        except TokmusicError as exc:
            shutil.rmtree(job, ignore_errors=True)
            raise type(exc)(_named(str(exc), video, name)) from None
        except Exception as exc:  # noqa: BLE001 — shown on the page; the server goes on
            shutil.rmtree(job, ignore_errors=True)
            raise GenerationError(f"generating music for {name} failed ({type(exc).__name__}: "
                                  f"{(str(exc).splitlines() or [''])[0][:300]})") from exc
        result.duration = music.duration
        step(1.0, desc="done")
        return result

    def _prune(self) -> None:
        """Delete results older than RESULT_TTL: a server that runs for days does not fill the disk."""
        results = self.workdir / "results"
        if not results.is_dir():
            return
        now = time.time()
        for job in results.iterdir():
            try:
                if now - job.stat().st_mtime > RESULT_TTL:
                    shutil.rmtree(job, ignore_errors=True)
            except OSError:
                pass

    # -- the page ----------------------------------------------------------------------------------------------
    def build(self):
        """The page, as a ``gradio.Blocks`` (not launched)."""
        gr = require_gradio()
        app = self

        def on_generate(video, prompt, seed, seconds, temperature, top_k, top_p, cfg_scale,
                        progress=gr.Progress(track_tqdm=True)):
            try:
                result = app.generate(video, prompt, seed, seconds, temperature, top_k, top_p, cfg_scale,
                                      progress=progress)
            except TokmusicError as exc:
                raise gr.Error(str(exc), title="tokmusic", print_exception=False) from None
            return (str(result.video), [str(result.video), str(result.wav)], str(result.spectrogram), result.info)

        ttl = int(RESULT_TTL)  # gradio's copies of uploads and results: deleted after as long as ours
        with gr.Blocks(title="tokmusic", analytics_enabled=False, delete_cache=(ttl, ttl)) as page:
            gr.Markdown("# tokmusic\nUpload a video and get music written for it, as a new soundtrack. "
                        f"Videos up to {self.max_seconds:g} s (or set *Seconds* to score the start of a longer one).")
            with gr.Row():
                with gr.Column():
                    video = gr.Video(label="Video", sources=["upload"], include_audio=True, height=300,
                                     elem_id="video-in")
                    prompt = gr.Textbox(label="Prompt (optional)", placeholder="e.g. slow melancholic piano",
                                        elem_id="prompt")
                    with gr.Row():
                        # text fields, not gr.Number: a number field cannot be empty (it shows 0), and empty
                        # means "random" / "the whole video" / "the pipeline's settings" here
                        seed = gr.Textbox(label="Seed", placeholder="random", elem_id="seed")
                        seconds = gr.Textbox(label="Seconds", placeholder="whole video", elem_id="seconds")
                    with gr.Accordion("Sampling (empty: the pipeline's settings)", open=False):
                        with gr.Row():
                            temperature = gr.Textbox(label="Temperature", placeholder="per stage")
                            top_k = gr.Textbox(label="Top-k", placeholder="per stage")
                        with gr.Row():
                            top_p = gr.Textbox(label="Top-p", placeholder="per stage")
                            cfg_scale = gr.Textbox(label="CFG scale", placeholder="per stage")
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column():
                    out_video = gr.Video(label="Video with the music", interactive=False, height=300,
                                         elem_id="video-out")
                    info = gr.Markdown(elem_id="info")
                    files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="files")
                    spectrogram = gr.Image(label="Spectrogram of the music", type="filepath", interactive=False,
                                           elem_id="spectrogram")
            button.click(on_generate, inputs=[video, prompt, seed, seconds, temperature, top_k, top_p, cfg_scale],
                         outputs=[out_video, files, spectrogram, info], api_name="generate", concurrency_limit=1)
        return page

    def close(self) -> None:
        """Delete the temporary folder (if this app made it)."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class GenerationError(TokmusicError):
    """Generation failed for a reason that is not the input's (shown on the page with the cause)."""


def _number(value, what: str) -> float | None:
    """A field's number: None for an empty field; a number, or text holding one (the page's fields are text)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{what} must be a number, got {value.strip()!r}; leave it empty for the "
                              "default") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    return value


def _whole(value, what: str) -> int | None:
    number = _number(value, what)
    if number is None:
        return None
    if number != int(number):
        raise ConfigError(f"{what} must be a whole number, got {value!r}")
    return int(number)


def _named(message: str, path: Path, name: str) -> str:
    """``message`` with the upload's temporary path replaced by the file name the user knows."""
    for shown in sorted({str(path.resolve()), str(Path(os.path.abspath(path))), str(path)}, key=len, reverse=True):
        message = message.replace(shown, name)
    return message


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._") or "video"
    return stem[:80]


# A perceptually ordered dark-to-bright colour map (close to matplotlib's "magma"), anchors at even steps.
_COLOURS = np.array([(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122), (229, 80, 100),
                     (251, 135, 97), (254, 194, 135), (252, 253, 191)], dtype=np.float64)


def spectrogram_png(waveform: torch.Tensor, sample_rate: int, path: str | os.PathLike, *, height: int = 256,
                    width: int | None = None, floor_db: float = -80.0) -> Path:
    """Write a PNG of the log-magnitude spectrogram of ``waveform`` (``[channels, samples]``, mixed to mono),
    low frequencies at the bottom, with a time axis (seconds) and a frequency axis (kHz); atomically."""
    from PIL import Image, ImageDraw, ImageFont

    from .fileio import atomic_file

    mono = waveform.detach().float().cpu().reshape(-1, waveform.shape[-1]).mean(0)
    duration = mono.numel() / sample_rate
    n_fft = 1024 if sample_rate > 24000 else 512
    if mono.numel() < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - mono.numel()))
    hop = max(1, n_fft // 4)
    spec = torch.stft(mono, n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-10))
    db = (db - db.max()).clamp_min(floor_db).numpy()  # [freqs, frames], 0 dB = the loudest bin
    level = (db - floor_db) / -floor_db  # 0..1
    steps = np.linspace(0.0, 1.0, len(_COLOURS))
    rgb = np.stack([np.interp(level, steps, _COLOURS[:, c]) for c in range(3)], -1)[::-1].astype(np.uint8)
    width = width or int(np.clip(duration * 120, 480, 1200))
    picture = Image.fromarray(rgb, "RGB").resize((width, height), Image.Resampling.BILINEAR)

    left, bottom, top, right = 48, 28, 30, 12  # room at the top: a page may lay its label over the picture
    canvas = Image.new("RGB", (left + width + right, top + height + bottom), (255, 255, 255))
    canvas.paste(picture, (left, top))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12) if hasattr(ImageFont, "load_default") else None
    ink = (60, 60, 60)
    tick = _nice_step(duration, 8)
    t = 0.0
    while t <= duration + 1e-9:
        x = left + round(t / max(duration, 1e-9) * (width - 1))
        draw.line([(x, top + height), (x, top + height + 4)], fill=ink)
        draw.text((x, top + height + 6), f"{t:g} s", fill=ink, font=font, anchor="ma")
        t += tick
    nyquist = sample_rate / 2000  # kHz
    for k in range(5):
        f = nyquist * k / 4
        y = top + height - 1 - round(k / 4 * (height - 1))
        draw.line([(left - 4, y), (left, y)], fill=ink)
        draw.text((left - 6, y), f"{f:.3g}k", fill=ink, font=font, anchor="rm")
    path = Path(path)
    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def _nice_step(span: float, most: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving at most ``most`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / most
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power


def serve(pipeline=None, *, host: str = "127.0.0.1", port: int | None = None,
          max_seconds: float = DEFAULT_MAX_SECONDS, ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None) -> int:
    """Run the page until Ctrl-C, SIGTERM or ``stop`` is set; returns 0. The pipeline is loaded first, so a bad
    one fails before the page opens. ``port`` None: 7860, or the next free one. ``ready(url)`` is called once it
    listens (default: print the address). The temporary folder is deleted when it stops."""
    require_gradio()
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise ConfigError(f"port must be a number in 1..65535, got {port!r}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = MusicApp(pipeline, max_seconds=max_seconds)
    page, old_temp = None, None
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        app.pipeline  # noqa: B018 — load now: a bad --pipeline is an error before the page opens
        old_temp = os.environ.get("GRADIO_TEMP_DIR")
        os.environ["GRADIO_TEMP_DIR"] = str(app.workdir / "uploads")  # gradio's uploads and copies, ours to delete
        page = app.build()
        try:
            page.queue(default_concurrency_limit=1).launch(
                server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, inbrowser=False,
                share=False, show_error=True, allowed_paths=[str(app.workdir)], mcp_server=False, ssr_mode=False)
        except OSError as exc:
            where = f"port {port}" if port else "a port from 7860 up"
            raise ConfigError(f"cannot listen on {host}, {where} ({exc}); choose another with --port or "
                              "--host") from None
        url = page.local_url or f"http://{host}:{page.server_port}/"
        (ready or (lambda u: print(f"tokmusic: the page is at {u} (Ctrl-C stops it)", flush=True)))(url)
        if previous is not None:
            signal.signal(signal.SIGTERM, _raise_interrupt)
        stop = stop or threading.Event()
        while not stop.wait(0.5):
            pass
        return 0
    except KeyboardInterrupt:
        print("tokmusic: stopped", file=sys.stderr)
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if page is not None:
            page.close()
        if old_temp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old_temp
        app.close()


def _raise_interrupt(signum, frame):  # SIGTERM stops the server the way Ctrl-C does: cleanly
    raise KeyboardInterrupt


__all__ = ["AppResult", "DEFAULT_MAX_SECONDS", "GenerationError", "MusicApp", "require_gradio", "serve",
           "spectrogram_png"]
