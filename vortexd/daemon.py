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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from stages.errors import StageInputError
from stages.types import FRAME_SIZE_PX
from vortexd import pipeline
from vortexd.actor import Cancel, Job, StageActor, Stop
from vortexd.clock import Clock, MonotonicClock
from vortexd.events import EventBus
from vortexd.instance_lock import AlreadyRunning, InstanceLock, acquire_instance_lock
from vortexd.journal import Journal, SlotFinished
from vortexd.metrics import Metrics, MetricsOptions
from vortexd.recipe import Recipe
from vortexd.scheduler import Action, Scheduler, SchedulerOptions
from vortexd.sdnotify import Notifier, watchdog_interval_s
from vortexd.settings import Settings
from vortexd.slot_state import SlotState
from vortexd.slot_work import SlotWork
from vortexd.tasks import TaskManager

log = structlog.get_logger("vortexd")

STAGE_METRICS = ("prepare", "image", "warp_prepare", "tts", "motion", "warp", "verify", "encode", "finish")
WARM_UP_TEXT = "Warm up."
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
        self.work: dict[str, SlotWork] = {}
        self.phase = "starting"
        self.metrics_port: int | None = None
        self.spool_dir = settings.journal_path.parent / "spool"
        """Accepted recipes' input files, by sha256 (see spool.py)."""
        self.started_monotonic_s = time.monotonic()
        self.loop_lag_s = 0.0
        self._misses_reported = 0
        self._wake: asyncio.Event | None = None
        self._stop_requested: asyncio.Event | None = None
        self.journal: Journal | None = None
        self.arena = None
        self.slabs = None
        self.backends = pipeline.Backends(settings)
        self.actors: dict[str, StageActor] = {}
        self.control = None
        self._instance_lock: InstanceLock | None = None
        self._journal_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")

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
        self._resume_from_journal()
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
        from vram import Arena, ArenaDoesNotFit, ArenaPlan, MIB, SlabPool, slab_region_bytes

        settings = self.settings
        budgets = {name: mib * MIB for name, mib in settings.arena_budgets_mib.items()}
        budgets["video_slabs"] = slab_region_bytes(settings.slab_count, settings.max_slot_frames,
                                                   FRAME_SIZE_PX, FRAME_SIZE_PX)
        plan = ArenaPlan.from_budgets(budgets)
        try:
            self.arena = Arena.create(plan, settings.device, prefault=settings.arena_prefault)
        except ArenaDoesNotFit as exc:
            raise StartupError(f"the arena plan does not fit on {settings.device}:\n{exc}") from exc
        self.slabs = SlabPool(self.arena, count=settings.slab_count, frames=settings.max_slot_frames,
                              height=FRAME_SIZE_PX, width=FRAME_SIZE_PX)
        log.info("arena_allocated", device=settings.device, table=self.arena.budget_table())

    def _warm_up(self) -> None:
        """Load every backend and run each once, so the first slot pays no first-call costs."""
        from stages.image import load_actor
        from stages.motion import plan_motion

        started = time.perf_counter()
        self.backends.flux  # loads Flux if configured: missing weights stop the start-up here
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
        log.info("warmed_up", seconds=round(time.perf_counter() - started, 3))

    def _resume_from_journal(self) -> None:
        """Put every accepted-but-unfinished slot back on the timeline; skip what was published."""
        now = self.clock.now_s()
        restored = 0
        for record in self.journal.unfinished():
            if (self.settings.output_dir / record.slot_id / "manifest.json").is_file():
                # Published, but the process died before journaling it: never publish twice.
                self.journal.set_state(record.slot_id, "published", result={"recovered": True})
                continue
            recipe = Recipe.model_validate(record.recipe)
            self.journal.begin_attempt(record.slot_id)  # `vortexctl slots` shows it as RESTARTS
            self.work[record.slot_id] = SlotWork(recipe=recipe, seq=record.seq)
            restored += 1
            self.scheduler.restore(record.slot_id, record.seq, "queued",
                                   air_s=now + self.settings.cadence_s * restored)
        if restored:
            self.scheduler.reanchor(now)
            log.info("resumed_from_journal", slots=restored)

    async def drain_and_stop(self) -> None:
        """Stop taking work, let the slot in flight finish within the bound, then shut down."""
        self.phase = "draining"
        self.notifier.stopping()
        self.scheduler.drain()
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while self._stage_running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._stage_running():
            # Out of time: interrupt; the journal keeps the slot unfinished, a restart resumes it.
            log.warning("drain_timeout", running=self._stage_running())
            for slot_id in list(self.work):
                for actor in self.actors.values():
                    actor.control(Cancel(slot_id))
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
        for work in self.work.values():
            work.release_slab()
        await asyncio.to_thread(self.backends.close)
        self._journal_thread.shutdown(wait=True)
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
                for action in self.scheduler.next_actions(now):
                    await self._dispatch(action)
                self._refresh_gauges()
                wake_at = self.scheduler.next_wakeup_s(now)
            except Exception:  # supervision: a bad decision must not stop every future slot
                log.exception("scheduling_failed")
            timeout_s = _LOOP_TICK_S if wake_at is None else min(_LOOP_TICK_S, max(0.0, wake_at - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout_s)

    async def _dispatch(self, action: Action) -> None:
        slot_id = action.slot_id
        if action.kind in ("prepare", "warp", "finish"):
            await self.record_state(slot_id, {"prepare": SlotState.PREPARING, "warp": SlotState.WARPING,
                                              "finish": SlotState.FINISHING}[action.kind])
            self.actors[action.kind].send(Job(slot_id))
            return
        # mark_late / abandon: the slot will not air on time.
        if action.kind == "abandon":
            for actor in self.actors.values():
                actor.control(Cancel(slot_id))
        view = self.scheduler.slot(slot_id)
        if view.state is SlotState.LATE:
            await self.record_state(slot_id, SlotState.LATE, error=action.reason)
            self.metrics.count_slot("late")
            if action.kind == "mark_late":
                self.forget(slot_id)
        log.warning("slot_late", slot_id=slot_id, action=action.kind, reason=action.reason)

    async def record_state(self, slot_id: str, state: SlotState, error: str | None = None,
                           result: dict[str, Any] | None = None) -> None:
        """Journal a slot's new state, then tell subscribers (never the other way round).

        The write (an fsync) runs on the journal's own thread, never on the event loop; one
        thread, so the journal sees the transitions in the order they were decided.
        """
        write = functools.partial(self.journal.set_state, slot_id, state, error=error, result=result)
        try:
            await asyncio.get_running_loop().run_in_executor(self._journal_thread, write)
        except SlotFinished:
            return  # e.g. a cancelled slot's stage reporting back: the final state stands
        self.events.publish(slot_id, "state", state=state, error=error)

    def forget(self, slot_id: str) -> None:
        """Drop a finished slot's in-memory artefacts and give its slab back."""
        work = self.work.pop(slot_id, None)
        if work is not None:
            work.release_slab()

    def _refresh_gauges(self) -> None:
        snapshot = self.scheduler.snapshot()
        self.metrics.set_queue_depth(snapshot.queue_depth)
        # The scheduler counts a miss when it sees the clock pass a deadline; mirror new ones.
        new_misses = snapshot.stats.missed_deadlines - self._misses_reported
        if new_misses > 0:
            self.metrics.count_deadline_misses(new_misses)
            self._misses_reported = snapshot.stats.missed_deadlines
        for region, usage in self.arena.usage().items():
            self.metrics.set_arena_region(region, usage.budget_bytes, usage.used_bytes)

    async def _stage_done(self, stage: str, job: Job, result: Any, error: BaseException | None) -> None:
        """Every stage outcome lands here: scheduler, journal, metrics, events, in that order."""
        slot_id = job.slot_id
        now = self.clock.now_s()
        message = None if error is None else (f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
        # A bad input (no face, unspeakable text) fails its slot as rejected: the operator's
        # deadline alerts are for the daemon's own failures, not for user errors.
        rejected = isinstance(error, StageInputError)
        view = self.scheduler.on_stage_done(slot_id, stage, error is None, now, error=message, input_error=rejected)
        work = self.work.get(slot_id)
        if view.stage_durations_s.get(stage) is not None:
            self.metrics.observe_stage(stage, view.stage_durations_s[stage])
        if view.state is SlotState.PUBLISHED or (view.published_s is not None and stage == "finish"):
            await self._on_published(slot_id, view, result or {}, work)
        elif view.state is SlotState.FAILED:
            log.error("slot_failed", slot_id=slot_id, stage=stage, error=message)
            await self.record_state(slot_id, SlotState.FAILED, error=message)
            self.metrics.count_slot("rejected" if rejected else "failed")
            self.forget(slot_id)
        elif view.state in (SlotState.LATE, SlotState.CANCELLED):
            self.forget(slot_id)
        else:
            await self.record_state(slot_id, view.state)
        self.wake()

    async def _on_published(self, slot_id: str, view, result: dict[str, Any], work: SlotWork | None) -> None:
        slack_s = view.deadline_slack_s if view.deadline_slack_s is not None else 0.0
        result = {**result, "deadline_slack_s": round(slack_s, 3), "late": view.late}
        await self.record_state(slot_id, SlotState.PUBLISHED, result=result)
        end_to_end_s = time.monotonic() - work.accepted_monotonic_s if work is not None else None
        self.metrics.observe_published(end_to_end_s, slack_s, late=view.late)
        log.info("slot_published", slot_id=slot_id, slack_s=round(slack_s, 3), late=view.late)
        self.forget(slot_id)

    # ----- stage handlers (blocking work in threads) ---------------------------------------

    def _progress(self, slot_id: str):
        loop = asyncio.get_running_loop()

        def report(stage: str, done: int, total: int) -> None:
            loop.call_soon_threadsafe(functools.partial(self.events.publish, slot_id, "progress",
                                                        stage=stage, done=done, total=total))
        return report

    async def _prepare(self, job: Job) -> dict[str, Any]:
        work = self.work[job.slot_id]
        prepared = await asyncio.to_thread(
            pipeline.prepare, work.recipe, self.settings, self.backends, work.clock,
            should_stop=lambda: self.actors["prepare"].is_cancelled(job.slot_id))
        work.actor, work.speech, work.plan, work.warnings = (prepared.actor, prepared.speech, prepared.plan,
                                                             prepared.warnings)
        for stage in ("image", "warp_prepare", "tts", "motion"):
            self.metrics.observe_stage(stage, work.clock.seconds[stage])
        return {}

    async def _warp(self, job: Job) -> dict[str, Any]:
        work = self.work[job.slot_id]
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
        work = self.work[job.slot_id]
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

