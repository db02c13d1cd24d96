"""`tokmusic app` in a real browser: upload a video, press Generate, get the video back with music.

Needs Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`), selenium and gradio
(`pip install -e ".[app,browser]"`). Deselected by default; run with

    pytest -m browser tests/test_app_browser.py

With TOKMUSIC_APP_SCREENSHOT=docs/app.png the screenshot of the finished page is also copied there.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tokmusic.audio import load_audio
from tokmusic.testing import tiny_pipeline
from tokmusic.video import probe

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


def colourful_clip(path, seconds=2.0, fps=12, size=(180, 320)):
    """A clip a person can look at: a sky gradient over a meadow, a sun moving across it. Returns the path."""
    import av
    import numpy as np

    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    sky = np.stack([60 + 100 * y / height, 120 + 80 * y / height, 230 - 30 * y / height], -1)
    ground = y > height * 0.7
    sky[ground] = (70, 150, 60)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for i in range(int(seconds * fps)):
            t = i / (seconds * fps)
            cx, cy = width * (0.15 + 0.7 * t), height * (0.45 - 0.2 * np.sin(np.pi * t))
            frame = sky.copy()
            frame[(x - cx) ** 2 + (y - cy) ** 2 < (height * 0.12) ** 2] = (255, 210, 60)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`tokmusic app` with the tiny pipeline, on a free port of localhost; yields its address."""
    pytest.importorskip("gradio")
    tmp = tmp_path_factory.mktemp("app-server")
    tiny_pipeline(seed=0).save_pretrained(tmp / "tiny")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "TMPDIR": str(tmp)}
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tokmusic.cli", "app", "--pipeline", str(tmp / "tiny"),
                             "--port", str(port), "--max-seconds", "10"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp / "server.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the page did not come up: " + (tmp / "server.log").read_text()
                time.sleep(0.5)
        yield url, tmp
    finally:
        proc.terminate()  # SIGTERM: the server stops cleanly and deletes its temporary folder
        try:
            proc.wait(30)
        finally:
            log.close()
    assert proc.returncode == 0, (tmp / "server.log").read_text()
    assert not list(tmp.glob("tokmusic-app-*")), "the temporary folder was not deleted"


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100",
                 "--mute-audio"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.tokmusic_tmp = tmp_path  # where _wait leaves a screenshot when the page does not do what it should
    yield driver
    driver.quit()


def _wait(what, condition, timeout, driver):
    """``condition()``'s first true value; on a timeout, a screenshot of the page goes beside the test's files."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 — the page is still changing under us
            value = None
        if value:
            return value
        time.sleep(0.25)
    driver.save_screenshot(str(Path(driver.tokmusic_tmp) / "timeout.png"))
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_upload_generate_and_download(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, _ = server
    clip = colourful_clip(tmp_path / "sunrise.mp4", 2.0)
    browser.get(url)
    upload = _wait("the upload field", lambda: browser.find_element(By.CSS_SELECTOR, "#video-in input[type=file]"),
                   60, browser)
    upload.send_keys(str(clip))
    _wait("the uploaded video's preview", lambda: browser.find_element(By.CSS_SELECTOR, "#video-in video"), 60,
          browser)
    browser.find_element(By.CSS_SELECTOR, "#prompt textarea, #prompt input").send_keys("calm strings")
    browser.find_element(By.CSS_SELECTOR, "#seed textarea, #seed input").send_keys("7")
    browser.find_element(By.CSS_SELECTOR, "#generate").click()

    def links():
        found = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#files a[href]")]
        return found if len(found) == 2 else None

    hrefs = _wait("the download links", links, 180, browser)
    _wait("the result in the player",
          lambda: browser.find_element(By.CSS_SELECTOR, "#video-out video").get_attribute("src"), 30, browser)
    _wait("the spectrogram", lambda: browser.find_element(By.CSS_SELECTOR, "#spectrogram img").get_attribute("src"),
          30, browser)
    assert "seed 7" in browser.find_element(By.ID, "info").text
    # the player can play it: the browser has read its duration
    duration = _wait("the player to load the video", lambda: browser.execute_script(
        "const v = document.querySelector('#video-out video'); return v && v.readyState > 0 && v.duration;"), 30,
        browser)
    assert abs(duration - probe(clip).duration) < 0.2

    mp4 = [h for h in hrefs if h.split("?")[0].endswith(".mp4")]
    wav = [h for h in hrefs if h.split("?")[0].endswith(".wav")]
    assert len(mp4) == 1 and len(wav) == 1, hrefs
    for href, name in ((mp4[0], "download.mp4"), (wav[0], "download.wav")):
        with urllib.request.urlopen(href, timeout=30) as response, open(tmp_path / name, "wb") as f:
            shutil.copyfileobj(response, f)
    info = probe(tmp_path / "download.mp4")
    assert info.has_audio and abs(info.duration - probe(clip).duration) < 0.1
    audio = load_audio(tmp_path / "download.mp4", 16000)
    assert abs(audio.shape[-1] / 16000 - probe(clip).duration) < 0.1 and audio.abs().max() > 0
    assert abs(load_audio(tmp_path / "download.wav", 16000).shape[-1] / 16000 - 2.0) < 0.05

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the whole page in the screenshot
                            {"width": 1400, "height": min(int(height) + 20, 2400), "deviceScaleFactor": 1,
                             "mobile": False})
    time.sleep(1.5)  # let the spectrogram and the player finish drawing
    shot = tmp_path / "app.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("TOKMUSIC_APP_SCREENSHOT"):
        target = ROOT / os.environ["TOKMUSIC_APP_SCREENSHOT"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_a_bad_upload_is_a_message_and_the_page_goes_on(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, _ = server
    bad = tmp_path / "holiday.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    browser.get(url)
    upload = _wait("the upload field", lambda: browser.find_element(By.CSS_SELECTOR, "#video-in input[type=file]"),
                   60, browser)
    upload.send_keys(str(bad))
    time.sleep(2.0)
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    _wait("the error message", lambda: "holiday.mp4: not a video file" in browser.find_element(By.TAG_NAME,
                                                                                                 "body").text,
          60, browser)
    with urllib.request.urlopen(url, timeout=10) as response:  # still serving
        assert response.status == 200
