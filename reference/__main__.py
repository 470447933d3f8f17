"""``python -m reference`` (``make reference``): train the reference on the named recipes and write
``reference/results/``: ``results.json`` (accuracy, epochs, seconds, device, versions, git
revision, the history) and, per recipe, the curves and the first block's attention map as PNG.

Results of recipes not trained in this run are kept, so a run on one dataset loses nothing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

import torch

from .configs import ALL_RECIPES, SHEET_RECIPES, Recipe, get_recipe
from .data import DataFormatError, DataNotFoundError, load_dataset, resolve_data_dir
from .plotting import plot_attention_map, plot_history
from .devices import describe_device, device_argument
from .training import resolve_device, train

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def git_revision() -> str:
    """The commit of the code that ran, with ``-dirty`` when it has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "reference", ":!reference/results"],
                               cwd=root, capture_output=True, text=True).stdout.strip()  # results are outputs
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def run_recipe(recipe: Recipe, data_dir: str | None, device: str, seed: int, out_dir: Path, download: bool = False) -> dict:
    """Train the reference on one recipe for its whole budget; save its figures; return its record."""
    data = load_dataset(recipe.dataset, data_dir, download)
    torch.manual_seed(seed)
    model = recipe.model.build()
    history = train(model, data, recipe.train, device=device, seed=seed)
    image = data.normalized_test_image(0, resolve_device(device))
    plot_history(history, f"reference ViT, {recipe.name}", out_dir / f"{recipe.name}_curves.png")
    plot_attention_map(model, image, data.mean, data.std, f"reference ViT, {recipe.name}: test image 0",
                       out_dir / f"{recipe.name}_attention.png")
    return {
        "recipe": recipe.name,
        "dataset": recipe.dataset,
        "final_accuracy": history.final_accuracy,
        "best_accuracy": max(history.test_accuracy, default=0.0),
        "epochs": history.epochs,
        "seconds": round(history.seconds, 2),
        "seconds_to_threshold": {f"{t:.2f}": history.seconds_to(t) for t in recipe.thresholds},
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": seed,
        "device": describe_device(device),
        "torch": torch.__version__,
        "git_revision": git_revision(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "history": history.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=[n for n in ALL_RECIPES if n not in SHEET_RECIPES],
                        choices=list(ALL_RECIPES),
                        help="default: the kit's (the GPU recipes and the CPU recipes, each on --device); the seed "
                             "sheets' models only when named")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $VITKIT_DATA, else ./data)")
    parser.add_argument("--device", default="auto", type=device_argument, help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--download", action="store_true", help="download missing data with torchvision")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    print(f"data: {resolve_data_dir(args.data_dir)}   device: {describe_device(args.device)}", file=sys.stderr)
    for name in args.recipes:
        recipe = get_recipe(name)
        try:
            record = run_recipe(recipe, args.data_dir, args.device, args.seed, args.out, args.download)
        except (DataNotFoundError, DataFormatError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        results[name] = record
        results_path.write_text(json.dumps(results, indent=2) + "\n")  # after each recipe: nothing lost
        print(f"{name}: {100 * record['final_accuracy']:.2f}% after {record['epochs']} epochs, "
              f"{record['seconds']:.1f} s of training -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
