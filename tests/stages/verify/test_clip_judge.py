"""The CLIP judge: identity of sampled frames to the portrait, caption similarity, ensemble mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the CLIP networks need torch")
pytest.importorskip("safetensors", reason="open_clip_model.safetensors needs safetensors")

from stages.errors import StageInputError  # noqa: E402
from stages.verify.clip.checkpoints import save_clip  # noqa: E402
from stages.verify.clip.judge import (  # noqa: E402
    DEFAULT_CAPTION,
    ClipJudge,
    caption_for,
    clip_problems,
    sample_frame_indices,
)
from tests.support.clip import (  # noqa: E402
    random_clip_model,
    small_config,
    write_random_clip_folder,
    write_small_merges,
)
from stages.verify.clip.tokenizer import MERGES_FILE_NAME  # noqa: E402


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two random models ("one", "two") and the merges file, in the layout from_folder reads."""
    return write_random_clip_folder(tmp_path_factory.mktemp("clip"), ("one", "two"))


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """The sample portrait, 512² RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def test_caption_comes_from_the_actor_prompt() -> None:
    """No prompt gives the generic caption; a prompt becomes "a photo of …" unless it already is one."""
    assert caption_for(None) == caption_for("") == DEFAULT_CAPTION
    assert caption_for("  a news  anchor ") == "a photo of a news anchor"
    assert caption_for("A photo of an astronaut") == "A photo of an astronaut"


def test_sampled_frames_span_the_slot() -> None:
    """A 45 s slot is scored on 24 evenly spaced frames ≤ 48 apart, first and last included; one frame on itself."""
    picks = sample_frame_indices(1080)
    assert len(picks) == 24 and picks[0] == 0 and picks[-1] == 1079
    assert np.all(np.diff(picks) > 0) and np.diff(picks).max() <= 48
    assert sample_frame_indices(1).tolist() == [0]
    with pytest.raises(StageInputError, match="frames"):
        sample_frame_indices(0)


def test_unchanged_frames_are_the_actor(clip_folder: Path, portrait: np.ndarray) -> None:
    """Frames identical to the portrait score identity 1 on every sampled frame."""
    judge = ClipJudge.from_folder(clip_folder, ("one",))
    scores = judge.score(np.repeat(portrait[None], 96, axis=0), portrait)
    assert scores.identity_min == pytest.approx(1.0, abs=1e-4) and scores.identity_mean == pytest.approx(1.0, abs=1e-4)
    assert scores.frames_scored == len(sample_frame_indices(96)) and scores.caption == DEFAULT_CAPTION
    assert clip_problems(scores, min_identity=0.99, min_prompt=-1.0) == []


def test_a_broken_stretch_is_found_and_fails_the_slot(clip_folder: Path, portrait: np.ndarray) -> None:
    """Frames 40–60 showing another picture pull the minimum down there, and the verdict says where."""
    judge = ClipJudge.from_folder(clip_folder, ("one",))
    frames = np.repeat(portrait[None], 96, axis=0)
    frames[40:61] = portrait[::-1, ::-1] // 3  # upside down and dark: not the portrait any more
    scores = judge.score(frames, portrait, every_n_frames=8)
    assert 40 <= scores.identity_min_frame <= 60 and scores.identity_min < 0.99
    problems = clip_problems(scores, min_identity=0.99, min_prompt=-1.0)
    assert len(problems) == 1 and f"frame {scores.identity_min_frame}" in problems[0]


def test_ensemble_scores_are_the_mean_of_its_models(clip_folder: Path, portrait: np.ndarray) -> None:
    """A two-model judge reports the average of what each model reports alone."""
    frames = np.repeat(portrait[None], 48, axis=0)
    frames[24:] = np.roll(portrait, 40, axis=1)
    both = ClipJudge.from_folder(clip_folder, ("one", "two")).score(frames, portrait, "an astronaut", 8)
    alone = [ClipJudge.from_folder(clip_folder, (name,)).score(frames, portrait, "an astronaut", 8)
             for name in ("one", "two")]
    assert both.models == ("one", "two") and both.caption == "a photo of an astronaut"
    assert both.prompt_mean == pytest.approx(np.mean([s.prompt_mean for s in alone]), abs=2e-4)
    assert both.identity_mean == pytest.approx(np.mean([s.identity_mean for s in alone]), abs=2e-4)


def test_caption_floor_fails_slots_below_it(clip_folder: Path, portrait: np.ndarray) -> None:
    """With a caption floor above the measured similarity the slot fails, naming the caption."""
    scores = ClipJudge.from_folder(clip_folder, ("one",)).score(np.repeat(portrait[None], 8, axis=0), portrait)
    problems = clip_problems(scores, min_identity=-1.0, min_prompt=scores.prompt_mean + 0.01)
    assert len(problems) == 1 and DEFAULT_CAPTION in problems[0]


def test_bad_frames_are_refused_by_name(clip_folder: Path, portrait: np.ndarray) -> None:
    """Float frames or a grey portrait raise StageInputError naming the argument."""
    judge = ClipJudge.from_folder(clip_folder, ("one",))
    with pytest.raises(StageInputError, match="frames"):
        judge.score(np.zeros((4, 64, 64, 3), np.float32), portrait)
    with pytest.raises(StageInputError, match="source_image"):
        judge.score(np.repeat(portrait[None], 4, axis=0), portrait[..., 0])


def test_merges_file_that_does_not_fit_the_model_is_refused(clip_folder: Path, tmp_path: Path) -> None:
    """A model whose vocabulary differs from the merges file's fails at load, naming the file."""
    write_small_merges(tmp_path / MERGES_FILE_NAME)
    save_clip(random_clip_model(small_config(600), seed=3), tmp_path, "other")
    with pytest.raises(StageInputError, match=MERGES_FILE_NAME):
        ClipJudge.from_folder(tmp_path, ("other",))


def test_the_ensemble_loads_and_scores_inside_its_region(clip_folder: Path, portrait: np.ndarray) -> None:
    """Given the clip region, both models' weights are charged to it and scoring runs inside it, leaving
    the region as it found it."""
    from vram import make_stage_pool

    region = make_stage_pool("clip", 1 << 30)
    judge = ClipJudge.from_folder(clip_folder, ("one", "two"), memory=region)
    weights_bytes = sum(t.nbytes for model in judge.models.values() for t in model.state_dict().values())
    resident = region.used_bytes()
    assert resident >= weights_bytes  # and the buffers that are not weights (the causal mask)
    frames = np.repeat(portrait[None], 16, axis=0)
    assert region.measure_peak(lambda: judge.score(frames, portrait, every_n_frames=8)) > resident
    assert region.used_bytes() == resident
