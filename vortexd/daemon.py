"""`vortexd serve`: start-up → load → warm up → READY → serve → drain on SIGTERM → exit.

The event loop only decides and records; every model call runs in a worker thread through a
stage actor. Three actors mirror the scheduler's stages: prepare (image + TTS + motion plan),
warp, and finish (verify + encode + publish). The scheduler says what may run; the journal
records each transition before anyone is told about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
import time
from typing import Any

import structlog

from stages.types import FRAME_SIZE_PX
from vortexd import pipeline
from vortexd.actor import Cancel, Job, StageActor, Stop
from vortexd.clock import Clock, MonotonicClock
from vortexd.engine import SlotEngine, StageWorkers
from vortexd.events import EventBus
from vortexd.instance_lock import AlreadyRunning, InstanceLock, acquire_instance_lock
from vortexd.journal import Journal
from vortexd.metrics import Metrics, MetricsOptions
from vortexd.regions import create_arena, model_region_budgets
from vortexd.scheduler import Scheduler, SchedulerOptions
from vortexd.sdnotify import Notifier, watchdog_interval_s
from vortexd.settings import Settings
from vortexd.tasks import TaskManager

log = structlog.get_logger("vortexd")

STAGE_METRICS = ("prepare", "image", "warp_prepare", "tts", "motion", "warp", "verify", "encode", "finish")
WARM_UP_TEXT = "Warm up."
WARM_UP_PROMPT = "a person looking at the camera"
_LOOP_TICK_S = 1.0
"""Longest the scheduling loop sleeps without an event: deadlines are checked at least this often."""


EXIT_ALREADY_RUNNING = 2
"""Exit status of a second daemon on a locked state folder (a usage error, as bad settings are)."""


class StartupError(RuntimeError):
    """The daemon cannot start (arena does not fit, journal unreadable, socket in use, …)."""


class Daemon:
    """One vortexd process: owns the arena, the journal, the actors and the control socket."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or MonotonicClock()
        self.tasks = TaskManager()
        self.events = EventBus()
        self.notifier = Notifier()
        self.metrics = Metrics(MetricsOptions(stages=STAGE_METRICS, version=pipeline.versions()["vortex"]))
        self.scheduler = Scheduler(SchedulerOptions(
            cadence_s=settings.cadence_s, margin_s=settings.margin_s, late_policy=settings.late_policy,
            slab_count=settings.slab_count), self.clock)
        self.engine: SlotEngine | None = None
        self.phase = "starting"
        self.metrics_port: int | None = None
        self.spool_dir = settings.journal_path.parent / "spool"
        """Accepted recipes' input files, by sha256 (see spool.py)."""
        self.started_monotonic_s = time.monotonic()
        self.loop_lag_s = 0.0
        self._wake: asyncio.Event | None = None
        self._stop_requested: asyncio.Event | None = None
        self.journal: Journal | None = None
        self.arena = None
        self.slabs = None
        self.backends = pipeline.Backends(settings)
        self.actors: dict[str, StageActor] = {}
        self.control = None
        self._instance_lock: InstanceLock | None = None

    # ----- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then drain; returns the process exit status."""
        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        try:
            # First of all: a second daemon on this state folder must not touch anything.
            self._instance_lock = acquire_instance_lock(self.settings.journal_path.parent)
        except AlreadyRunning as exc:
            print(f"error: {exc}", file=sys.stderr)
            log.error("startup_failed", error=str(exc))
            return EXIT_ALREADY_RUNNING
        try:
            await self.start()
        except StartupError as exc:
            log.error("startup_failed", error=str(exc))
            await self._close()
            return 1
        self.notifier.ready(f"serving; socket {self.settings.socket_path}")
        log.info("ready", socket=str(self.settings.socket_path), metrics_port=self.metrics_port,
                 startup_s=round(time.monotonic() - self.started_monotonic_s, 3))
        self.phase = "serving"
        self.engine.accepting = True
        await self._stop_requested.wait()
        await self.drain_and_stop()
        return 0

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM)."""
        if self._stop_requested is not None and not self._stop_requested.is_set():
            log.info("stop_requested")
            self._stop_requested.set()

    async def start(self) -> None:
        """Open the journal, allocate the arena, load and warm up the backends, resume, listen."""
        from stages.encode.publish import clean_stale_temp
        from vortexd.control.server import ControlServer, ControlServerOptions
        from vortexd.ops import ControlOps

        settings = self.settings
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        settings.journal_path.parent.mkdir(parents=True, exist_ok=True)
        self.notifier.status("opening journal")
        self.journal = await asyncio.to_thread(Journal.open, settings.journal_path)
        self.engine = SlotEngine(settings, self.clock, self.journal, self.scheduler, self.events, self.metrics,
                                 self.spool_dir, StageWorkers(send=self._send_job, cancel=self._cancel_job), self.wake)
        await asyncio.to_thread(clean_stale_temp, settings.output_dir)
        self.notifier.status("allocating arena")
        await asyncio.to_thread(self._allocate_arena)
        try:
            self.metrics_port = self.metrics.serve_http(settings.metrics_host, settings.metrics_port)
        except OSError as exc:
            raise StartupError(f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: "
                               f"{exc.strerror or exc}") from exc
        self.notifier.status("loading and warming up backends")
        try:
            await asyncio.to_thread(self._warm_up)
        except pipeline.BackendUnavailable as exc:
            raise StartupError(str(exc)) from exc
        restored = self.engine.resume_from_journal()
        if restored:
            log.info("resumed_from_journal", slots=restored)
        for stage, handler in (("prepare", self._prepare), ("warp", self._warp), ("finish", self._finish)):
            actor = StageActor(stage, handler, functools.partial(self._stage_done, stage))
            self.actors[stage] = actor
            self.tasks.spawn(actor.run(), f"actor:{stage}")
        self.control = ControlServer(settings.socket_path, ControlOps(self).handle, mode=settings.socket_mode,
                                     group=settings.socket_group or None,
                                     options=ControlServerOptions(idle_timeout_s=settings.control_idle_timeout_s))
        try:
            await self.control.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {settings.socket_path}: {exc}") from exc
        self.tasks.spawn(self._schedule_loop(), "scheduler")
        self.tasks.spawn(self._watchdog_loop(), "watchdog")

    def _allocate_arena(self) -> None:
        from vram import ArenaDoesNotFit, SlabPool

        settings = self.settings
        unused = model_region_budgets(settings)[1]
        if unused:
            log.info("arena_regions_not_reserved", regions=unused, reason="no configured stage uses them")
        try:
            self.arena = create_arena(settings)
        except ArenaDoesNotFit as exc:
            raise StartupError(f"the arena plan does not fit on {settings.device}:\n{exc}") from exc
        self.slabs = SlabPool(self.arena, count=settings.slab_count, frames=settings.max_slot_frames,
                              height=FRAME_SIZE_PX, width=FRAME_SIZE_PX)
        self.backends.arena = self.arena
        log.info("arena_allocated", device=settings.device, table=self.arena.budget_table())

    def _warm_up(self) -> None:
        """Load every backend and run each once, each model stage inside its region, so the first
        slot pays no first-call costs and every region's peak is measured before READY."""
        from vram import StageMemoryExceeded

        started = time.perf_counter()
        try:
            self._warm_up_stages()
        except StageMemoryExceeded as exc:
            raise StartupError(f"a model stage does not fit its arena region (arena_budgets_mib.{exc.region}): "
                               f"{exc}\n{self._memory_tables(exc)}") from exc
        over = self.arena.over_budget()
        if over:
            raise StartupError(f"model stage(s) over their region after warm-up: {', '.join(over)}\n"
                               f"{self._memory_tables()}")
        log.info("warmed_up", seconds=round(time.perf_counter() - started, 3), stages=self.arena.stage_table())

    def _warm_up_stages(self) -> None:
        from stages.image import load_actor
        from stages.motion import plan_motion

        flux = self.backends.flux  # loads Flux if configured: missing weights stop the start-up here
        if flux is not None:
            flux.generate(WARM_UP_PROMPT, seed=0)
        actor = load_actor()
        speech = self.backends.tts_for(self.settings.default_voice).synthesize(
            WARM_UP_TEXT, voice=self.settings.default_voice)
        if self.settings.kokoro_warm_up:
            self.backends.kokoro.warm_up()
        plan = plan_motion(speech, "neutral", seed=0, n_frames=self.settings.warp_chunk_frames, fps=24)
        lease = self.slabs.lease_nowait("warm-up")
        try:
            pipeline.warp_frames(self.backends, actor, plan, lease.slab)
            judge = self.backends.clip if self.settings.verify else None
            if judge is not None:  # loads the ensemble now: missing weights stop the start-up
                judge.score(lease.slab[: plan.n_frames], actor.image)
        finally:
            lease.release()

    def _memory_tables(self, refused=None) -> str:
        """What each stage measured in its region (and what a refused one asked for), then the
        arena against the device."""
        return f"{self.arena.stage_table(refused)}\n{self.arena.budget_table()}"

    async def drain_and_stop(self) -> None:
        """Stop taking work, let the slot in flight finish within the bound, then shut down."""
        self.phase = "draining"
        if self.engine is not None:
            self.engine.accepting = False
        self.notifier.stopping()
        self.scheduler.drain()
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while self._stage_running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._stage_running():
            # Out of time: interrupt; the journal keeps the slot unfinished, a restart resumes it.
            log.warning("drain_timeout", running=self._stage_running())
            for slot_id in self.engine.in_flight():
                self._cancel_job(slot_id, None)
        await self._close()

    def _stage_running(self) -> list[str]:
        return [f"{name}:{actor.current.slot_id}" for name, actor in self.actors.items() if actor.current]

    async def _close(self) -> None:
        if self.control is not None:
            await self.control.close()
        for actor in self.actors.values():
            actor.control(Stop())
        self.events.close()
        leftovers = await self.tasks.shutdown(timeout_s=5.0)
        if leftovers:
            log.warning("shutdown_leftovers", tasks=leftovers)
        if self.engine is not None:
            self.engine.close()
        await asyncio.to_thread(self.backends.close)
        if self.journal is not None:
            self.journal.close()
        if self.arena is not None:
            self.arena.close()
        self.metrics.close()
        if self._instance_lock is not None:
            self._instance_lock.release()
        log.info("stopped")

    # ----- scheduling ----------------------------------------------------------------------

    def wake(self) -> None:
        """Ask the scheduling loop to look again now."""
        if self._wake is not None:
            self._wake.set()

    async def _schedule_loop(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now_s()
            wake_at = None
            try:
                wake_at = await self.engine.tick()
                peaks = self.arena.peaks()
                for region, usage in self.arena.usage().items():
                    self.metrics.set_arena_region(region, usage.budget_bytes, usage.used_bytes, peaks.get(region))
            except Exception:  # supervision: a bad decision must not stop every future slot
                log.exception("scheduling_failed")
            timeout_s = _LOOP_TICK_S if wake_at is None else min(_LOOP_TICK_S, max(0.0, wake_at - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout_s)

    def _send_job(self, stage: str, slot_id: str) -> None:
        self.actors[stage].send(Job(slot_id))

    def _cancel_job(self, slot_id: str, stage: str | None) -> None:
        for name, actor in self.actors.items():
            if stage is None or name == stage:
                actor.control(Cancel(slot_id))

    async def _stage_done(self, stage: str, job: Job, result: Any, error: BaseException | None) -> None:
        await self.engine.stage_done(stage, job.slot_id, result, error)

    # ----- stage handlers (blocking work in threads) ---------------------------------------

    def _progress(self, slot_id: str):
        loop = asyncio.get_running_loop()

        def report(stage: str, done: int, total: int) -> None:
            loop.call_soon_threadsafe(functools.partial(self.events.publish, slot_id, "progress",
                                                        stage=stage, done=done, total=total))
        return report

    async def _prepare(self, job: Job) -> dict[str, Any]:
        work = self.engine.work(job.slot_id)
        prepared = await asyncio.to_thread(
            pipeline.prepare, work.recipe, self.settings, self.backends, work.clock,
            should_stop=lambda: self.actors["prepare"].is_cancelled(job.slot_id))
        work.actor, work.speech, work.plan, work.warnings = (prepared.actor, prepared.speech, prepared.plan,
                                                             prepared.warnings)
        for stage in ("image", "warp_prepare", "tts", "motion"):
            self.metrics.observe_stage(stage, work.clock.seconds[stage])
        return {}

    async def _warp(self, job: Job) -> dict[str, Any]:
        work = self.engine.work(job.slot_id)
        work.lease = await self.slabs.acquire(job.slot_id)
        progress = self._progress(job.slot_id)
        started = time.perf_counter()

        def warp():
            with work.clock.time("warp"):
                pipeline.warp_frames(self.backends, work.actor, work.plan, work.frames, progress,
                                     should_stop=lambda: self.actors["warp"].is_cancelled(job.slot_id))

        await asyncio.to_thread(warp)
        self.metrics.record_warp_throughput(work.plan.n_frames, time.perf_counter() - started)
        # Only LivePortrait renders in fp16; other backends have nothing to re-render.
        self.metrics.sync_fp32_rerenders(getattr(self.backends.warp, "fp32_rerenders", 0))
        return {}

    async def _finish(self, job: Job) -> dict[str, Any]:
        work = self.engine.work(job.slot_id)
        rendered = pipeline.Rendered(work.recipe, work.actor, work.speech, work.plan, work.frames, work.clock,
                                     work.warnings)
        published = await asyncio.to_thread(
            pipeline.finish, self.settings.output_dir, rendered, self.backends, self.settings.verify,
            should_stop=lambda: self.actors["finish"].is_cancelled(job.slot_id))
        work.release_slab()
        manifest = published.manifest
        for stage in ("verify", "encode"):
            if stage in work.clock.seconds:
                self.metrics.observe_stage(stage, work.clock.seconds[stage])
        offset = (manifest.get("verdict") or {}).get("av_offset_frames")
        if offset is not None:
            self.metrics.observe_lipsync_offset(offset)
        return {"slot_dir": str(published.path), "video": str(published.path / "video.mp4"),
                "stage_seconds": manifest["stage_seconds"],
                "verdict_passed": (manifest.get("verdict") or {}).get("passed")}

    # ----- health --------------------------------------------------------------------------

    async def _watchdog_loop(self) -> None:
        """Ping systemd's watchdog from the loop itself and measure how late the loop wakes."""
        interval_s = watchdog_interval_s() or 1.0
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval_s)
            self.loop_lag_s = max(0.0, time.monotonic() - before - interval_s)
            self.notifier.watchdog()


def serve(settings: Settings) -> int:
    """Run the daemon on uvloop until it is stopped; returns the exit status."""
    import uvloop

    from vortexd.logs import configure_logging

    configure_logging(settings.log_level)
    return uvloop.run(Daemon(settings).run())

