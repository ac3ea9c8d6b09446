"""FluxImageBackend: loads a diffusers-layout folder, generates deterministic portraits, gates faces."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from stages.errors import NoFaceError, StageInputError
from stages.image.flux import FluxImageBackend, FluxOptions
from tests.support.flux import build_tiny_flux

PROMPT = "a woman with red hair"
SIZE_PX = 128  # a multiple of 16 that keeps every render tiny; make_actor uses the slot size


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """A tiny random-weight Flux pipeline saved in the FLUX.1-schnell diffusers layout."""
    return build_tiny_flux(tmp_path_factory.mktemp("flux") / "FLUX.1-schnell")


@pytest.fixture(scope="module")
def backend(weights_dir):
    """The backend loaded from that folder, as an operator's local weights would be."""
    loaded = FluxImageBackend(FluxOptions(weights_dir=weights_dir, steps=2, size_px=SIZE_PX,
                                          max_sequence_length=32))
    yield loaded
    loaded.close()


class CountingPipeline:
    """Forwards every call to the real pipeline and records the seed of each call's generator."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.seeds: list[int] = []

    def __call__(self, *args, **kwargs):
        self.seeds.append(kwargs["generator"].initial_seed())
        return self.pipeline(*args, **kwargs)


def copy_of(weights_dir, tmp_path):
    """A private copy of the saved folder that a test may damage."""
    return shutil.copytree(weights_dir, tmp_path / "flux")


def test_loads_the_saved_folder_into_a_flux_pipeline(backend):
    """The backend holds a diffusers FluxPipeline with every component loaded from the folder."""
    from diffusers import FluxPipeline

    assert isinstance(backend.pipeline, FluxPipeline)
    assert backend.pipeline.transformer.config.in_channels == 16
    assert backend.pipeline.tokenizer_2.tokenize("a portrait")[:2] == ["▁a", "▁portrait"]


def test_generate_gives_a_square_uint8_rgb_picture(backend):
    """generate returns size_px × size_px × 3 uint8 pixels that are not a constant image."""
    pixels = backend.generate(PROMPT, seed=0)
    assert pixels.shape == (SIZE_PX, SIZE_PX, 3) and pixels.dtype == np.uint8
    assert pixels.std() > 1.0


def test_same_seed_gives_identical_pixels_and_another_seed_does_not(backend):
    """Two renders with one seed are bit-identical; a different seed changes most pixels."""
    first = backend.generate(PROMPT, seed=7)
    torch.manual_seed(1234)  # global RNG state must not matter: the backend uses a local generator
    again = backend.generate(PROMPT, seed=7)
    other = backend.generate(PROMPT, seed=8)
    np.testing.assert_array_equal(first, again)
    assert np.mean(first != other) > 0.5


def test_the_prompt_changes_the_picture(backend):
    """Different prompts with one seed give different pictures (the text reaches the model)."""
    assert not np.array_equal(backend.generate(PROMPT, seed=3), backend.generate("a smiling man", seed=3))


def test_a_faceless_model_is_refused_after_face_attempts_generations(weights_dir):
    """Random weights show no face: make_actor tries seeds s…s+2, then NoFaceError on actor.prompt naming 3."""
    backend = FluxImageBackend(FluxOptions(weights_dir=weights_dir, steps=1, max_sequence_length=32,
                                           face_attempts=3))
    counting = CountingPipeline(backend.pipeline)
    backend.pipeline = counting
    try:
        with pytest.raises(NoFaceError) as caught:
            backend.make_actor(PROMPT, seed=40)
    finally:
        backend.close()
    assert counting.seeds == [40, 41, 42]
    assert caught.value.field == "actor.prompt"
    assert "3 image(s)" in caught.value.message and "human face" in caught.value.message
    assert caught.value.details["attempts"] == 3


def test_an_empty_prompt_is_refused_before_generating(backend):
    """A blank prompt raises StageInputError on actor.prompt without calling the pipeline."""
    with pytest.raises(StageInputError) as caught:
        backend.make_actor("   ", seed=0)
    assert caught.value.field == "actor.prompt"


def test_a_missing_weights_folder_names_the_setting_and_path(tmp_path):
    """A folder that does not exist raises StageInputError on flux_weights_dir naming the folder."""
    missing = tmp_path / "nowhere"
    with pytest.raises(StageInputError) as caught:
        FluxImageBackend(FluxOptions(weights_dir=missing))
    assert caught.value.field == "flux_weights_dir" and str(missing) in str(caught.value)


def test_a_missing_model_index_names_the_setting_and_path(weights_dir, tmp_path):
    """A folder without model_index.json raises StageInputError on flux_weights_dir naming that file."""
    folder = copy_of(weights_dir, tmp_path)
    (folder / "model_index.json").unlink()
    with pytest.raises(StageInputError) as caught:
        FluxImageBackend(FluxOptions(weights_dir=folder))
    assert caught.value.field == "flux_weights_dir" and str(folder / "model_index.json") in str(caught.value)


@pytest.mark.parametrize("component", ["transformer", "text_encoder_2", "tokenizer_2", "scheduler"])
def test_a_missing_component_folder_names_the_setting_and_path(weights_dir, tmp_path, component):
    """Deleting a component folder raises StageInputError on flux_weights_dir naming that folder."""
    folder = copy_of(weights_dir, tmp_path)
    shutil.rmtree(folder / component)
    with pytest.raises(StageInputError) as caught:
        FluxImageBackend(FluxOptions(weights_dir=folder))
    assert caught.value.field == "flux_weights_dir" and str(folder / component) in str(caught.value)


def test_a_missing_weight_file_names_the_setting_and_path(weights_dir, tmp_path):
    """A component folder without its safetensors raises StageInputError naming the folder."""
    folder = copy_of(weights_dir, tmp_path)
    for weights in (folder / "vae").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(StageInputError) as caught:
        FluxImageBackend(FluxOptions(weights_dir=folder))
    assert caught.value.field == "flux_weights_dir" and str(folder / "vae") in str(caught.value)


def test_a_missing_shard_of_a_sharded_checkpoint_is_named(weights_dir, tmp_path):
    """A shard listed in a component's index but absent raises StageInputError naming the shard."""
    folder = copy_of(weights_dir, tmp_path)
    index = {"metadata": {}, "weight_map": {"x.weight": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(StageInputError) as caught:
        FluxImageBackend(FluxOptions(weights_dir=folder))
    assert "diffusion_pytorch_model-00002-of-00002.safetensors" in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_nf4_without_cuda_is_refused_naming_flux_quantization(weights_dir):
    """nf4 on a CPU-only machine raises StageInputError on flux_quantization saying CUDA is needed."""
    with pytest.raises(StageInputError) as caught:
        FluxImageBackend(FluxOptions(weights_dir=weights_dir, quantization="nf4"))
    assert caught.value.field == "flux_quantization" and "CUDA" in caught.value.message


def test_fp8_stores_transformer_weights_in_float8_and_still_renders(weights_dir):
    """fp8 keeps the transformer's linear weights in float8_e4m3fn and still gives a uint8 picture."""
    backend = FluxImageBackend(FluxOptions(weights_dir=weights_dir, steps=1, size_px=64, max_sequence_length=32,
                                           quantization="fp8"))
    try:
        dtypes = {p.dtype for p in backend.pipeline.transformer.transformer_blocks.parameters()}
        pixels = backend.generate(PROMPT, seed=0)
    finally:
        backend.close()
    assert torch.float8_e4m3fn in dtypes
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8


@pytest.mark.parametrize(("change", "field"), [({"size_px": 500}, "flux_size_px"), ({"steps": 0}, "flux_steps"),
                                               ({"quantization": "int3"}, "flux_quantization"),
                                               ({"device": "tpu"}, "device"),
                                               ({"max_sequence_length": 512}, "flux_max_sequence_length")])
def test_invalid_options_name_their_setting(tmp_path, change, field):
    """An out-of-range option raises StageInputError naming its setting, before anything loads."""
    with pytest.raises(StageInputError) as caught:
        FluxOptions(weights_dir=tmp_path, **change)
    assert caught.value.field == field


def test_close_frees_the_pipeline(weights_dir):
    """After close the pipeline is released and generate refuses instead of running."""
    backend = FluxImageBackend(FluxOptions(weights_dir=weights_dir, steps=1, size_px=64, max_sequence_length=32))
    backend.close()
    assert backend.pipeline is None
    with pytest.raises(RuntimeError):
        backend.generate(PROMPT, seed=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bfloat16 default, GPU generator)")
def test_on_cuda_the_default_dtype_is_bfloat16_and_seeds_repeat(weights_dir):
    """On CUDA weights load in bfloat16 and one seed gives identical pixels twice."""
    backend = FluxImageBackend(FluxOptions(weights_dir=weights_dir, device="cuda:0", steps=1, size_px=64,
                                           max_sequence_length=32))
    try:
        assert backend.pipeline.transformer.dtype == torch.bfloat16
        np.testing.assert_array_equal(backend.generate(PROMPT, 5), backend.generate(PROMPT, 5))
    finally:
        backend.close()


def test_weights_and_generation_live_in_the_flux_region(weights_dir):
    """Given its region, Flux loads its weights into it and generates inside it: the region holds the
    weights, peaks above them while generating, and a generation leaves nothing behind."""
    from vram import make_stage_pool

    region = make_stage_pool("flux", 1 << 30)
    backend = FluxImageBackend(FluxOptions(weights_dir=weights_dir, steps=1, size_px=64, max_sequence_length=32),
                               memory=region)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()  # tied weights count once
                for part in backend.pipeline.components.values() if isinstance(part, torch.nn.Module)
                for t in part.state_dict().values()}
    weights_bytes = sum(storages.values())
    assert region.used_bytes() >= weights_bytes > 0  # and what loading made beside them (rotary tables)
    resident = region.used_bytes()
    assert region.measure_peak(lambda: backend.generate(PROMPT, seed=0)) > resident
    after_one = region.used_bytes()  # the scheduler swaps its load-time tables for the run's
    backend.generate(PROMPT, seed=1)
    assert region.used_bytes() == after_one <= resident
    backend.close()
