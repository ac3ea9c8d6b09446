"""Daemon and renderer settings: a TOML file, overridden by `VORTEX_*` environment variables."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can configure. Field names are the TOML keys.

    Environment variables win over the file: `VORTEX_OUTPUT_DIR=/srv/slots`, lists as JSON
    (`VORTEX_ALLOWED_ROOTS='["/srv/actors"]'`).
    """

    model_config = SettingsConfigDict(env_prefix="VORTEX_", extra="forbid", frozen=True)

    output_dir: Path = Path("/var/lib/vortexd/slots")
    allowed_roots: list[Path] = []
    """Folders a recipe may reference files in, besides the recipe's own folder."""
    actor_library_dir: Path | None = None
    """Portraits the library image backend picks from when a recipe gives a prompt."""
    image_backend: Literal["library", "flux"] = "library"
    """What a recipe's actor.prompt becomes: a library pick, or a Flux-schnell portrait."""
    flux_weights_dir: Path | None = None
    """A local FLUX.1-schnell folder in the diffusers layout (model_index.json, transformer/, …)."""
    flux_steps: Annotated[int, Field(ge=1, le=8)] = 4
    """Sampling steps; schnell is distilled for 1–4."""
    flux_quantization: Literal["none", "fp8", "nf4"] = "none"
    """Transformer weights in fp8 (layerwise casting) or nf4 (bitsandbytes, CUDA) to fit the arena."""
    image_fallback: Literal["refuse", "library"] = "refuse"
    """When Flux cannot load: refuse to start, or say so once and use the actor library."""
    warp_backend: str = "mesh"
    liveportrait_weights_dir: Path | None = None
    """Root of the official LivePortrait release (pretrained_weights/liveportrait/... below it)."""
    liveportrait_chunk_frames: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"
    """Frames per W+G batch; "auto": the largest whose step, measured at start-up, fits its
    arena region (arena_budgets_mib.liveportrait; at most 8 on the CPU)."""
    liveportrait_model_params: dict[str, Any] = {}
    """The networks' sizes as models.yaml's `model_params` gives them, for weights of another size
    than the released ones (e.g. the tiny random weights tests run the daemon with); {}: released."""
    liveportrait_compile: bool = True
    """CUDA: torch.compile W and G at warm-up (inside the CUDA graph)."""
    liveportrait_compile_cache_dir: Path | None = None
    """The compiler's cache (TORCHINDUCTOR_CACHE_DIR), kept so a restart skips the compile."""
    warp_fallback: Literal["refuse", "mesh"] = "refuse"
    """When the configured warp backend cannot load (e.g. weights missing): refuse to start, or
    say so once and fall back to the mesh warp."""
    warp_chunk_frames: Annotated[int, Field(ge=1, le=1080)] = 48
    """Frames rendered per warp call: large enough to amortise Python overhead, small enough
    that progress and cancellation stay responsive (48 frames = 2 s of video)."""
    default_voice: str = "en-us"
    verify: bool = True
    verify_backend: Literal["objective", "clip"] = "objective"
    """"clip" adds the open_clip ensemble's identity and caption scores to the objective checks."""
    clip_weights_dir: Path | None = None
    """One folder per model (open_clip_model.safetensors or open_clip_pytorch_model.bin inside),
    plus open_clip's bpe_simple_vocab_16e6.txt.gz."""
    clip_models: list[str] = ["ViT-B-32", "ViT-L-14"]
    clip_min_identity: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.8
    """Lowest frame-to-portrait CLIP similarity a slot may have (the worst sampled frame)."""
    clip_min_caption: Annotated[float, Field(ge=-1.0, le=1.0)] = -1.0
    """Lowest mean frame-to-caption similarity; -1 reports it without failing slots."""
    verify_fallback: Literal["refuse", "objective"] = "refuse"
    """When CLIP cannot load: refuse to start, or say so once and verify objectively."""
    kokoro_workers: Annotated[int, Field(ge=0, le=16)] = 2
    """Kokoro synthesis processes (one onnxruntime thread each); 0 runs it in-process."""
    kokoro_model_dir: Path | None = None
    """An operator's Kokoro folder (ONNX model + voices); None uses the PyPI int8 model."""
    kokoro_cache_dir: Path | None = None
    """Where the PyPI model parts are assembled (default $VORTEX_KOKORO_CACHE or ~/.cache/vortex/kokoro)."""
    kokoro_warm_up: bool = True
    """Daemon: start the Kokoro workers at start-up so the first Kokoro slot pays nothing extra."""

    # --- daemon (vortexd serve) ---
    socket_path: Path = Path("/run/vortexd/control.sock")
    socket_mode: Annotated[int, Field(ge=0, le=0o777)] = 0o660
    socket_group: str | None = "vortex"
    control_idle_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """A control connection that sends no request for this long is closed (health still gets
    through a full house: see control_first_line_timeout_s)."""
    control_max_connections: Annotated[int, Field(ge=1, le=4096)] = 64
    """Control connections served at once, from all clients together."""
    control_max_connections_per_peer: Annotated[int, Field(ge=1, le=4096)] = 16
    """Control connections served at once for one client process (its uid and pid), so one
    client cannot take the house; its extra connections are answered `busy` naming this limit."""
    control_first_line_timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    """A connection over either limit has this long to send its first line: `health` is
    answered whatever the flood, anything else gets `busy`."""
    journal_path: Path = Path("/var/lib/vortexd/journal.sqlite3")
    """Its folder is the daemon's state folder: one daemon per folder (vortexd.lock), the spool."""
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9400
    """0 picks a free port (tests); the daemon logs and reports the one it bound."""
    operator_page: bool = True
    """Serve the operator page (`/`), the channel folder read-only (`/channel/`) and `/api/status`
    beside `/metrics` on the metrics port; false: `/metrics` only (e.g. when metrics_host is
    opened to a Prometheus on another host and the page should stay private)."""
    channel: bool = True
    """Play the published slots out as one live HLS channel (`<channel_dir>/live.m3u8`), with a
    filler (the sample actor idling, rendered at start-up) where a slot is not ready."""
    channel_dir: Path | None = None
    """The channel's folder; None: `<output_dir>/channel`. Point nginx or a CDN origin at it."""
    channel_window_slots: Annotated[int, Field(ge=1, le=100)] = 3
    """Airings (slots or fillers) the live playlist lists; older ones leave it, and their files
    are deleted after a grace period (RFC 8216's minimum)."""
    device: str = "cpu"
    arena_budgets_mib: dict[str, Annotated[int, Field(ge=0)]] = {}
    """Model stages' regions in MiB (liveportrait, flux, clip; default 3584, 10240, 1280): each
    stage's weights and working memory, capped; a stage that cannot fit refuses to start. The two
    video slabs are added from `slab_count` and `max_slot_frames`."""
    arena_prefault: bool = True
    """Touch every arena page at start-up so an out-of-memory shows then, not mid-slot."""
    slab_count: Annotated[int, Field(ge=1, le=8)] = 2
    max_slot_frames: Annotated[int, Field(ge=1, le=14_400)] = 1080
    cadence_s: Annotated[float, Field(gt=0)] = 45.0
    margin_s: Annotated[float, Field(ge=0)] = 2.0
    late_policy: Literal["skip", "publish_late"] = "skip"
    drain_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """SIGTERM: finish the slot in flight within this bound, else journal it for the restart."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    native_chatter: Literal["drop", "keep"] = "drop"
    """MediaPipe / TensorFlow Lite info and warning lines on stderr: drop them, or keep them
    (for debugging those libraries). Their errors always come through."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Where settings come from, strongest first (pydantic-settings' hook)."""
        # Environment first so an operator can override one key of a shipped config file.
        return env_settings, init_settings


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from a TOML file (if given), then `overrides`, with the environment on top."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(tomllib.loads(path.read_text(encoding="utf-8")))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
