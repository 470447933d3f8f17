"""The one training function of the kit, used by the notebooks, ``make reference`` and the grader.

It knows nothing about the model it trains beyond ``model(images) -> logits``. The whole dataset
sits on the device as uint8; batches are normalised and augmented there. AdamW with a linear
warm-up, then cosine decay (or constant, then a linear fall: ``schedule``), label smoothing, an
optional moving average of the weights that evaluations measure (``ema``), bf16 autocast where
the hardware computes in bf16 (CUDA; CPUs with AVX512-BF16 or AMX, where it halves the step time).
It returns a ``History`` and prints nothing, except a progress bar when asked (by default: when
stderr is a terminal).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import ImageDataset


AUGMENTS = ("none", "flip", "crop_flip")
SCHEDULES = ("cosine", "trapezoid")


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every field has a default that works for the kit's small ViTs."""

    epochs: int = 10  # the budget: training never runs longer than this
    batch_size: int = 256  # large enough to keep a GPU busy, small enough for many steps per epoch
    lr: float = 2e-3  # peak AdamW learning rate, reached after the warm-up
    weight_decay: float = 0.05  # on weight matrices only; norms, biases and embeddings are not decayed
    warmup_epochs: float = 1.0  # linear warm-up: attention is unstable at a high lr from random init
    label_smoothing: float = 0.1  # a cheap regulariser that helps small ViTs generalise
    augment: str = "none"  # "none", "flip" (horizontal) or "crop_flip" (random 4-pixel-padded crop, then flip)
    # After the warm-up: "cosine" from the peak to zero at the last step, or "trapezoid": the peak
    # until the last ``cooldown`` share of the steps, then a straight line to zero. On a short
    # budget the trapezoid learns longer at the peak and gains more in its fall (cifar10-cpu).
    schedule: str = "cosine"
    cooldown: float = 0.25
    # Evaluate (and end with) an exponential moving average of the weights with this decay instead of
    # the last step's weights; 0 = off. Early on it averages about the last tenth of the steps (decay
    # (1 + t) / (10 + t) after t steps, at most ``ema``). It leaves the training itself unchanged and
    # on a short budget is about an epoch ahead of the weights it averages (cifar10-cpu).
    ema: float = 0.0
    autocast: bool = True  # bf16 autocast where the hardware has bf16 (see ``bf16_native``), else ignored
    evals_per_epoch: int = 1  # test-set evaluations per epoch: more find the target sooner, each costs a pass
    eval_batch_size: int = 1000  # evaluation batches: memory only, no effect on results


@dataclass
class History:
    """What a training run measured, one entry per evaluation (``evals_per_epoch`` per epoch);
    plain data, ready for JSON."""

    epoch: list[float] = field(default_factory=list)  # epochs trained at each evaluation (0.5 = half an epoch)
    test_accuracy: list[float] = field(default_factory=list)  # on the test split, at each evaluation
    train_loss: list[float] = field(default_factory=list)  # mean training loss since the previous evaluation
    train_seconds: list[float] = field(default_factory=list)  # training time since the previous evaluation
    eval_seconds: list[float] = field(default_factory=list)  # time each evaluation took
    step_loss: list[float] = field(default_factory=list)  # training loss of every step
    stop_reason: str = ""  # "target reached", "budget", "time limit", "nan loss"
    device: str = ""

    @property
    def epochs(self) -> float:
        """Epochs trained (fractional when the run stopped inside an epoch)."""
        return self.epoch[-1] if self.epoch else 0.0

    @property
    def seconds(self) -> float:
        """Total training time, evaluation excluded."""
        return float(sum(self.train_seconds))

    @property
    def final_accuracy(self) -> float:
        return self.test_accuracy[-1] if self.test_accuracy else 0.0

    def seconds_to(self, accuracy: float) -> float | None:
        """Training seconds until the first evaluation at or above ``accuracy`` (None if never)."""
        for i, acc in enumerate(self.test_accuracy):
            if acc >= accuracy:
                return float(sum(self.train_seconds[: i + 1]))
        return None

    def to_dict(self) -> dict:
        return {**asdict(self), "epochs": self.epochs, "seconds": self.seconds}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else the CPU. A ValueError that says what to
    do for a name torch does not know or a GPU this machine does not have."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {str(device)!r}: use auto, cpu or cuda") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r}: this machine has no CUDA GPU that torch "
                             f"{torch.__version__} can use; use cpu or auto")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s)")
    return resolved


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices natively: CUDA, or a CPU with AVX512-BF16 or AMX.
    Elsewhere bf16 is emulated and slower than float32, so autocast stays off."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    return cpu_has("_is_avx512_bf16_supported") or cpu_has("_is_amx_tile_supported")


def cpu_has(probe: str) -> bool:
    """torch's answer to ``torch.cpu.<probe>()``, e.g. ``"_is_amx_tile_supported"``; False where this
    torch lacks the probe (they are private and come and go between versions)."""
    return bool(getattr(torch.cpu, probe, lambda: False)())


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and bf16_native(device))


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (B, C, H, W) -> float (B, C, H, W), standardised per channel."""
    return (images.float().div_(255) - mean) / std


def random_crop(images: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """A random crop of each image after zero padding, same size as the input; (B, C, H, W)."""
    B, C, H, W = images.shape
    padded = F.pad(images, (padding,) * 4)  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * padding + 1, (B, 1), device=images.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (B, 1), device=images.device, generator=generator)
    rows = (dy + torch.arange(H, device=images.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx + torch.arange(W, device=images.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(B, device=images.device)[:, None, None, None]
    chans = torch.arange(C, device=images.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image left-right with probability 1/2; (B, C, H, W)."""
    flip = torch.rand(images.size(0), device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Decay weight matrices only: decaying norms, biases, tokens and embeddings hurts small ViTs.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() == 2]
    rest = [p for p in params if p.dim() != 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _lr_factor(step: int, warmup: int, total: int, schedule: str, cooldown: float) -> float:
    """The learning rate at ``step`` (0-based) of ``total``, as a share of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "trapezoid":
        return max(0.0, min(1.0, (total - step) / max(1.0, cooldown * total)))
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(
    model: nn.Module, images: Tensor, labels: Tensor, mean: Tensor, std: Tensor,
    batch_size: int = 1000, autocast: bool = True,
) -> float:
    """Accuracy of ``model`` on uint8 ``images`` already on the model's device."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for i in range(0, len(images), batch_size):
        with _autocast(images.device, autocast):
            logits = model(normalize(images[i:i + batch_size], mean, std))
        correct += (logits.argmax(-1) == labels[i:i + batch_size]).sum()
    model.train(was_training)
    return correct.item() / max(1, len(images))


def train(
    model: nn.Module,
    data: ImageDataset,
    config: TrainConfig = TrainConfig(),
    *,
    device: str | torch.device | None = None,
    target_accuracy: float | None = None,
    time_limit: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
    on_evaluation: Callable[[History], None] | None = None,
    evaluator: Callable[[nn.Module], float] | None = None,
) -> History:
    """Train ``model`` on ``data`` and return what was measured.

    Args:
        model: any module mapping normalised images (B, C, H, W) to logits (B, num_classes).
        data: the dataset; moved to ``device`` whole, as uint8.
        config: the recipe and the budget in epochs.
        device: "auto" (default), "cpu", "cuda", ...
        target_accuracy: stop at the first evaluation whose test accuracy reaches it.
        time_limit: stop once this many seconds of training have passed, after one more
            evaluation (taken then, inside the epoch if need be).
        seed: seeds the initial shuffle and augmentation (not the model's initialisation).
        progress: show a progress bar; None = only when stderr is a terminal.
        on_evaluation: called with the history so far after every evaluation; after the last
            one, ``stop_reason`` is set.
        evaluator: measures the model's test accuracy instead of ``data``'s test split (the
            grader measures it in another process, which alone holds the labels).
    """
    if config.augment not in AUGMENTS:
        raise ValueError(f"unknown augment {config.augment!r}; choose one of {', '.join(AUGMENTS)}")
    if config.schedule not in SCHEDULES or not 0 < config.cooldown <= 1:
        raise ValueError(f"unknown schedule {config.schedule!r} or cooldown {config.cooldown} (choose one of "
                         f"{', '.join(SCHEDULES)}; a cooldown share in (0, 1])")
    if not 0 <= config.ema < 1:
        raise ValueError(f"ema must be in [0, 1) (0 = off), got {config.ema}")
    device = resolve_device(device)
    model.to(device).train()
    history = History(device=str(device))
    generator = torch.Generator(device=device).manual_seed(seed)

    # The whole dataset on the device, as uint8: no loader, no host-device copies per step.
    train_x, train_y = data.train_images.to(device), data.train_labels.to(device)
    mean, std = data.stats(device)
    if evaluator is None:
        test_x, test_y = data.test_images.to(device), data.test_labels.to(device)
        evaluator = lambda m: evaluate(m, test_x, test_y, mean, std, config.eval_batch_size, config.autocast)  # noqa: E731

    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, warmup_steps, total_steps, config.schedule, config.cooldown))
    average = WeightAverage(model, config.ema) if config.ema else None
    show = sys.stderr.isatty() if progress is None else progress

    # Evaluation points inside each epoch, as step counts: e.g. 4 per epoch -> after 1/4, 1/2, ...
    evals = max(1, min(config.evals_per_epoch, steps_per_epoch))
    eval_after = {round(steps_per_epoch * (i + 1) / evals) for i in range(evals)}
    done = False
    for epoch in range(config.epochs):
        bar = _progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", show)
        order = torch.randperm(len(train_x), device=device, generator=generator)
        losses = torch.zeros(steps_per_epoch, device=device)
        first = 0  # first step since the previous evaluation
        _sync(device)
        start = time.perf_counter()
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            images = train_x[idx]
            if config.augment == "crop_flip":
                images = random_crop(images, 4, generator)
            if config.augment in ("flip", "crop_flip"):
                images = random_flip(images, generator)
            with _autocast(device, config.autocast):
                logits = model(normalize(images, mean, std))
            loss = F.cross_entropy(logits.float(), train_y[idx], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update()
            losses[step] = loss.detach()
            if bar is not None:
                bar.update(1)
            # Past the time limit, evaluate now rather than at the next planned evaluation, which
            # may be most of an epoch away (a CIFAR-10 epoch takes minutes on a CPU).
            out_of_time = time_limit is not None and history.seconds + time.perf_counter() - start >= time_limit
            if step + 1 not in eval_after and not out_of_time:
                continue

            _sync(device)
            history.train_seconds.append(time.perf_counter() - start)
            tick = time.perf_counter()
            with average.swapped_in() if average is not None else contextlib.nullcontext():
                accuracy = evaluator(model)
            model.train()
            history.eval_seconds.append(time.perf_counter() - tick)
            step_losses = losses[first:step + 1].tolist()
            history.step_loss += step_losses
            history.train_loss.append(sum(step_losses) / len(step_losses))
            history.test_accuracy.append(accuracy)
            history.epoch.append(round(epoch + (step + 1) / steps_per_epoch, 4))
            if bar is not None:
                bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", acc=f"{accuracy:.4f}")

            if not all(math.isfinite(x) for x in step_losses):
                history.stop_reason = "nan loss"
            elif target_accuracy is not None and accuracy >= target_accuracy:
                history.stop_reason = "target reached"
            elif time_limit is not None and history.seconds >= time_limit:
                history.stop_reason = "time limit"
            if step + 1 == steps_per_epoch and epoch + 1 == config.epochs and not history.stop_reason:
                history.stop_reason = "budget"
            if on_evaluation is not None:
                on_evaluation(history)
            if history.stop_reason:
                done = True
                break
            first = step + 1
            _sync(device)
            start = time.perf_counter()
        if bar is not None:
            bar.close()
        if done:
            break
    history.stop_reason = history.stop_reason or "budget"  # also when the budget is zero epochs
    if average is not None:
        average.swap()  # the model ends with the weights its last evaluation measured
    return history


class WeightAverage:
    """An exponential moving average of a model's parameters (Polyak averaging), kept beside them.

    ``update`` after every optimiser step; ``swapped_in`` puts the average into the model for a
    while (for an evaluation) and the trained weights back after it.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.params = list(model.parameters())
        self.average = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))  # short memory while the weights move fast
        for avg, p in zip(self.average, self.params):
            avg.lerp_(p, 1 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the model's parameters and the average."""
        for avg, p in zip(self.average, self.params):
            held = p.detach().clone()
            p.copy_(avg)
            avg.copy_(held)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        self.swap()
        try:
            yield
        finally:
            self.swap()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _progress_bar(total: int, desc: str, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm  # imported lazily: no work at import time

    return tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True)
