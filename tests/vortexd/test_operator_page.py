"""Browser test: headless Debian Chromium opens the operator page and plays the live channel.

The channel is the daemon's own `vortexd.channel.Channel`, airing real fMP4 HLS slots made with
PyAV's HLS muxer (tests.support.hls_media: 64×64 H.264 + AAC, 2 s segments, each slot its own init
segment and timestamps from zero, one flat grey level each): slot A, then slot B, then — nothing
being ready — the filler, 6 s apart in wall-clock time. Its live playlist grows as each segment's air
time comes, with a DISCONTINUITY at each slot boundary. Chromium is driven over its DevTools
protocol on a pipe (--remote-debugging-pipe: no port, no websocket library).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.hls_media import make_hls_slot
from vortexd.channel import Channel, Schedule
from vortexd.web import OperatorServer
from vortexd.web_status import page_status

CHROMIUM = Path("/usr/bin/chromium")
FPS, SLOT_S = 24, 6
LEVELS = {"a": 40, "b": 200, "filler": 120}  # grey levels that tell the three apart on screen
TONES = {"a": 440.0, "b": 880.0, "filler": 220.0}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage", "--mute-audio",
         "--remote-debugging-pipe"]
PLACE_FDS = ("import os, sys; a, b = os.dup(int(sys.argv[1])), os.dup(int(sys.argv[2])); "
             "os.dup2(a, 3); os.dup2(b, 4); os.set_inheritable(3, True); os.set_inheritable(4, True); "
             "os.closerange(5, 1024); os.execv(sys.argv[3], sys.argv[3:])")
PAGE_STATE_JS = """JSON.stringify((() => {
  const v = document.querySelector('video'), op = window.vortexOperator;
  let luma = null;
  if (v.readyState >= 2) {  // the picture on screen now, averaged: which slot is showing
    const c = document.createElement('canvas'); c.width = c.height = 16;
    const g = c.getContext('2d'); g.drawImage(v, 0, 0, 16, 16);
    const px = g.getImageData(0, 0, 16, 16).data; let sum = 0;
    for (let i = 0; i < px.length; i += 4) sum += px[i + 1];
    luma = sum / (px.length / 4);
  }
  return {t: v.currentTime, paused: v.paused, frames: v.getVideoPlaybackQuality().totalVideoFrames,
          luma, ccs: op.fragments.map(f => f.cc), playerErrors: op.playerErrors,
          statusUpdates: op.statusUpdates, onAir: document.querySelector('#on-air .slot').textContent,
          arenaRows: document.querySelectorAll('#arena tbody tr').length,
          misses: document.querySelector('#misses tbody').textContent};
})())"""

ROOT = Path(__file__).resolve().parents[2]
needs_chromium = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                    reason="Debian Chromium (/usr/bin/chromium) is not installed: apt-get install chromium")


class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe: JSON messages ending in NUL,
    written to its fd 3 and read from its fd 4."""

    def __init__(self, user_data_dir: Path, log_path: Path) -> None:
        to_read, self._to = os.pipe()
        self._from, from_write = os.pipe()
        # Chromium wants the pipe on fds 3 and 4 exactly; dash cannot redirect fds above 9, so a tiny
        # Python exec moves them (through fresh copies, in case a pipe already sits on 3 or 4).
        command = [sys.executable, "-c", PLACE_FDS, str(to_read), str(from_write), str(CHROMIUM), *FLAGS,
                   f"--user-data-dir={user_data_dir}", "about:blank"]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, pass_fds=(to_read, from_write), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True)
        os.close(to_read)
        os.close(from_write)
        self._ids, self._answers, self.events = 0, {}, []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from, 1 << 16):
            buffer += chunk
            while b"\0" in buffer:
                raw, _, buffer = buffer.partition(b"\0")
                message = json.loads(raw)
                with self._cond:
                    (self._answers.__setitem__(message["id"], message) if "id" in message
                     else self.events.append(message))
                    self._cond.notify_all()

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout_s: float = 15.0) -> dict:
        """Send one command and wait for its answer; a protocol error raises."""
        with self._cond:
            self._ids += 1
            ident = self._ids
        message = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: ident in self._answers, timeout=timeout_s):
                raise TimeoutError(f"no answer to {method} in {timeout_s} s")
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def wait_event(self, method: str, timeout_s: float = 15.0) -> dict:
        """The first event named `method` (already seen or still to come)."""
        def seen():
            return next((e for e in self.events if e.get("method") == method), None)
        with self._cond:
            if not self._cond.wait_for(seen, timeout=timeout_s):
                raise TimeoutError(f"no {method} in {timeout_s} s")
            return seen()

    def evaluate(self, expression: str, session: str):
        """The value of a page expression; an exception in the page raises here."""
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"page script failed: {answer['exceptionDetails']}")
        return answer["result"]["value"]

    def errors(self) -> list[str]:
        """Every console error, uncaught exception and browser-logged error seen so far."""
        found = []
        with self._cond:
            events = list(self.events)
        for event in events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
        return found

    def close(self) -> None:
        """Close the browser, killing its process group if it does not go."""
        try:
            self.call("Browser.close", timeout_s=5)
            self.process.wait(timeout=10)
        except (TimeoutError, RuntimeError, OSError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        finally:
            os.close(self._to)


def status_of(channel: Channel, lock: threading.Lock) -> dict:
    """What the daemon's status source says (the page's /api/status), from its channel."""
    with lock:
        now = time.time()
        stats, window = channel.stats(now), channel.state.window
    return page_status(phase="serving", slot_views=[], now_s=time.monotonic(), wall_now_s=now,
                       arena={"slab0": {"kind": "slab", "budget_bytes": 37748736, "used_bytes": 37748736}},
                       channel_stats=stats, channel_window=window)


@pytest.fixture
def on_air(tmp_path: Path):
    """A channel airing slot A, slot B, then (nothing ready) the filler, SLOT_S s apart from now,
    ticked every 0.1 s; the server up over its folder."""
    slots = {name: make_hls_slot(tmp_path / "slots" / name / "hls", level=LEVELS[name], tone_hz=TONES[name],
                                 seconds=SLOT_S) for name in LEVELS}
    channel = Channel(tmp_path / "out" / "channel", slots["filler"], Schedule(time.time() + 0.5, SLOT_S))
    channel.slot_ready(0, "slot-a", slots["a"])
    channel.slot_ready(1, "slot-b", slots["b"])
    lock, stop = threading.Lock(), threading.Event()

    def tick() -> None:
        while not stop.wait(0.1):
            with lock:
                channel.tick()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    server = OperatorServer(channel.dir, lambda: status_of(channel, lock))
    server.start()
    try:
        deadline = time.monotonic() + 10
        while not channel.playlist_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield channel, server
    finally:
        server.close()
        stop.set()
        ticker.join(timeout=5)


def open_page(browser: DevTools, url: str) -> str:
    """A tab with console and log capture on, then navigated to `url`; returns its session."""
    target = next(t for t in browser.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
    session = browser.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
    for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
        browser.call(domain, session=session)
    browser.call("Page.navigate", {"url": url}, session=session)
    browser.wait_event("Page.loadEventFired")
    return session


def test_ci_installs_chromium_with_readmes_one_prerequisite_line_before_the_tests():
    """CI cannot skip the browser test: `.ci/run` installs Chromium, with the line README shows,
    before it runs README's test command."""
    readme = (ROOT / "README.md").read_text().splitlines()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    prerequisite = [line for line in readme if "apt-get install" in line and "chromium" in line]
    assert len(prerequisite) == 1 and prerequisite[0] in ci
    tests = next(i for i, line in enumerate(ci) if line.startswith("python3 -m venv") and "pytest" in line)
    assert ci.index(prerequisite[0]) < tests


@needs_chromium
def test_the_page_plays_the_live_channel_across_slot_boundaries(on_air, tmp_path):
    channel, server = on_air
    browser = DevTools(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        session = open_page(browser, f"http://127.0.0.1:{server.port}/")
        samples, deadline = [], time.monotonic() + 60.0
        while time.monotonic() < deadline:
            samples.append(json.loads(browser.evaluate(PAGE_STATE_JS, session)))
            if samples[-1]["t"] >= 2 * SLOT_S + 1.5 and samples[-1]["luma"] is not None:
                break
            time.sleep(0.5)
        shown = [s for s in samples if s["t"] > 0 and s["luma"] is not None]
        assert shown, f"the video never played: {samples[-1]}; {browser.errors()}"
        first, last = shown[0], shown[-1]
        # The picture on screen is each airing's in turn: slot A, slot B, then the filler.
        for name, (start, end) in {"a": (0, SLOT_S), "b": (SLOT_S, 2 * SLOT_S), "filler": (2 * SLOT_S, 99)}.items():
            seen = [s["luma"] for s in shown if start + 0.5 < s["t"] < end - 0.2]
            assert seen and all(abs(luma - LEVELS[name]) < 20 for luma in seen), (name, seen, shown)
        assert last["t"] - first["t"] >= 3.0 and first["t"] < SLOT_S < last["t"], (first, last)
        assert {0, 1, 2} <= set(last["ccs"]), last  # the three airings' fragments, across discontinuities
        assert last["frames"] >= (last["t"] - first["t"]) * FPS * 0.8 and not last["paused"], last
        assert last["playerErrors"] == [] and browser.errors() == []
        assert last["statusUpdates"] >= 3 and last["onAir"] == "filler" and last["arenaRows"] == 1, last
        assert "air index 2" in last["misses"] and "filler aired" in last["misses"], last
        assert channel.stats().fillers_aired == 1
    finally:
        browser.close()
