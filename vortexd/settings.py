"""Daemon and renderer settings: a TOML file, overridden by `VORTEX_*` environment variables."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

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
    warp_backend: str = "mesh"
    warp_chunk_frames: Annotated[int, Field(ge=1, le=1080)] = 48
    """Frames rendered per warp call: large enough to amortise Python overhead, small enough
    that progress and cancellation stay responsive (48 frames = 2 s of video)."""
    default_voice: str = "en-us"
    verify: bool = True

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first so an operator can override one key of a shipped config file.
        return env_settings, init_settings


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from a TOML file (if given), then `overrides`, with the environment on top."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(tomllib.loads(path.read_text(encoding="utf-8")))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
