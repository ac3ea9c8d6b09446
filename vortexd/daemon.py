"""`vortexd serve`: start-up → load → warm up → READY → serve → drain on SIGTERM → exit.

The daemon only starts, serves and stops. Every slot belongs to the slot engine (engine.py),
which runs their stages through the one slot runner; the control socket is a thin adapter over
the engine (ops.py). On SIGTERM the engine drains: it waits for every slot in flight, queued
stage jobs included, within `drain_timeout_s`, and leaves anything still unfinished journaled
for the next start.
"""

from __future__ import annotations

import asyncio
import os
import sys
import signal
import time

import structlog

from stages.types import FRAME_SIZE_PX
from vortexd import abandonable, pipeline
from vortexd.backends import BackendUnavailable
from vortexd.clock import Clock, MonotonicClock
from vortexd.engine import SlotEngine
from vortexd.events import EventBus
from vortexd.instance_lock import AlreadyRunning, InstanceLock, acquire_instance_lock
from vortexd.journal import Journal
from vortexd.metrics import Metrics, MetricsOptions
from vortexd.on_air import OnAir, channel_dir
from vortexd.regions import create_arena, model_region_budgets
from vortexd.scheduler import Scheduler, SchedulerOptions
from vortexd.sdnotify import Notifier, watchdog_interval_s
from vortexd.settings import Settings
from vortexd.slot_runner import SlotRunner
from vortexd.tasks import TaskManager

log = structlog.get_logger("vortexd")

STAGE_METRICS = ("prepare", "image", "warp_prepare", "tts", "motion", "warp", "encode", "verify", "remux", "finish")

EXIT_ALREADY_RUNNING = 2
"""Exit status of a second daemon on a locked state folder or a live socket (a usage error, as
bad settings are)."""


class StartupError(RuntimeError):
    """The daemon cannot start (arena does not fit, journal unreadable, socket in use, …)."""


class SocketInUse(RuntimeError):
    """Another process answers on the configured control socket."""


class Daemon:
    """One vortexd process: owns the arena, the journal, the engine and the control socket."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or MonotonicClock()
        self.tasks = TaskManager()
        self.events = EventBus()
        self.notifier = Notifier()
        self.metrics = Metrics(MetricsOptions(stages=STAGE_METRICS, version=pipeline.versions()["vortex"]))
        self.backends = pipeline.Backends(settings)
        self.spool_dir = settings.journal_path.parent / "spool"
        """Accepted recipes' input files, by sha256 (see spool.py)."""
        self.phase = "starting"
        self.started_monotonic_s = time.monotonic()
        self.loop_lag_s = 0.0
        self.metrics_port: int | None = None
        self.engine: SlotEngine | None = None
        self.journal: Journal | None = None
        self.arena = None
        self.slabs = None
        self.control = None
        self.http = None
        self.on_air = None
        self._instance_lock: InstanceLock | None = None
        self._stop_requested: asyncio.Event | None = None

    # ----- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then drain; returns the process exit status."""
        self._stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        try:
            # First of all: a second daemon on this state folder must not touch anything.
            self._instance_lock = acquire_instance_lock(self.settings.journal_path.parent)
            await asyncio.to_thread(_refuse_live_socket, self.settings.socket_path)
        except (AlreadyRunning, SocketInUse) as exc:
            print(f"error: {exc}", file=sys.stderr)
            log.error("startup_failed", error=str(exc))
            await self._close()
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

        settings = self.settings
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        settings.journal_path.parent.mkdir(parents=True, exist_ok=True)
        self.notifier.status("opening journal")
        self.journal = await asyncio.to_thread(Journal.open, settings.journal_path)
        await asyncio.to_thread(clean_stale_temp, settings.output_dir)
        self.notifier.status("allocating arena")
        await asyncio.to_thread(self._allocate_arena)
        self._serve_http()
        runner = SlotRunner(settings, self.backends, settings.output_dir)
        self.notifier.status("loading and warming up backends")
        await asyncio.to_thread(self._warm_up, runner)
        if settings.channel:
            self.notifier.status("rendering the channel's filler")
            self.on_air = await asyncio.to_thread(self._start_channel, runner)
        self.engine = SlotEngine(settings, self.clock, self.journal, self._scheduler(), self.events, self.metrics,
                                 self.spool_dir, runner, self.slabs, on_published=self._published)
        restored = self.engine.resume_from_journal()
        if restored:
            log.info("resumed_from_journal", slots=restored)
        self.engine.start(self.tasks)
        await self._listen()
        if self.on_air is not None:
            self.tasks.spawn(self.on_air.run(), "channel")
        self.tasks.spawn(self._watchdog_loop(), "watchdog")
        self.tasks.spawn(self._arena_gauges_loop(), "arena-gauges")

    def _scheduler(self) -> Scheduler:
        settings = self.settings
        grid = self.on_air.grid_t0_monotonic_s() if self.on_air is not None else None
        return Scheduler(SchedulerOptions(cadence_s=settings.cadence_s, margin_s=settings.margin_s,
                                          late_policy=settings.late_policy, slab_count=settings.slab_count,
                                          grid_t0_s=grid), self.clock)

    def _start_channel(self, runner: SlotRunner) -> OnAir:
        """Render the filler (the sample actor idling for one cadence) and open the channel."""
        seconds = min(self.settings.cadence_s, self.settings.max_slot_frames / 24)
        lease = self.slabs.lease_nowait("filler")
        try:
            filler_hls = runner.render_filler(lease.slab, seconds, self.settings.journal_path.parent / "filler")
        finally:
            lease.release()
        return OnAir(self.settings, filler_hls, self.metrics)

    async def _published(self, slot) -> None:
        if self.on_air is not None:
            await self.on_air.slot_published(slot.slot_id, slot.air_s, self.settings.output_dir / slot.slot_id)

    def _serve_http(self) -> None:
        """/metrics, and (operator_page) the page, the channel folder read-only and /api/status."""
        from vortexd.web import OperatorServer, on_loop

        settings = self.settings
        self.http = OperatorServer(channel_dir(settings), on_loop(asyncio.get_running_loop(), self._page_status),
                                   metrics_registry=self.metrics.registry, host=settings.metrics_host,
                                   port=settings.metrics_port, page=settings.operator_page)
        try:
            self.metrics_port = self.http.start()
        except OSError as exc:
            raise StartupError(f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: "
                               f"{exc.strerror or exc}") from exc

    def _page_status(self) -> dict:
        """The operator page's document (read on the event loop)."""
        from vortexd.ops import arena_status, pending_views
        from vortexd.web_status import page_status

        slots = pending_views(self.engine.snapshot()) if self.engine is not None else []
        channel = self.on_air.channel if self.on_air is not None else None
        return page_status(phase=self.phase, now_s=self.clock.now_s(), wall_now_s=time.time(), slot_views=slots,
                           arena=arena_status(self.arena) if self.arena is not None else {},
                           channel_stats=channel.stats() if channel is not None else None,
                           channel_window=channel.state.window if channel is not None else ())

    async def _listen(self) -> None:
        from vortexd.control.server import ControlServer, ControlServerOptions
        from vortexd.ops import ControlOps, DaemonFacts

        settings = self.settings
        facts = DaemonFacts(phase=lambda: self.phase, arena=self.arena, running_tasks=lambda: self.tasks.running,
                            loop_lag_s=lambda: self.loop_lag_s, metrics_port=lambda: self.metrics_port,
                            started_monotonic_s=self.started_monotonic_s, voices=self.backends.voices,
                            subscribe=self.events.subscribe, notify_status=self.notifier.status,
                            channel=self.on_air.status if self.on_air is not None else lambda: None)
        self.control = ControlServer(settings.socket_path, ControlOps(self.engine, facts).handle,
                                     mode=settings.socket_mode, group=settings.socket_group or None,
                                     options=ControlServerOptions.from_settings(settings))
        try:
            await self.control.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {settings.socket_path}: {exc}") from exc

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

    def _warm_up(self, runner: SlotRunner) -> None:
        """Load every backend and run each once through the slot runner, each model stage inside
        its region, so the first slot pays no first-call costs and every region's peak is
        measured before READY."""
        from vram import StageMemoryExceeded

        started = time.perf_counter()
        lease = self.slabs.lease_nowait("warm-up")
        try:
            runner.warm_up(lease.slab)
        except StageMemoryExceeded as exc:
            raise StartupError(f"a model stage does not fit its arena region (arena_budgets_mib.{exc.region}): "
                               f"{exc}\n{self._memory_tables(exc)}") from exc
        except BackendUnavailable as exc:
            raise StartupError(str(exc)) from exc
        finally:
            lease.release()
        over = self.arena.over_budget()
        if over:
            raise StartupError(f"model stage(s) over their region after warm-up: {', '.join(over)}\n"
                               f"{self._memory_tables()}")
        log.info("warmed_up", seconds=round(time.perf_counter() - started, 3), stages=self.arena.stage_table())

    def _memory_tables(self, refused=None) -> str:
        """What each stage measured in its region (and what a refused one asked for), then the
        arena against the device."""
        return f"{self.arena.stage_table(refused)}\n{self.arena.budget_table()}"

    async def drain_and_stop(self) -> None:
        """Stop taking work, let the engine finish its slots in flight within the bound, shut down."""
        self.phase = "draining"
        self.notifier.stopping()
        if self.engine is not None:
            await self.engine.stop(self.settings.drain_timeout_s)
        await self._close()

    async def _close(self) -> None:
        if self.control is not None:
            await self.control.close()
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
        if self.http is not None:
            self.http.close()
        if self._instance_lock is not None:
            self._instance_lock.release()
        log.info("stopped")

    # ----- health --------------------------------------------------------------------------

    async def _watchdog_loop(self) -> None:
        """Ping systemd's watchdog from the loop itself and measure how late the loop wakes."""
        interval_s = watchdog_interval_s() or 1.0
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval_s)
            self.loop_lag_s = max(0.0, time.monotonic() - before - interval_s)
            self.notifier.watchdog()

    async def _arena_gauges_loop(self) -> None:
        """The arena's regions (budget, use, measured peak) into the metrics, once a second."""
        while True:
            peaks = self.arena.peaks()
            for region, usage in self.arena.usage().items():
                self.metrics.set_arena_region(region, usage.budget_bytes, usage.used_bytes, peaks.get(region))
            await asyncio.sleep(1.0)


def _refuse_live_socket(path) -> None:
    """AlreadyRunning when another process answers on the control socket `path` (a second daemon
    with its own state folder but the same socket): said before any warm-up, not after."""
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError, OSError):
        return  # nobody there (a stale socket file is replaced when we listen)
    finally:
        probe.close()
    raise SocketInUse(f"another process serves the control socket {path}; give this daemon its own "
                         "socket_path")


def serve(settings: Settings) -> int:
    """Run the daemon on uvloop until it is stopped; returns the exit status."""
    import uvloop

    from vortexd.logs import configure_logging

    configure_logging(settings.log_level)
    status = uvloop.run(Daemon(settings).run())
    if abandonable.running():
        # A submit's input check (a long clip being tracked) is still in its thread, in native
        # code that cannot be interrupted: everything is closed and journaled, so leave now
        # rather than wait for it or let the interpreter's teardown race it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
