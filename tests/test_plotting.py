"""Figures render headless and save as PNG."""
import torch

from reference.configs import ModelConfig
from reference.data import MNIST_STATS
from reference.plotting import class_token_attention, plot_attention_heads, plot_attention_map, plot_history
from reference.training import History

PNG = b"\x89PNG"


def test_history_plot(tmp_path):
    history = History(epoch=[0.5, 1.0], train_loss=[2.0, 1.0], step_loss=[2.2, 1.8, 1.1, 0.9],
                      test_accuracy=[0.5, 0.8], train_seconds=[1.0, 1.0], eval_seconds=[0.1, 0.1])
    fig = plot_history(history, "t", tmp_path / "curves.png")
    assert len(fig.axes) == 2
    assert (tmp_path / "curves.png").read_bytes()[:4] == PNG


def test_history_plot_draws_the_thresholds_and_the_reference():
    run = History(epoch=[1.0, 2.0], train_loss=[2.0, 1.0], step_loss=[2.0, 1.0], test_accuracy=[0.5, 0.8],
                  train_seconds=[1.0, 1.0], eval_seconds=[0.1, 0.1])
    reference = History(epoch=[1.0, 2.0, 3.0], train_loss=[1.0] * 3, step_loss=[1.0] * 3, test_accuracy=[0.9, 0.95, 0.97],
                        train_seconds=[1.0] * 3, eval_seconds=[0.1] * 3)
    accuracy = plot_history(run, thresholds=(0.25, 0.7), reference=reference).axes[1]
    lines = {line.get_label(): list(line.get_ydata()) for line in accuracy.get_lines()}
    assert lines["this run"] == [50.0, 80.0] and lines["reference"] == [90.0, 95.0, 97.0]
    assert sorted(line.get_ydata()[0] for line in accuracy.get_lines() if line.get_linestyle() == "--") == [25.0, 70.0]


def test_attention_plots(tmp_path):
    model = ModelConfig(28, 7, 1, 10, d_model=16, num_layers=2, num_heads=2, d_hidden=32).build()
    model.train()
    image = torch.randn(1, 28, 28)
    grid = class_token_attention(model, image)
    assert grid.shape == (4, 4) and 0 < grid.sum() <= 1 + 1e-6
    plot_attention_map(model, image, *MNIST_STATS, path=tmp_path / "attention.png")
    plot_attention_heads(model, image, tmp_path / "heads.png")
    assert (tmp_path / "attention.png").read_bytes()[:4] == PNG
    assert (tmp_path / "heads.png").read_bytes()[:4] == PNG
    assert model.training  # left as it was
    fig = plot_attention_map(model, image, *MNIST_STATS, title="a title")
    fig.canvas.draw()
    ticks = [t for ax in fig.axes[2:3] for t in (*ax.get_xticks(), *ax.get_yticks()) if 0 <= t <= 16]
    assert ticks and all(float(t).is_integer() for t in ticks)  # token indices, not 2.5
    boxes = [ax.get_tightbbox() for ax in fig.axes[:3]]  # titles included: side by side, not overlapping
    assert all(a.x1 <= b.x0 + 1 for a, b in zip(boxes, boxes[1:]))
