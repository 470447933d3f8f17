"""The training function: it learns, stops when asked, reports what it measured."""
import json
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from conftest import real_data_dir
from reference.configs import ALL_RECIPES, CPU_RECIPES, RECIPES, SHEET_RECIPES, ModelConfig, get_recipe, recipes_for
from reference.data import load_mnist
from reference.devices import describe_device
from reference import training
from reference.training import TrainConfig, bf16_native, random_crop, random_flip, resolve_device, train

FAST = TrainConfig(epochs=6, batch_size=64, lr=3e-3, warmup_epochs=0.5)


def tiny_model() -> nn.Module:
    return ModelConfig(28, 7, 1, 10, d_model=32, num_layers=1, num_heads=2, d_hidden=64).build()


def test_learns_and_stops_at_the_target(mnist_dir):
    data = load_mnist(mnist_dir)
    torch.manual_seed(0)
    history = train(tiny_model(), data, FAST, device="cpu", target_accuracy=0.9)
    assert history.stop_reason == "target reached"
    assert history.final_accuracy >= 0.9 and history.epochs < FAST.epochs
    assert len(history.step_loss) == history.epochs * math.ceil(512 / 64)
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.seconds_to(0.9) == pytest.approx(history.seconds)
    json.dumps(history.to_dict())  # plain data


def test_runs_the_whole_budget_without_a_target(mnist_dir):
    data = load_mnist(mnist_dir).subset(128, 32)
    history = train(tiny_model(), data, replace(FAST, epochs=2), device="cpu")
    assert history.stop_reason == "budget" and history.epochs == 2
    assert len(history.train_seconds) == len(history.eval_seconds) == 2 and history.epoch == [1.0, 2.0]


def test_same_seed_same_run(mnist_dir):
    data = load_mnist(mnist_dir).subset(128, 32)
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        runs.append(train(tiny_model(), data, replace(FAST, epochs=1, augment="crop_flip"), device="cpu", seed=3).step_loss)
    assert runs[0] == runs[1]


class NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")


class AutocastSpy(nn.Module):
    """Records whether each forward pass ran under CPU autocast."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(28 * 28, 10)
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_on_the_cpu_only_where_it_is_native(mnist_dir, monkeypatch, native):
    # Emulated bf16 is slower than float32, so autocast follows the hardware, and the config can
    # turn it off everywhere.
    monkeypatch.setattr(training, "bf16_native", lambda device: native)
    data = load_mnist(mnist_dir).subset(64, 16)
    for enabled in (True, False):
        spy = AutocastSpy()
        history = train(spy, data, replace(FAST, epochs=1, autocast=enabled), device="cpu")
        assert spy.seen and set(spy.seen) == {native and enabled}
        assert math.isfinite(history.train_loss[-1]) and history.final_accuracy >= 0


def test_bf16_native_names_the_hardware():
    assert bf16_native(torch.device("cuda")) and not bf16_native(torch.device("meta"))
    has = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert bf16_native(torch.device("cpu")) == has


@pytest.mark.parametrize("avx512, amx, label", [(True, True, ", bf16 AMX)"), (True, False, ", bf16)"),
                                                (False, False, " threads)")])
def test_device_description_says_which_bf16_hardware_timed_it(monkeypatch, avx512, amx, label):
    # Benchmarks and results.json carry this: figures from an AMX CPU do not compare with others.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    described = describe_device("cpu")
    assert described.startswith("cpu (") and described.endswith(label)


def test_nan_loss_stops_the_run(mnist_dir):
    history = train(NaNModel(), load_mnist(mnist_dir).subset(64, 16), FAST, device="cpu")
    assert history.stop_reason == "nan loss" and history.epochs == 1


def test_time_limit_evaluates_and_stops_inside_an_epoch(mnist_dir):
    data = load_mnist(mnist_dir).subset(256, 16)  # 4 steps of 64 per epoch, one planned evaluation
    history = train(tiny_model(), data, FAST, device="cpu", time_limit=0.0)
    assert history.stop_reason == "time limit" and history.epoch == [0.25]
    assert len(history.test_accuracy) == 1 and len(history.step_loss) == 1


def test_evaluations_inside_an_epoch(mnist_dir):
    data = load_mnist(mnist_dir).subset(128, 32)  # 2 steps of 64 per epoch
    history = train(tiny_model(), data, replace(FAST, epochs=2, evals_per_epoch=2), device="cpu")
    assert history.epoch == [0.5, 1.0, 1.5, 2.0]
    assert len(history.test_accuracy) == len(history.train_loss) == len(history.train_seconds) == 4
    assert len(history.step_loss) == 4


def test_target_stops_inside_an_epoch(mnist_dir):
    history = train(tiny_model(), load_mnist(mnist_dir).subset(128, 32), replace(FAST, evals_per_epoch=2),
                    device="cpu", target_accuracy=0.0)
    assert history.stop_reason == "target reached" and history.epoch == [0.5]


def test_on_evaluation_sees_every_evaluation_and_the_stop_reason(mnist_dir):
    seen = []
    train(tiny_model(), load_mnist(mnist_dir).subset(128, 16), replace(FAST, epochs=2, evals_per_epoch=2),
          device="cpu", on_evaluation=lambda h: seen.append((h.epochs, len(h.test_accuracy), h.stop_reason)))
    assert seen == [(0.5, 1, ""), (1.0, 2, ""), (1.5, 3, ""), (2.0, 4, "budget")]


def test_a_zero_epoch_budget_trains_nothing(mnist_dir):
    history = train(tiny_model(), load_mnist(mnist_dir).subset(64, 16), replace(FAST, epochs=0), device="cpu")
    assert history.stop_reason == "budget" and history.epochs == 0 and history.test_accuracy == []


def test_devices_this_machine_lacks_are_clear_errors():
    with pytest.raises(ValueError, match="unknown device 'gpu': use auto, cpu or cuda"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    else:
        with pytest.raises(ValueError, match="CUDA GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_a_cpu_recipe_trains_the_same_exercise():
    for exercise, cpu in CPU_RECIPES.items():
        gpu = RECIPES[exercise]
        assert (cpu.dataset, cpu.thresholds) == (gpu.dataset, gpu.thresholds) and cpu.name != gpu.name
        assert get_recipe(exercise, "cpu") is cpu and get_recipe(exercise, torch.device("meta")) is gpu
        assert get_recipe(exercise) is gpu and get_recipe(cpu.name) is cpu and recipes_for(exercise)[:2] == [gpu, cpu]
    sheets = list(SHEET_RECIPES.values())
    assert get_recipe("mnist", "cpu") is RECIPES["mnist"] and recipes_for("mnist") == [RECIPES["mnist"], *sheets]
    assert set(ALL_RECIPES) == set(RECIPES) | {r.name for r in CPU_RECIPES.values()} | set(SHEET_RECIPES)


def test_the_seed_sheets_models_train_the_mnist_exercise():
    """6 layers and 8 heads, and 5 layers of width 64: patch 7, d 64, MLP 128, the exercise's data,
    thresholds and schedule; each checkpoint's parameters fit one recipe only."""
    shapes = []
    for recipe in SHEET_RECIPES.values():
        m = recipe.model
        assert (recipe.dataset, recipe.thresholds, recipe.train) == ("mnist", RECIPES["mnist"].thresholds, RECIPES["mnist"].train)
        assert (m.patch_size, m.d_model, m.d_hidden) == (7, 64, 128)
        shapes.append({k: tuple(v.shape) for k, v in m.build().state_dict().items()})
    assert [(r.model.num_layers, r.model.num_heads) for r in SHEET_RECIPES.values()] == [(6, 8), (5, 4)]
    shapes.append({k: tuple(v.shape) for k, v in RECIPES["mnist"].model.build().state_dict().items()})
    assert len({tuple(sorted(s.items())) for s in shapes}) == len(shapes)
    with pytest.raises(ValueError, match="cifar10-cpu"):
        get_recipe("cifar100")


def test_an_unknown_augmentation_is_a_clear_error(mnist_dir):
    with pytest.raises(ValueError, match="unknown augment 'crop'; choose one of none, flip, crop_flip"):
        train(tiny_model(), load_mnist(mnist_dir).subset(64, 16), replace(FAST, augment="crop"), device="cpu")


@pytest.mark.parametrize("change", [{"schedule": "step"}, {"schedule": "trapezoid", "cooldown": 0.0}])
def test_an_unknown_schedule_is_a_clear_error(mnist_dir, change):
    with pytest.raises(ValueError, match="choose one of cosine, trapezoid; a cooldown share in"):
        train(tiny_model(), load_mnist(mnist_dir).subset(64, 16), replace(FAST, **change), device="cpu")


def test_schedules_after_the_warm_up():
    lr = lambda step, schedule: training._lr_factor(step, 10, 110, schedule, cooldown=0.25)  # noqa: E731
    assert [lr(s, "cosine") for s in (0, 9)] == [lr(s, "trapezoid") for s in (0, 9)] == [0.1, 1.0]  # same warm-up
    assert lr(60, "cosine") == pytest.approx(0.5) and lr(110, "cosine") == pytest.approx(0.0)
    # trapezoid: the peak until the last quarter of the steps (82.5 of 110), then a straight line to zero
    assert [lr(s, "trapezoid") for s in (10, 50, 82)] == [1.0, 1.0, 1.0]
    assert [lr(s, "trapezoid") for s in (83, 96.25, 110)] == pytest.approx([27 / 27.5, 0.5, 0.0])


def test_train_uses_the_configured_schedule(mnist_dir, monkeypatch):
    seen = set()
    real = training._lr_factor
    monkeypatch.setattr(training, "_lr_factor", lambda *args: seen.add(args[3:]) or real(*args))
    train(tiny_model(), load_mnist(mnist_dir).subset(64, 16), replace(FAST, epochs=1, schedule="trapezoid", cooldown=0.5),
          device="cpu")
    assert seen == {("trapezoid", 0.5)}


def test_weight_average_follows_the_weights_and_swaps_in_and_out():
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    average = training.WeightAverage(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.fill_(3.0)
    average.update()  # step 1: decay min(0.5, 2 / 11) = 2/11
    expected = 1.0 + (3.0 - 1.0) * 9 / 11
    with average.swapped_in():
        assert layer.weight.flatten().tolist() == pytest.approx([expected, expected])
    assert layer.weight.tolist() == [[3.0, 3.0]]  # the trained weights are back


def test_train_measures_and_ends_with_the_averaged_weights(mnist_dir):
    data = load_mnist(mnist_dir).subset(128, 32)
    config = replace(FAST, epochs=2)
    runs = {}
    for ema in (0.0, 0.9):
        measured = []

        def evaluator(model: nn.Module) -> float:
            measured.append([p.detach().clone() for p in model.parameters()])
            return 0.5

        torch.manual_seed(0)
        model = tiny_model()
        history = train(model, data, replace(config, ema=ema), device="cpu", evaluator=evaluator)
        runs[ema] = history.step_loss, measured, [p.detach().clone() for p in model.parameters()]
    (plain_loss, plain_measured, plain_end), (ema_loss, ema_measured, ema_end) = runs[0.0], runs[0.9]
    assert ema_loss == plain_loss  # averaging leaves the training itself alone
    assert all(torch.equal(a, b) for a, b in zip(plain_measured[-1], plain_end))
    assert all(torch.equal(a, b) for a, b in zip(ema_measured[-1], ema_end))  # ends with what it measured
    assert not all(torch.allclose(a, b) for a, b in zip(ema_end, plain_end))  # ... which is the average


def test_an_ema_outside_zero_to_one_is_a_clear_error(mnist_dir):
    with pytest.raises(ValueError, match=r"ema must be in \[0, 1\)"):
        train(tiny_model(), load_mnist(mnist_dir).subset(64, 16), replace(FAST, ema=1.0), device="cpu")


def test_crop_and_flip_keep_the_pixels():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).reshape(2, 3, 8, 8)
    assert torch.equal(random_crop(images, 0), images)
    cropped = random_crop(images, 2, torch.Generator().manual_seed(0))
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    for orig, out in zip(images, flipped):
        assert torch.equal(out, orig) or torch.equal(out, orig.flip(-1))


def test_recipes_build_their_models():
    for recipe in RECIPES.values():
        model = recipe.model.build()
        C = recipe.model.in_channels
        S = recipe.model.image_size
        assert model(torch.zeros(2, C, S, S)).shape == (2, recipe.model.num_classes)
        assert recipe.target_accuracy == max(recipe.thresholds)


REAL = real_data_dir()


@pytest.mark.slow
@pytest.mark.skipif(REAL is None, reason="real data absent: set VITKIT_DATA (CI: ../shared/data)")
def test_mnist_recipe_reaches_its_target_on_the_cpu():
    recipe = get_recipe("mnist")
    torch.manual_seed(0)
    history = train(recipe.model.build(), load_mnist(REAL), recipe.train, device="cpu",
                    target_accuracy=recipe.target_accuracy)
    assert history.final_accuracy >= recipe.target_accuracy, history.test_accuracy


class InputSpy(nn.Module):
    """The tiny model, keeping every training batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.seen = tiny_model(), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return self.inner(x)


def test_flip_mirrors_some_images_and_changes_nothing_else(mnist_dir):
    data = load_mnist(mnist_dir).subset(64, 16)  # one batch of 64
    seen = {}
    for augment in ("none", "flip"):
        spy = InputSpy()
        train(spy, data, replace(FAST, epochs=1, augment=augment), device="cpu", seed=0)
        seen[augment] = torch.cat(spy.seen)  # (64, 1, 28, 28)
    plain, augmented = seen["none"], seen["flip"]
    mirrored = 0
    for image in augmented:
        same = bool((plain == image).flatten(1).all(1).any())
        mirror = bool((plain.flip(-1) == image).flatten(1).all(1).any())
        assert same or mirror, "an image that is neither a training image nor its mirror"
        mirrored += mirror and not same
    assert 0 < mirrored < len(augmented)
