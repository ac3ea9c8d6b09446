"""Run model calls in worker processes, one single-thread onnxruntime session each.

Sentences are independent model calls, so a script's chunks are spread over n processes,
longest first (the last to finish is then a short one). Workers are plain subprocesses
(`python -m stages.tts.kokoro.worker_main`) speaking length-prefixed pickles over their
stdin/stdout, not multiprocessing children: they neither copy the parent's threads (as fork
would) nor re-import the parent's main script (as multiprocessing's spawn does, which breaks
scripts without a __main__ guard). Each worker loads the model once and keeps it. A worker that
dies (OOM killer, crash) is restarted and its request retried once.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import stages
from stages.tts.kokoro.assets import KokoroModelError
from stages.tts.kokoro.session import KokoroSession, RawChunk
from stages.tts.kokoro.frames import read_frame, write_frame

STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ChunkRequest:
    """One model call: symbol ids (no pads), (1, 256) style, speed."""

    token_ids: np.ndarray
    style: np.ndarray
    speed: float


class InProcessRunner:
    """Runs calls one after another on a session in this process (workers=0; tests, tools)."""

    def __init__(self, model_path: Path) -> None:
        self._session = KokoroSession(model_path)
        self._lock = threading.Lock()  # one session, one call at a time

    @property
    def workers(self) -> int:
        """Worker processes used (none)."""
        return 0

    def run(self, requests: Sequence[ChunkRequest]) -> list[RawChunk]:
        """Every request's output, in request order."""
        with self._lock:
            return [self._session.run(r.token_ids, r.style, r.speed) for r in requests]

    def close(self) -> None:
        """Nothing to stop: the session is freed with the runner."""


class WorkerDied(RuntimeError):
    """The worker process exited or closed its pipe."""


class _Worker:
    """One worker subprocess and its pipes."""

    def __init__(self, model_path: Path) -> None:
        env = dict(os.environ)
        # The child imports `stages` from wherever this process did, installed or not.
        root = str(Path(stages.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env["OMP_NUM_THREADS"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stages.tts.kokoro.worker_main", str(model_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        reply = read_frame(self.process.stdout)
        if reply is None or reply[0] != "ready":
            self.stop()
            detail = reply[1] if reply else f"exited with status {self.process.poll()}"
            raise KokoroModelError(f"Kokoro worker could not load {model_path}: {detail}", model_path)
        self.pid = int(reply[1])

    def call(self, request: ChunkRequest) -> RawChunk:
        """Send one chunk to the worker and wait for its audio; WorkerDied if the worker is gone."""
        try:
            write_frame(self.process.stdin, (request.token_ids, request.style, request.speed))
            reply = read_frame(self.process.stdout)
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise WorkerDied(f"Kokoro worker {self.pid} is gone: {exc}") from exc
        if reply is None:
            raise WorkerDied(f"Kokoro worker {self.pid} exited (status {self.process.poll()})")
        if reply[0] != "ok":
            raise RuntimeError(f"Kokoro worker {self.pid} failed: {reply[1]}")
        return reply[1]

    def stop(self) -> None:
        """Close its stdin (it exits at end of input); kill it if it does not."""
        try:
            if self.process.stdin:
                self.process.stdin.close()
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            if self.process.stdout:
                self.process.stdout.close()


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()


class ProcessRunner:
    """Runs calls on `workers` subprocesses, each with its own single-thread session.

    Workers start on first use (or `start()`) and live until `close()`.
    """

    def __init__(self, model_path: Path, workers: int) -> None:
        if workers < 1:
            raise ValueError("a process runner needs at least one worker")
        self._model_path = Path(model_path)
        self._n = workers
        self._lock = threading.Lock()
        self._all: list[_Worker] = []
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kokoro-worker")
        # Stop the subprocesses when the runner is collected or the interpreter exits.
        self._finalizer = weakref.finalize(self, _stop_all, self._all)

    @property
    def workers(self) -> int:
        """Number of worker processes."""
        return self._n

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        with self._lock:
            return [w.pid for w in self._all]

    def start(self) -> None:
        """Start every worker and load its model now (in parallel), instead of on first use."""
        with self._lock:
            missing = self._n - len(self._all)
            if missing <= 0:
                return
            started = list(self._threads.map(lambda _: _Worker(self._model_path), range(missing)))
            self._all.extend(started)
        for worker in started:
            self._idle.put(worker)

    def _replace(self, dead: _Worker) -> _Worker:
        dead.stop()
        fresh = _Worker(self._model_path)
        with self._lock:
            self._all[self._all.index(dead)] = fresh
        return fresh

    def _call(self, request: ChunkRequest) -> RawChunk:
        worker = self._idle.get()
        try:
            try:
                return worker.call(request)
            except WorkerDied:
                worker = self._replace(worker)
                return worker.call(request)
        finally:
            self._idle.put(worker)

    def run(self, requests: Sequence[ChunkRequest]) -> list[RawChunk]:
        """Every request's output, in request order; spread over the workers, longest first."""
        self.start()
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].token_ids))
        futures = {i: self._threads.submit(self._call, requests[i]) for i in order}
        return [futures[i].result() for i in range(len(requests))]

    def close(self) -> None:
        """Stop the workers (after the calls in flight)."""
        self._threads.shutdown(wait=True)
        self._finalizer()
