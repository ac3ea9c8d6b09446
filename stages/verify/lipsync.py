"""The lip-sync judge: how far the mouth in the video is ahead of or behind the speech.

It measures the mouth on the frames themselves (MediaPipe inner-lip gap), builds two
references from the speech — the phoneme timeline through its own openness table (independent
of the motion planner's viseme tables) and the audio's loudness — and finds the lag with the
best normalised cross-correlation. A second judge (`event_offsets`, at the end) times single
events instead — each speech onset against the moment the lips leave their closure — and so
also reads real recordings whose loudness never falls silent.

Sign convention, everywhere in this module: lag = +k frames means the mouth movement in the
video happens k frames AFTER the reference (the video is late, i.e. the audio is early);
lag = −k means the mouth moves k frames BEFORE the sound.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from stages.errors import StageInputError
from stages.types import Phoneme

# MediaPipe face-mesh indices: inner lip centre (upper, lower) and the outer eye corners.
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263

DEFAULT_MAX_LAG_FRAMES = 8
MIN_OVERLAP_FRAMES = 12
"""A lag is only scored when at least this many frames (0.5 s at 24 fps) have both values."""

REFERENCE_SMOOTHING_FRAMES = 1.0
"""Gaussian sigma applied to the phoneme reference: jaws do not teleport between phonemes."""

ENVELOPE_RANGE_DB = 50.0
"""The loudness reference spans this many dB below the loudest frame; quieter counts as silence
(so breath and noise-floor flicker in pauses cannot steer the correlation)."""

# Mouth openness by IPA class (this judge's own table; 0 = lips closed, 1 = a mid vowel).
_CLOSE_VOWELS = "iyɨʉɯuɪʏʊ"
_MID_VOWELS = "eøɘɵɤoəɛœɜɞʌɔɚɝ"
_OPEN_VOWELS = "æɐaɶɑɒ"
_APPROXIMANTS = "lɫɹrɾɻwjʋɥʎʍɰɭhɦ"  # h takes the shape of the vowel around it: partial
_BILABIALS = "pbmɸβʙ"
_LABIODENTALS = "fvɱ"
_OPENNESS = {
    **{c: 0.85 for c in _CLOSE_VOWELS},
    **{c: 1.0 for c in _MID_VOWELS},
    **{c: 1.2 for c in _OPEN_VOWELS},
    **{c: 0.5 for c in _APPROXIMANTS},
    **{c: 0.0 for c in _BILABIALS},
    **{c: 0.1 for c in _LABIODENTALS},
}
_VOWELS = frozenset(_CLOSE_VOWELS + _MID_VOWELS + _OPEN_VOWELS)
_OTHER_CONSONANT = 0.25
_MODIFIERS = frozenset("ˈˌːˑ.‿͡-_ \t")  # stress, length, ties, pause marks: not articulations


def symbol_openness(symbol: str) -> float:
    """Expected mouth openness of one IPA phoneme symbol (0 closed/silent, ~1 vowel, 1.2 open vowel).

    Vowels and diphthongs average their vowel letters (so "aɪ" sits between open and close);
    consonant clusters and affricates average their letters; unknown letters count as a
    generic consonant; a symbol with no letters (a pause) is 0.
    """
    letters = [c for c in unicodedata.normalize("NFD", symbol) if c not in _MODIFIERS and not unicodedata.combining(c)]
    if not letters:
        return 0.0
    vowels = [c for c in letters if c in _VOWELS]
    chosen = vowels or letters
    return float(np.mean([_OPENNESS.get(c, _OTHER_CONSONANT) for c in chosen]))


@dataclass(frozen=True)
class LagResult:
    """The best lag between a signal and a reference, and the whole correlation curve.

    `curve[j]` is the Pearson correlation at lag `lags[j]` (NaN where too few frames overlap);
    `lag_refined_frames` interpolates the peak with a parabola through its neighbours.
    Sign: +k = the signal (mouth) happens k frames after the reference.
    """

    lag_frames: int
    correlation: float
    curve: np.ndarray
    max_lag_frames: int
    lag_refined_frames: float

    @property
    def lags(self) -> np.ndarray:
        """The lag of each curve entry, −max_lag_frames … +max_lag_frames."""
        return np.arange(-self.max_lag_frames, self.max_lag_frames + 1)

    @property
    def at_edge(self) -> bool:
        """True when the peak sits on the search boundary (the true lag may lie beyond it)."""
        return abs(self.lag_frames) == self.max_lag_frames


@dataclass(frozen=True)
class AVOffset:
    """Audio-visual offset of a run of frames, measured against the loudness and the phonemes.

    The headline figures (`lag_frames`, `lag_ms`, `correlation`) come from the audio envelope:
    it is what the viewer hears, and it is independent of any timeline. `phoneme` correlates
    more strongly but also contains the deliberate anticipation of the mouth (on the embedded
    backends it reads ~0.6 frame earlier than the envelope). `phoneme` is None without a
    timeline; either is None, with `notes` saying why, when it could not be measured.
    """

    fps: int
    n_frames: int
    start_frame: int
    face_ratio: float  # frames where the face mesh was found / n_frames
    envelope: LagResult | None
    phoneme: LagResult | None
    notes: tuple[str, ...] = ()

    @property
    def reference(self) -> str | None:
        """Which measurement the headline figures come from: "envelope", else "phonemes"."""
        if self.envelope is not None:
            return "envelope"
        return "phonemes" if self.phoneme is not None else None

    @property
    def best(self) -> LagResult | None:
        """The headline measurement (the audio envelope when measurable, else the phonemes)."""
        return self.envelope if self.envelope is not None else self.phoneme

    @property
    def lag_frames(self) -> int | None:
        """The headline lag in frames (+ = video late), None when nothing could be measured."""
        return None if self.best is None else self.best.lag_frames

    @property
    def lag_ms(self) -> float | None:
        """The headline lag in milliseconds (+ = video late), from the sub-frame refined peak."""
        return None if self.best is None else self.best.lag_refined_frames * 1000.0 / self.fps

    @property
    def correlation(self) -> float | None:
        """Correlation at the headline lag."""
        return None if self.best is None else self.best.correlation


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise StageInputError("frames", "expected a (T, H, W, 3) uint8 RGB array",
                              shape=getattr(frames, "shape", None), dtype=str(getattr(frames, "dtype", None)))


def mouth_aperture(frames: np.ndarray) -> np.ndarray:
    """(T,) inner-lip gap (landmarks 13–14) over the eye-corner distance (33–263); NaN without a face.

    Dividing by the eye span makes the value independent of face size and distance; tracking
    mode keeps it ~3–5 ms per 512² frame on CPU.
    """
    from stages.image.face import track_landmarks

    _check_frames(frames)
    points = track_landmarks(frames)[..., :2]
    gap = np.linalg.norm(points[:, UPPER_INNER_LIP] - points[:, LOWER_INNER_LIP], axis=-1)
    scale = np.linalg.norm(points[:, RIGHT_EYE_OUTER] - points[:, LEFT_EYE_OUTER], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # No face: NaN stays NaN; a degenerate zero eye span is not a measurement either.
        return np.where(scale > 0, gap / scale, np.nan).astype(np.float32)


def _frame_centres_s(fps: float, n_frames: int, start_frame: int) -> np.ndarray:
    if fps <= 0:
        raise StageInputError("output.fps", "fps must be positive", fps=fps)
    if n_frames < 0 or start_frame < 0:
        raise StageInputError("frames", "frame counts must not be negative", n_frames=n_frames, start_frame=start_frame)
    return (np.arange(start_frame, start_frame + n_frames) + 0.5) / fps


def phoneme_reference(phonemes: Iterable[Phoneme], fps: float, n_frames: int, start_frame: int = 0) -> np.ndarray:
    """(n_frames,) expected mouth openness from an IPA timeline, sampled at frame centres.

    Vowels ~1 (open vowels 1.2), approximants 0.5, bilabials and silence 0, other consonants
    low; lightly smoothed. Frame i covers video time [(start_frame+i)/fps, (start_frame+i+1)/fps).
    """
    _frame_centres_s(fps, n_frames, start_frame)  # validates the arguments
    # Evaluate a margin of frames either side and smooth before cropping, so a window of the
    # video gets exactly the values the whole-track reference has there.
    margin = int(np.ceil(4 * REFERENCE_SMOOTHING_FRAMES))
    first = max(0, start_frame - margin)
    centres_s = (np.arange(first, start_frame + n_frames + margin) + 0.5) / fps
    items = sorted(phonemes, key=lambda p: p.start_s)
    if not items:
        return np.zeros(n_frames, dtype=np.float32)
    starts = np.array([p.start_s for p in items], dtype=np.float64)
    ends = np.array([p.end_s for p in items], dtype=np.float64)
    if np.any(ends < starts) or not np.all(np.isfinite(starts) & np.isfinite(ends)):
        raise StageInputError("speech.phonemes", "every phoneme must have finite times with end_s ≥ start_s")
    values = np.array([symbol_openness(p.symbol) for p in items], dtype=np.float64)
    # The phoneme under each frame centre: the last one starting at or before it, if still running.
    index = np.searchsorted(starts, centres_s, side="right") - 1
    inside = (index >= 0) & (centres_s < ends[np.clip(index, 0, None)])
    reference = np.where(inside, values[np.clip(index, 0, None)], 0.0)
    if len(reference) > 1:
        reference = smooth_gaussian(reference, REFERENCE_SMOOTHING_FRAMES)
    return reference[start_frame - first : start_frame - first + n_frames].astype(np.float32)


def smooth_gaussian(values: np.ndarray, sigma: float) -> np.ndarray:
    """`values` (1-D) smoothed by a Gaussian of `sigma` samples, edges repeated: what
    scipy.ndimage.gaussian_filter1d(values, sigma, mode="nearest") gives (kernel cut at 4σ).

    Here rather than SciPy's: importing scipy.ndimage costs ~0.4 s of CPU in every process
    that checks a slot, for one 288-sample series. The taps are summed one shifted copy at a
    time in a fixed order (no BLAS dot), so every CPU gives the same bits.
    """
    radius = int(4.0 * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / float(sigma)) ** 2)
    weights /= weights.sum()
    samples = np.asarray(values, dtype=np.float64)
    padded = np.pad(samples, radius, mode="edge")
    smoothed = np.zeros_like(samples)
    for tap, weight in enumerate(weights):
        smoothed += weight * padded[tap : tap + len(samples)]
    return smoothed


def frame_rms(audio: np.ndarray, sample_rate_hz: int, fps: float, n_frames: int, start_frame: int = 0) -> np.ndarray:
    """(n_frames,) RMS of the audio in a one-frame window centred on each frame's centre time.

    Audio sample 0 is video time 0; windows past the end of the audio count as silence.
    """
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise StageInputError("speech.audio", "expected mono (1-D) audio", shape=samples.shape)
    if sample_rate_hz <= 0:
        raise StageInputError("speech.sample_rate_hz", "sample rate must be positive", sample_rate_hz=sample_rate_hz)
    centres = _frame_centres_s(fps, n_frames, start_frame) * sample_rate_hz
    half = 0.5 * sample_rate_hz / fps
    lo = np.clip(np.round(centres - half).astype(np.int64), 0, len(samples))
    hi = np.clip(np.round(centres + half).astype(np.int64), 0, len(samples))
    # Prefix sums give every window's energy in one vectorised step.
    energy = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    window = max(1, int(round(2 * half)))
    return np.sqrt((energy[hi] - energy[lo]) / window).astype(np.float32)


def envelope_reference(audio: np.ndarray, sample_rate_hz: int, fps: float, n_frames: int,
                       start_frame: int = 0) -> np.ndarray:
    """(n_frames,) log-compressed loudness per frame: dB above (loudest frame − ENVELOPE_RANGE_DB), ≥ 0."""
    rms = frame_rms(audio, sample_rate_hz, fps, n_frames, start_frame)
    level_db = 20.0 * np.log10(np.maximum(rms.astype(np.float64), 1e-10))
    if n_frames == 0:
        return np.zeros(0, dtype=np.float32)
    floor_db = level_db.max() - ENVELOPE_RANGE_DB
    return np.clip(level_db - floor_db, 0.0, None).astype(np.float32)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < MIN_OVERLAP_FRAMES:
        return np.nan
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
    # A constant signal (a frozen mouth, pure silence) has no defined correlation.
    return float(np.dot(a, b) / denom) if denom > 1e-12 else np.nan


def best_lag(signal: np.ndarray, reference: np.ndarray, max_lag_frames: int = DEFAULT_MAX_LAG_FRAMES) -> LagResult:
    """The lag in [−max_lag_frames, +max_lag_frames] maximising the normalised cross-correlation.

    signal[t] is compared with reference[t − lag]: lag = +k means the signal (the mouth) happens
    k frames after the reference (video late). NaNs (frames without a face) are skipped. Raises
    StageInputError when no lag has MIN_OVERLAP_FRAMES defined, varying values on both sides.
    """
    s = np.asarray(signal, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if s.ndim != 1 or s.shape != r.shape:
        raise StageInputError("reference", "signal and reference must be 1-D and of equal length",
                              signal_shape=s.shape, reference_shape=r.shape)
    if max_lag_frames < 0:
        raise StageInputError("max_lag_frames", "must not be negative", max_lag_frames=max_lag_frames)
    n = len(s)
    lags = np.arange(-max_lag_frames, max_lag_frames + 1)
    curve = np.array([
        _pearson(s[k:], r[: n - k]) if k >= 0 else _pearson(s[: n + k], r[-k:])
        for k in lags
    ]) if n else np.full(len(lags), np.nan)
    if not np.any(np.isfinite(curve)):
        raise StageInputError(
            "frames", f"cannot correlate: fewer than {MIN_OVERLAP_FRAMES} frames where both the mouth and the "
            "reference are defined, or one of them never changes",
            defined_signal_frames=int(np.isfinite(s).sum()),
        )
    peak = int(np.nanargmax(curve))
    refined = float(lags[peak])
    if 0 < peak < len(curve) - 1 and np.all(np.isfinite(curve[peak - 1 : peak + 2])):
        left, mid, right = curve[peak - 1 : peak + 2]
        bend = left - 2 * mid + right
        if bend < 0:  # a real maximum: vertex of the parabola through the three points
            refined += 0.5 * (left - right) / bend
    return LagResult(lag_frames=int(lags[peak]), correlation=float(curve[peak]), curve=curve,
                     max_lag_frames=int(max_lag_frames), lag_refined_frames=refined)


def measure_av_offset(
    frames: np.ndarray,
    audio: np.ndarray,
    phonemes: Iterable[Phoneme] = (),
    fps: int = 24,
    sample_rate_hz: int = 24_000,
    start_frame: int = 0,
    max_lag_frames: int = DEFAULT_MAX_LAG_FRAMES,
    aperture: np.ndarray | None = None,
) -> AVOffset:
    """How late the mouth in `frames` is against the speech (lag +k = video k frames late).

    `frames` are video frames start_frame … start_frame+T−1; `audio` and `phonemes` are the
    whole track, sample 0 / time 0 at video frame 0. Pass `aperture` if already measured on
    these frames to skip the face tracking.
    """
    phonemes = tuple(phonemes)
    if aperture is None:
        aperture = mouth_aperture(frames)
    n_frames = len(aperture)
    face_ratio = float(np.isfinite(aperture).mean()) if n_frames else 0.0
    notes: list[str] = []

    def lag_against(reference: np.ndarray, name: str) -> LagResult | None:
        try:
            return best_lag(aperture, reference, max_lag_frames)
        except StageInputError as exc:
            notes.append(f"{name}: {exc.message}")
            return None

    envelope = lag_against(envelope_reference(audio, sample_rate_hz, fps, n_frames, start_frame), "envelope")
    phoneme = None
    if phonemes:
        phoneme = lag_against(phoneme_reference(phonemes, fps, n_frames, start_frame), "phonemes")
    return AVOffset(fps=int(fps), n_frames=n_frames, start_frame=int(start_frame), face_ratio=face_ratio,
                    envelope=envelope, phoneme=phoneme, notes=tuple(notes))


# --- The event judge: when the lips leave a closure against when the sound starts -------------
#
# The envelope judge correlates whole tracks and needs speech that falls silent between words;
# on real recordings (room noise, a voice that never stops) it does not lock. This judge times
# single events instead: each rise of the speech-band loudness out of a dip (speech after a
# pause, the burst after a stop closure — p/b/m among them) against the moment the lip gap
# around it leaves its closure. Δ < 0: the mouth moves first.

SPEECH_BAND_HZ = (300.0, 4000.0)
"""Loudness for the event judge is read in this band: room rumble and hiss stay out of the dips."""
ONSET_HOP_S, ONSET_WINDOW_S = 0.005, 0.02
MIN_DIP_DB = 12.0
"""A sound onset rises at least this far out of its dip, to within 25 dB of the loudest speech."""
OPENING_SEARCH_S = (0.25, 0.10, 0.30)
"""The lips' closure is looked for from 250 ms before to 100 ms after the onset; its opening
within 300 ms after the closure."""
_PAUSE_S = 0.15


def band_loudness_db(audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """dB of the speech band's RMS in ONSET_WINDOW_S windows centred every ONSET_HOP_S from t = 0
    (filtered forward and back: no delay)."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, SPEECH_BAND_HZ, btype="band", fs=sample_rate_hz, output="sos")
    band = sosfiltfilt(sos, np.asarray(audio, np.float64))
    energy = np.concatenate([[0.0], np.cumsum(band**2)])
    centres = np.arange(0.0, len(band) / sample_rate_hz, ONSET_HOP_S) * sample_rate_hz
    half = 0.5 * ONSET_WINDOW_S * sample_rate_hz
    lo = np.clip(np.round(centres - half).astype(np.int64), 0, len(band))
    hi = np.clip(np.round(centres + half).astype(np.int64), 0, len(band))
    return 10.0 * np.log10(np.maximum((energy[hi] - energy[lo]) / (2 * half), 1e-12))


def _crossing(series: np.ndarray, start: int, end: int, level: float) -> float:
    """First fractional index in [start, end] where `series` reaches `level` (linear between samples)."""
    for i in range(start, end):
        if series[i] >= level:
            return float(i)
        if series[i + 1] >= level:
            return i + (level - series[i]) / (series[i + 1] - series[i])
    return float(end)


def speech_onsets(audio: np.ndarray, sample_rate_hz: int) -> tuple[np.ndarray, np.ndarray]:
    """(onset times in s, after a pause?): the moment the speech-band loudness has made half of
    each ≥ MIN_DIP_DB rise out of a dip into speech (within 25 dB of the loudest). The rise is
    measured from where the loudness leaves the dip's level, however long the pause before it.
    "After a pause": the loudness stayed within 12 dB of the noise floor for 150 ms before."""
    from scipy.signal import find_peaks

    db = band_loudness_db(audio, sample_rate_hz)
    floor, top = np.percentile(db, 5), np.percentile(db, 99)
    dips, _ = find_peaks(-db, prominence=MIN_DIP_DB, distance=int(0.08 / ONSET_HOP_S))
    loud = np.flatnonzero(db >= top - 25.0)
    if loud.size and loud[0] > 0:  # speech after the recording's quiet start has no dip before it
        dips = np.union1d(dips, [int(np.argmin(db[:loud[0]]))])
    rise_n, pause_n = int(OPENING_SEARCH_S[2] / ONSET_HOP_S), int(_PAUSE_S / ONSET_HOP_S)
    times: list[float] = []
    pauses: list[bool] = []
    for m in dips:
        after = loud[np.searchsorted(loud, m):]
        if not after.size:
            continue
        # The rise starts where the loudness last sits near the dip's level before speech.
        start = m + int(np.flatnonzero(db[m:after[0] + 1] <= db[m] + 3.0)[-1])
        p = start + int(np.argmax(db[start:start + rise_n]))
        rise = db[p] - db[m]
        if rise < MIN_DIP_DB:
            continue
        t = _crossing(db, start, p, db[m] + 0.5 * rise) * ONSET_HOP_S
        if times and t - times[-1] < 0.08:
            continue
        times.append(t)
        pauses.append(start >= pause_n and bool(np.all(db[start - pause_n:start + 1] < floor + 12.0)))
    return np.array(times), np.array(pauses, bool)


def mouth_openings(gap: np.ndarray, fps: float, onsets_s: np.ndarray,
                   shares: tuple[float, ...] = (0.2,)) -> np.ndarray:
    """(len(shares), onsets): per sound onset, the fractional frame index where the lip gap
    around it has made each share of its rise out of its closure; NaN where the mouth does not
    open there (a rise under a quarter of the gap's p10–p90 spread). Frames without a face are
    interpolated over. The closure and the rise are found once for every share."""
    g = np.asarray(gap, np.float64).copy()
    ok = np.isfinite(g)
    out = np.full((len(shares), len(onsets_s)), np.nan)
    if ok.sum() < 2:
        return out
    g[~ok] = np.interp(np.flatnonzero(~ok), np.flatnonzero(ok), g[ok])
    spread = np.percentile(g, 90) - np.percentile(g, 10)
    before, after, rise_s = OPENING_SEARCH_S
    for k, t in enumerate(onsets_s):
        a = max(0, int(np.floor((t - before) * fps)))
        b = min(len(g) - 1, int(np.ceil((t + after) * fps)))
        if b - a < 2:
            continue
        c = a + int(np.argmin(g[a:b + 1]))
        low = g[c]
        # The closure's last frame: the rise is measured from where the lips leave it.
        while c + 1 <= b and g[c + 1] <= low + 0.05 * spread:
            c += 1
        p = c + int(np.argmax(g[c:min(len(g) - 1, c + int(np.ceil(rise_s * fps))) + 1]))
        if p > c and g[p] - low >= 0.25 * spread:
            out[:, k] = [_crossing(g, c, p, low + share * (g[p] - low)) for share in shares]
    return out


@dataclass(frozen=True)
class EventOffsets:
    """Per paired event: Δ = mouth event − sound onset in ms on the presentation clock (frame i
    shown from i/fps; on the frame-centre clock every Δ is half a frame later), for the lips'
    opening ("open", 20 % of the rise) and half-open ("half", 50 %); whether the onset followed
    a pause; and how many onsets the audio had."""

    open_ms: np.ndarray
    half_ms: np.ndarray
    after_pause: np.ndarray
    onsets: int


def event_offsets(gap: np.ndarray, fps: float, audio: np.ndarray, sample_rate_hz: int) -> EventOffsets:
    """Time every sound onset of `audio` (sample 0 plays with frame 0) against the lips' opening
    in `gap` (any lip-gap measure, one value per frame)."""
    onsets, pauses = speech_onsets(audio, sample_rate_hz)
    opened, half = mouth_openings(gap, fps, onsets, (0.2, 0.5))
    keep = np.isfinite(opened) & np.isfinite(half)
    frame_ms = 1000.0 / fps
    return EventOffsets(opened[keep] * frame_ms - 1000.0 * onsets[keep],
                        half[keep] * frame_ms - 1000.0 * onsets[keep], pauses[keep], len(onsets))
