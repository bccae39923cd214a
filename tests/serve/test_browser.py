"""The live-transcription page at ``/`` (asr_adapt/serve/static/index.html).

The fast test checks that ``/`` serves the page. The slow one streams through it from a real
browser: headless Chromium with a fake microphone that plays a WAV written here
(``--use-fake-device-for-media-stream --use-file-for-fake-audio-capture=FILE``; Chromium
loops the file, which keeps the "microphone" busy for as long as the test listens), driven
over the Chrome DevTools Protocol (``--remote-debugging-port=0``; the port is read from
``DevToolsActivePort`` in the throw-away profile, the page's CDP WebSocket found with
``GET /json/list`` and spoken to with the ``websockets`` package). The test picks a locale
and a policy in the page's selects, clicks Start, waits until the page has sent about 3 s
of audio, clicks Stop and waits for the page to show the end of the session. The page
sends 16-bit PCM at the AudioContext's own rate (44.1 kHz here), so the server's resampling
is on the path too; one run captures with the page's AudioWorklet, the other with its
ScriptProcessor fallback (AudioWorkletNode hidden) and locale ``auto`` (language
identification, shown on the page).

That the page really streamed is checked on the server side: the session is counted as
finished in ``/v1/stream/metrics``, and the events the server sent for it (recorded by
wrapping the scheduler's ``open`` in this test, so each session's emit is seen) end with an
``end`` whose text is exactly what the page shows in ``#final-text``. The tiny random
Whisper of ``conftest.py`` says arbitrary tokens; only the equality matters.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from asr_adapt.serve import ServeConfig, create_app, serve_in_thread

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def server(engine):
    app = create_app(engine, ServeConfig())
    with serve_in_thread(app) as url:
        yield url, app


def test_page_is_served(server):
    url, _ = server
    r = httpx.get(url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "/v1/stream" in page and 'id="final-text"' in page
    # self-contained: nothing is loaded from elsewhere
    assert "src=\"http" not in page and "href=\"http" not in page and "@import" not in page


def fake_microphone(path: Path, seconds: float = 4.0, sr: int = 16000) -> Path:
    """Tones and a little noise as 16 kHz mono PCM16 (what Chromium's fake capture reads)."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(0.15 * np.sin(2 * np.pi * f * t) * (np.sin(np.pi * t * k) > 0) for k, f in enumerate((220, 440, 660), 1))
    x = x + 0.02 * np.random.default_rng(0).standard_normal(len(t))
    sf.write(path, np.clip(x, -1, 1).astype(np.float32), sr, subtype="PCM_16")
    return path


class DevTools:
    """The few Chrome DevTools Protocol calls the test needs, on one page target."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params) -> dict:
        mid = next(self.ids)
        await self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:  # events (no domain is enabled, so hardly any) are skipped
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def js(self, expression: str, gesture: bool = False):
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                            awaitPromise=True, userGesture=gesture)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while not (value := await self.js(expression)):
            if time.monotonic() > deadline:
                state = await self.js("JSON.stringify({live: window.asrLive, status: "
                                       "document.getElementById('status').textContent, error: "
                                       "document.getElementById('error').textContent})")
                raise AssertionError(f"timed out waiting for {what}: {state}")
            await asyncio.sleep(0.1)
        return value


def launch_chromium(tmp: Path, wav: Path, url: str) -> tuple[subprocess.Popen, int]:
    profile = tmp / "profile"
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # written afresh once chromium listens
    with open(tmp / "chromium.log", "wb") as log:
        proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "--autoplay-policy=no-user-gesture-required",
             "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-audio-capture={wav}", url],
            stdout=subprocess.DEVNULL, stderr=log)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"chromium did not start: {(tmp / 'chromium.log').read_text()[-2000:]}")
        time.sleep(0.05)
    return proc, int(port_file.read_text().split()[0])


async def drive_page(port: int, url: str, locale: str, policy: str, seconds: float, worklet: bool) -> dict:
    """Pick ``locale`` and ``policy``, stream ``seconds`` of microphone audio, stop; what the page shows.
    ``worklet=False`` hides AudioWorkletNode from the page, so it captures with its ScriptProcessor fallback."""
    import websockets

    async with httpx.AsyncClient() as client:
        for _ in range(100):
            pages = [t for t in (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
                     if t["type"] == "page" and t["url"].startswith(url)]
            if pages:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no page target for {url} in chromium")
    async with websockets.connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as ws:
        page = DevTools(ws)
        await page.wait_for("document.body && document.body.dataset.locales === 'loaded'", 20, "the locale list")
        options = await page.js("[...document.querySelectorAll('#locale option')].map(o => o.value)")
        await page.js(f"""(() => {{
            for (const [id, value] of [["locale", {json.dumps(locale)}], ["policy", {json.dumps(policy)}]]) {{
              const el = document.getElementById(id);
              el.value = value;
              el.dispatchEvent(new Event("change"));
            }}}})()""")
        if not worklet:
            await page.js("delete window.AudioWorkletNode")
        await page.js("document.getElementById('toggle').click()", gesture=True)
        await page.wait_for("window.asrLive.state === 'streaming'", 20, "the ready event")
        await page.wait_for(f"window.asrLive.sentSamples >= {seconds} * window.asrLive.sampleRate", 20 + seconds,
                            f"{seconds} s of audio sent")
        await page.js("document.getElementById('toggle').click()", gesture=True)
        await page.wait_for("['ended', 'failed'].includes(window.asrLive.state)", 30, "the end of the session")
        shown = await page.js("""({live: window.asrLive, final: document.getElementById('final-text').textContent,
            partial: document.getElementById('partial-text').textContent,
            error: document.getElementById('error').textContent,
            language: document.getElementById('language').textContent,
            status: document.getElementById('status').textContent})""")
        return {**shown, "options": options}


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (make sysdeps installs it where apt is usable)")
@pytest.mark.parametrize(("locale", "policy", "worklet"), [("el-GR", "alignatt", True),
                                                           ("auto", "local-agreement", False)])
def test_page_streams_microphone_from_chromium(server, tmp_path, monkeypatch, locale, policy, worklet):
    url, app = server
    scheduler = app.state.scheduler
    sent: dict[str, list[dict]] = {}  # session id -> the events the server emitted for it
    settings = {}
    open_session = scheduler.open

    def recording_open(session_settings, emit):
        events: list[dict] = []

        def record(event: dict) -> None:
            events.append(event)
            emit(event)

        s = open_session(session_settings, record)
        sent[s.id], settings[s.id] = events, session_settings
        return s

    monkeypatch.setattr(scheduler, "open", recording_open)
    before = httpx.get(url + "/v1/stream/metrics").json()
    wav = fake_microphone(tmp_path / "mic.wav")
    proc, port = launch_chromium(tmp_path, wav, url + "/")
    try:
        shown = asyncio.run(drive_page(port, url + "/", locale, policy, seconds=3.0, worklet=worklet))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    after = httpx.get(url + "/v1/stream/metrics").json()

    assert shown["options"] == ["auto", *app.state.engine.locales, "__other__"]
    live = shown["live"]
    assert live["state"] == "ended", shown
    assert live["capture"] == ("worklet" if worklet else "script-processor")
    assert (live["closeCode"], shown["error"], shown["partial"]) == (1000, "", ""), shown
    assert after["finished"] == before["finished"] + 1 and after["errors"] == before["errors"], after
    assert after["active_sessions"] == 0
    events = sent[live["session"]]
    assert settings[live["session"]].locale == (None if locale == "auto" else locale)
    assert settings[live["session"]].policy == policy
    identified = [e for e in events if e["type"] == "language"]
    if locale == "auto":  # the page names the language the server identified
        assert len(identified) == 1 and identified[0]["locale"] in shown["language"], (identified, shown)
    else:
        assert not identified and shown["language"] == ""
    end = events[-1]
    assert end["type"] == "end" and [e["type"] for e in events].count("end") == 1
    assert shown["final"] == end["text"]
    # ~3 s of PCM at the context's rate (44.1 kHz here) reached the model as 16 kHz audio: the
    # server's count of audio matches what the page sent at the rate it announced
    assert end["audio_s"] >= 2.9 and end["steps"] >= 3, end
    assert end["audio_s"] == pytest.approx(live["sentSamples"] / live["sampleRate"], abs=0.01), (end, live)
    assert end["words"] == sum(len(e["words"]) for e in events if e["type"] == "final")
