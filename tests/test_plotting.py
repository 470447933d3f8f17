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
