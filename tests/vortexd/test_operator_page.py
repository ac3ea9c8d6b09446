"""Browser test: headless Debian Chromium opens the operator page and plays the live channel.

Two "slots" are encoded here with PyAV's HLS muxer (64×64 H.264 + AAC, 2 s fMP4 segments, each slot
its own init segment and timestamps from zero). The channel playlist starts with slot A and grows
while the page plays: slot B's segments are appended after a DISCONTINUITY, each file written then
renamed, the playlist replaced atomically, as the daemon's channel does. Chromium is driven over
its DevTools protocol on a pipe (--remote-debugging-pipe: no port, no websocket library).
"""

from __future__ import annotations

import fractions
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from vortexd.web import OperatorServer

CHROMIUM = Path("/usr/bin/chromium")
FPS, SEGMENT_S, SLOT_S = 24, 2, 6
SHADE = {"a": 40, "b": 200}  # grey levels the two slots' pictures are made of, told apart on screen
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


def encode_slot(folder: Path, name: str) -> list[tuple[float, str]]:
    """One slot as PyAV's HLS muxer writes it: `<name>-init.mp4` and 2 s `<name>-N.m4s`
    segments (keyframe at each start); returns [(duration, file)] from its own playlist."""
    out = av.open(str(folder / f"{name}.m3u8"), "w", format="hls", options={
        "hls_time": str(SEGMENT_S), "hls_segment_type": "fmp4", "hls_playlist_type": "vod",
        "hls_fmp4_init_filename": f"{name}-init.mp4", "hls_segment_filename": str(folder / f"{name}-%d.m4s")})
    gop = str(FPS * SEGMENT_S)
    video = out.add_stream("libx264", rate=FPS, options={"g": gop, "keyint_min": gop, "sc_threshold": "0",
                                                         "preset": "ultrafast"})
    video.width = video.height = 64
    video.pix_fmt = "yuv420p"
    audio = out.add_stream("aac", rate=48000, layout="mono")
    for i in range(SLOT_S * FPS):
        picture = np.full((64, 64, 3), SHADE[name], np.uint8)
        picture[:, i % 64] = 255  # a moving bar: frames differ, so the decoder has work to show
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
        out.mux(video.encode(frame))
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(SLOT_S * 48000) / 48000)).astype(np.float32)
    for start in range(0, tone.size, 1024):
        frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, start
        out.mux(audio.encode(frame))
    out.mux(video.encode())
    out.mux(audio.encode())
    out.close()
    lines = (folder / f"{name}.m3u8").read_text().splitlines()
    return [(float(line.split(":")[1].rstrip(",")), lines[i + 1])
            for i, line in enumerate(lines) if line.startswith("#EXTINF:")]


class LiveChannel:
    """A channel folder whose EVENT playlist grows segment by segment, as the daemon airs slots."""

    def __init__(self, media: Path, channel: Path, slots: dict[str, list[tuple[float, str]]]) -> None:
        self.media, self.channel, self.slots = media, channel, slots
        self.entries: list[str] = []
        self.on_air: str | None = None

    def _publish(self, name: str) -> None:
        # Written under a hidden name, then renamed: a reader never sees half a file.
        shutil.copyfile(self.media / name, self.channel / f".{name}.tmp")
        os.replace(self.channel / f".{name}.tmp", self.channel / name)

    def air(self, slot: str, count: int, first: int = 0) -> None:
        """Append `count` segments of `slot` from its `first`; a slot's first segment starts it
        (discontinuity, its air time, its init segment)."""
        if first == 0:
            self._publish(f"{slot}-init.mp4")
            if self.entries:
                self.entries.append("#EXT-X-DISCONTINUITY")
            self.entries += [f"#EXT-X-PROGRAM-DATE-TIME:{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime())}",
                             f'#EXT-X-MAP:URI="{slot}-init.mp4"']
            self.on_air = slot
        for duration, name in self.slots[slot][first:first + count]:
            self._publish(name)
            self.entries += [f"#EXTINF:{duration:.6f},", name]
        head = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{SEGMENT_S}", "#EXT-X-MEDIA-SEQUENCE:0",
                "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-INDEPENDENT-SEGMENTS"]
        (self.channel / ".live.m3u8.tmp").write_text("\n".join(head + self.entries) + "\n")
        os.replace(self.channel / ".live.m3u8.tmp", self.channel / "live.m3u8")

    def status(self) -> dict:
        """What the daemon's status source would say about this channel."""
        return {"phase": "serving",
                "on_air": {"slot_id": f"slot-{self.on_air}", "state": "published", "air_in_s": -1.0},
                "next": {"slot_id": "slot-c", "state": "warping", "air_in_s": 40.0, "deadline_slack_s": 9.5},
                "slots": [{"slot_id": "slot-c", "state": "warping", "running_stage": "warp", "air_in_s": 40.0,
                           "deadline_in_s": 38.0, "deadline_slack_s": 9.5}],
                "arena": {"slab0": {"kind": "slab", "budget_bytes": 37748736, "used_bytes": 37748736}},
                "misses": [{"slot_id": "slot-x", "air_in_s": -90.0, "reason": "deadline", "filler": True}],
                "fillers_aired": 1}


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


@pytest.fixture
def channel(tmp_path: Path):
    """Slot A aired, the server up over the channel folder, and the channel object to grow."""
    media, folder = tmp_path / "media", tmp_path / "out" / "channel"
    media.mkdir()
    folder.mkdir(parents=True)
    live = LiveChannel(media, folder, {name: encode_slot(media, name) for name in ("a", "b")})
    live.air("a", 3)
    server = OperatorServer(folder, live.status)
    server.start()
    yield live, server
    server.close()


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
def test_the_page_plays_the_live_channel_across_a_slot_boundary(channel, tmp_path):
    live, server = channel
    browser = DevTools(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        session = open_page(browser, f"http://127.0.0.1:{server.port}/")
        boundary_s = sum(duration for duration, _ in live.slots["a"])
        pending = [(1.0, 0), (2.5, 1), (4.0, 2)]  # slot B's segments: (seconds after load, index)
        loaded, samples = time.monotonic(), []
        deadline = loaded + 45.0
        while time.monotonic() < deadline:
            while pending and time.monotonic() - loaded >= pending[0][0]:
                live.air("b", 1, first=pending.pop(0)[1])
            samples.append(json.loads(browser.evaluate(PAGE_STATE_JS, session)))
            last = samples[-1]
            if not pending and last["t"] >= boundary_s + 1.5 and last["luma"] is not None:
                break
            time.sleep(0.5)
        started = next((s for s in samples if s["t"] > 0 and s["luma"] is not None), None)
        assert started is not None, f"the video never played: {samples[-1]}; {browser.errors()}"
        last = samples[-1]
        assert last["t"] - started["t"] >= 3.0 and started["t"] < boundary_s < last["t"], (started, last)
        assert 1 in last["ccs"] and 0 in last["ccs"], last  # both slots' fragments were played
        assert started["luma"] < 110 < last["luma"], (started, last)  # slot A's picture, then slot B's
        assert last["frames"] >= (last["t"] - started["t"]) * FPS * 0.8 and not last["paused"], last
        assert last["playerErrors"] == [] and browser.errors() == []
        assert last["statusUpdates"] >= 3 and last["onAir"] == "slot-b" and last["arenaRows"] == 1, last
        assert "slot-x" in last["misses"] and "filler aired" in last["misses"], last
    finally:
        browser.close()
