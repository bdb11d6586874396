import pytest
import torch

from latent_space_control.core.sampling import karras_sigmas, sample_euler
from latent_space_control.reference import oracle, world
from latent_space_control.reference.gmm import GaussianMixture, mode_frequency_error, standard_mixture


def test_scenes_are_deterministic_and_cover_every_attribute():
    first, again = world.scenes(600, seed=5), world.scenes(600, seed=5)
    assert first == again and world.scenes(600, seed=6) != first
    for name, values in world.ATTRIBUTES.items():
        assert {getattr(scene, name) for scene in first} == set(values)


def test_held_out_pairs_are_one_per_shape_and_colour_and_scenes_can_leave_them_out():
    assert sorted(shape for shape, _ in world.HELD_OUT) == sorted(world.SHAPES)
    assert len({colour for _, colour in world.HELD_OUT}) == len(world.HELD_OUT)
    seen, held_out = world.scenes(300, seed=7, held_out=False), world.scenes(60, seed=7, held_out=True)
    assert not any(scene.held_out for scene in seen) and all(scene.held_out for scene in held_out)
    assert {(scene.shape, scene.colour) for scene in held_out} == world.HELD_OUT
    assert not any(scene.held_out for scene, _, _ in world.partial_prompts(300, seed=7))


def test_captions_say_exactly_the_attributes():
    scene = world.Scene("circle", "red", "large", "left", "white")
    assert scene.caption() == "a large red circle on the left, white background"
    assert world.Scene("triangle", "cyan", "small", "center", "black").caption() == \
        "a small cyan triangle in the middle, black background"


def test_prompts_name_the_shape_and_only_the_attributes_asked_for():
    scene = world.Scene("circle", "red", "large", "left", "white")
    assert scene.prompt(()) == "a circle"
    assert scene.prompt(("colour",)) == "a red circle"
    assert scene.prompt(("size", "colour", "position")) == "a large red circle on the left"
    assert scene.prompt(("colour", "background"), background_first=True) == "white background, a red circle"
    assert scene.prompt(world.OPTIONAL_IN_PROMPTS) == scene.caption()
    with pytest.raises(ValueError, match=r"named holds \['hue'\]"):
        scene.prompt(("hue",))


def test_partial_prompts_mix_every_way_of_leaving_attributes_out():
    prompts = world.partial_prompts(400, seed=3)
    assert prompts == world.partial_prompts(400, seed=3)
    assert len({named for _, _, named in prompts}) == 16 and all("shape" in named for _, _, named in prompts)
    with_background = [prompt for _, prompt, named in prompts if "background" in named]
    assert any(prompt.endswith("background") for prompt in with_background)
    assert any(prompt.startswith(("white background, a", "black background, a")) for prompt in with_background)
    for scene, prompt, named in prompts:
        words = prompt.replace(",", " ").split()
        for name in world.ATTRIBUTES:  # a prompt shows the value of each attribute it names, and of no other
            value = getattr(scene, name)
            assert (("middle" if value == "center" else value) in words) == (name in named), (prompt, name)


def test_pictures_show_the_background_and_the_shape_colour():
    scene = world.Scene("square", "blue", "large", "center", "black")
    picture = world.render(scene)
    assert picture.shape == (3, world.SIZE, world.SIZE) and picture.min() >= 0 and picture.max() <= 1
    torch.testing.assert_close(picture[:, 0, 0], torch.tensor(world.BACKGROUNDS["black"]))
    torch.testing.assert_close(picture[:, 16, 16], torch.tensor(world.COLOURS["blue"]))


def test_oracle_reads_clean_pictures_and_survives_mild_noise():
    scenes = world.scenes(400, seed=11)
    pictures = world.render_batch(scenes)
    truths = [scene.attributes() for scene in scenes]
    clean = oracle.accuracy(oracle.read_batch(pictures), truths)
    assert min(clean.values()) >= 0.99, clean
    noisy = pictures + 0.05 * torch.randn(pictures.shape, generator=torch.Generator().manual_seed(0))
    assert min(oracle.accuracy(oracle.read_batch(noisy), truths).values()) >= 0.97


def test_oracle_sees_no_shape_on_a_blank_picture():
    blank = torch.full((3, world.SIZE, world.SIZE), 0.95)
    reading = oracle.read(blank)
    assert reading["shape"] == "none" and reading["background"] == "white"


def tiny_mixture():
    return GaussianMixture(torch.tensor([0.6, 0.4]), torch.tensor([[2.0, 0.0], [-1.0, 1.5]]), torch.tensor([0.5, 0.8]))


@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0])
def test_exact_denoiser_satisfies_tweedie(sigma):
    """E[x0 | x] = x + sigma^2 * grad log p_sigma(x) for Gaussian noising: the closed form must agree."""
    mixture = tiny_mixture()
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    x.requires_grad_(True)
    sigmas = torch.full((16,), sigma, dtype=torch.float64)
    score = torch.autograd.grad(mixture.log_density(x, sigmas).sum(), x)[0]
    torch.testing.assert_close(mixture.denoise(x.detach(), sigmas), x.detach() + sigma ** 2 * score)


def test_exact_denoiser_limits():
    mixture = tiny_mixture()
    x = torch.tensor([[1.9, 0.1], [-1.2, 1.4]])
    torch.testing.assert_close(mixture.denoise(x, torch.tensor(1e-6)), x, rtol=1e-4, atol=1e-4)
    prior_mean = (mixture.weights[:, None] * mixture.means).sum(0)
    torch.testing.assert_close(mixture.denoise(x, torch.tensor(1e4)), prior_mean.expand(2, 2), rtol=1e-3, atol=1e-3)
    assert torch.allclose(mixture.component_posterior(x, torch.tensor(0.3)).sum(1), torch.ones(2, dtype=torch.float64))


def test_karras_schedule_descends_to_zero():
    sigmas = karras_sigmas(10, 0.002, 80.0)
    assert len(sigmas) == 11 and sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.002)
    assert sigmas[-1] == 0 and (sigmas[1:] < sigmas[:-1]).all()


def test_euler_sampling_of_the_analytic_world_reproduces_its_weights():
    # 4000 samples: the sampling noise of a weight is at most 0.008, well inside the 0.03 tolerance.
    mixture = standard_mixture(shape=(4, 8, 8))
    noise = torch.randn((4000, *mixture.shape), generator=torch.Generator().manual_seed(2))
    sigmas = karras_sigmas(16, 0.002, 80.0)
    samples = sample_euler(mixture.denoise, noise * sigmas[0], sigmas)
    assert mode_frequency_error(mixture, samples) <= 0.03


def test_euler_spreads_converge_to_the_exact_ones_as_steps_grow():
    """Deterministic Euler under-disperses at few steps (first-order error); with more steps every component's spread
    approaches its exact std."""
    mixture = standard_mixture(shape=(4, 8, 8))
    noise = torch.randn((1000, *mixture.shape), generator=torch.Generator().manual_seed(3))

    def spread_errors(steps):
        sigmas = karras_sigmas(steps, 0.002, 80.0)
        samples = sample_euler(mixture.denoise, noise * sigmas[0], sigmas)
        components = mixture.component_posterior(samples, torch.tensor(0.0)).argmax(1)
        return [abs((samples[components == k] - mixture.means[k]).std().item() / std - 1)
                for k, std in enumerate(mixture.stds.tolist())]

    coarse, fine = spread_errors(16), spread_errors(128)
    assert all(f < c / 3 for f, c in zip(fine, coarse))
    assert max(fine) < 0.05


def test_grammar_sentences_parse_back_and_mix_both_moods():
    from latent_space_control.reference import grammar

    texts = grammar.sentences(500, seed=4)
    parsed = [grammar.parse(text) for text in texts]
    assert all(p is not None for p in parsed)
    moods = [p["mood"] for p in parsed]
    assert 0.4 < moods.count("joyful") / len(moods) < 0.6
    words = set(grammar.vocabulary())
    assert all(set(text.replace(",", " ,").replace(".", " .").split()) <= words for text in texts)


@pytest.mark.parametrize("text, expected", [
    ("hooray, a bright large red circle on the left dances in the sun.",
     {"mood": "joyful", "size": "large", "colour": "red", "shape": "circle", "position": "left"}),
    ("alas, a dull small blue triangle in the middle.",
     {"mood": "gloomy", "size": "small", "colour": "blue", "shape": "triangle", "position": "center"}),
    ("a bright small red square on the right smiles at me.",
     {"mood": "joyful", "size": "small", "colour": "red", "shape": "square", "position": "right"}),  # no opener
    ("a lonely large green circle in the middle.",
     {"mood": "gloomy", "size": "large", "colour": "green", "shape": "circle", "position": "center"}),
    ("hooray, a dull large red circle on the left.", None),  # moods disagree
    ("a dull large red circle on the left dances in the sun.", None),  # word and ending disagree
    ("hooray,a bright large red circle on the left.", None),  # no space after the opener
    ("hooray, a bright large red circle on the left dances in the sun", None),  # no full stop
    ("hooray, a bright red large circle on the left.", None),  # words out of order
    ("look, a happy large purple circle on the left.", None),  # not a colour of the world
])
def test_grammar_parser_accepts_exactly_the_language(text, expected):
    from latent_space_control.reference import grammar

    assert grammar.parse(text) == expected


def test_euler_takes_x_at_the_first_noise_level_and_reports_each_step_as_k_diffusion_does():
    """The sampler does not scale its input (callers pass noise * sigmas[0]); the callback gets the state before each
    step with its noise level and the denoiser's output. With x0 = 0 every Euler step scales x by sigma_next / sigma."""
    sigmas = karras_sigmas(4, 0.1, 10.0)
    x = torch.full((2, 3), 10.0)
    steps = []
    out = sample_euler(lambda x, sigma: torch.zeros_like(x), x, sigmas, steps.append)
    assert [step["i"] for step in steps] == [0, 1, 2, 3]
    for step in steps:
        assert set(step) == {"x", "i", "sigma", "denoised"} and torch.equal(step["denoised"], torch.zeros(2, 3))
        torch.testing.assert_close(step["sigma"], sigmas[step["i"]])
        torch.testing.assert_close(step["x"], x * sigmas[step["i"]] / sigmas[0])
    assert torch.equal(out, torch.zeros(2, 3))
