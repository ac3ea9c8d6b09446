"""The LivePortrait face crop and paste-back: geometry, round trip, untouched background."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="LivePortrait needs torch")

from stages.errors import StageInputError  # noqa: E402
from stages.warp.liveportrait.pasteback import (CROP_SCALE, CROP_SIZE_PX, OUTPUT_SIZE_PX, face_crop,  # noqa: E402
                                                feather_mask, paste, paste_maps)


@pytest.fixture(scope="module")
def actor():
    """The built-in astronaut actor (512² crop with MediaPipe landmarks)."""
    from stages.image import load_actor

    return load_actor()


def _to_crop(crop, points_px: np.ndarray) -> np.ndarray:
    return points_px[:, :2] @ crop.matrix[:, :2].T + crop.matrix[:, 2]


def test_face_is_centred_and_sized_like_the_official_crop(actor) -> None:
    """Eyes land level, in the upper-middle of the 256² crop, and the face spans ≈ 1/2.3 of it."""
    crop = face_crop(actor.landmarks_px)
    lm = _to_crop(crop, actor.landmarks_px)
    eyes = 0.5 * (lm[33] + lm[133]), 0.5 * (lm[362] + lm[263])
    mid = 0.5 * (eyes[0] + eyes[1])
    assert abs(mid[0] - (CROP_SIZE_PX - 1) / 2) < 6  # centred horizontally
    assert 0.35 * CROP_SIZE_PX < mid[1] < 0.5 * CROP_SIZE_PX  # eyes above the centre
    assert abs(eyes[0][1] - eyes[1][1]) < 0.5  # levelled
    width = lm[:468, 0].max() - lm[:468, 0].min()
    assert width / CROP_SIZE_PX == pytest.approx(1 / CROP_SCALE, rel=0.1)


def test_crop_follows_a_rolled_face(actor) -> None:
    """Rotating the frame 15° rotates the crop transform by 15° and keeps the crop's content."""
    rot = cv2.getRotationMatrix2D((255.5, 255.5), -15.0, 1.0)  # clockwise in the image
    lm = actor.landmarks_px.copy()
    lm[:, :2] = lm[:, :2] @ rot[:, :2].T + rot[:, 2]
    base, rolled = face_crop(actor.landmarks_px), face_crop(lm)
    assert rolled.roll_deg - base.roll_deg == pytest.approx(15.0, abs=0.2)
    assert np.allclose(_to_crop(rolled, lm), _to_crop(base, actor.landmarks_px), atol=0.5)


def test_paste_of_the_crop_itself_reproduces_the_frame(actor) -> None:
    """Pasting the crop (upscaled to G's 512²) back gives the frame again inside the mask, exactly outside."""
    crop = face_crop(actor.landmarks_px)
    maps = paste_maps(crop, actor.image)
    render = cv2.resize(crop.crop(actor.image), (OUTPUT_SIZE_PX, OUTPUT_SIZE_PX), interpolation=cv2.INTER_CUBIC)
    images = torch.from_numpy(render).permute(2, 0, 1)[None].float() / 255
    out = torch.zeros((1, 512, 512, 3), dtype=torch.uint8)
    paste(images, torch.from_numpy(maps.grid)[None], torch.from_numpy(maps.mask)[None, None],
          torch.from_numpy(maps.background).permute(2, 0, 1)[None].float(), out)
    frame = out[0].numpy()
    inside, outside = maps.mask > 0.99, maps.mask == 0
    assert inside.mean() > 0.4 and outside.mean() > 0.1
    # The crop is a 1.8× downscale, so the round trip is a blur: small mean error, no offset.
    blurred = cv2.GaussianBlur(actor.image, (0, 0), 1.0)
    err = np.abs(frame.astype(int) - blurred.astype(int))[inside].mean()
    assert err < 1.2  # measured 0.50; half a render pixel of misalignment gives 1.5
    assert np.array_equal(frame[outside], actor.image[outside])


def test_mask_is_feathered_and_falls_off_from_the_centre() -> None:
    """The mask is 1 at the centre, 0 at the crop edge, and never rises moving outward."""
    r = np.linspace(0, 1, 200)
    along_x, diagonal = feather_mask(r, 0 * r), feather_mask(r, r)
    for profile in (along_x, diagonal):
        assert profile[0] == 1.0 and profile[-1] == 0.0
        assert np.all(np.diff(profile) <= 0)
        assert ((profile > 0) & (profile < 1)).sum() >= 10  # a ramp, not a hard edge


def test_landmarks_that_are_not_a_face_are_refused() -> None:
    """Too few, NaN or collapsed landmarks raise StageInputError naming actor.landmarks_px."""
    for lm in (np.zeros((10, 3)), np.full((478, 3), np.nan), np.zeros((478, 3))):
        with pytest.raises(StageInputError) as err:
            face_crop(lm)
        assert err.value.field == "actor.landmarks_px"
