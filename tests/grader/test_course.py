"""The course file: one TOML file the instructor edits, read by make grade, make autograder and
make handout; the shipped one is the kit's defaults written out, and a mistake in any file is
said whole before anything is graded or built."""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

from course import autograder, handout
from grader.__main__ import main as grader_main
from grader.checks import CHECKS
from grader.course import COURSE_FILE, TRAINING, Course, CourseError, read_course
from grader.grade import TRAINING_CHOICES, GradeOptions, grade_submission
from grader.rubric import read_rubric
from reference.configs import get_recipe

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import make_mnist_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / COURSE_FILE


def course_file(tmp_path: Path, text: str, name: str = "course.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_shipped_course_file_is_the_kits_defaults():
    course = read_course(SHIPPED)
    assert read_rubric(None, SHIPPED) == read_rubric()
    assert (course.training, course.gradescope_guard, course.guards) == ("mnist", 240, {})
    assert Course().gradescope_guard == 240  # no file: the same
    assert set(TRAINING) == set(TRAINING_CHOICES)


def test_every_mistake_of_a_course_file_is_said_at_once(tmp_path):
    bad = course_file(tmp_path, '[grading]\ntraining = "cifar"\nspeed = 2\n[guards]\nimagenet = 60\nmnist = -1\n'
                                '[extras]\nx = 1\n')
    with pytest.raises(CourseError) as said:
        read_course(bad)
    for part in ("grading.training must be one of", "unknown setting grading.speed", "guards.imagenet: no such recipe",
                 "guards.mnist must be a number of seconds > 0", "unknown section [extras]"):
        assert part in str(said.value)
    with pytest.raises(CourseError, match="not valid TOML"):
        read_course(course_file(tmp_path, "[grading\n"))
    with pytest.raises(CourseError, match="cannot read the course file"):
        read_course(tmp_path / "missing.toml")
    wrong_check = course_file(tmp_path, '[checks]\n"vit:nothing" = 2\n"vit:forward" = { points = 1, visibility = "never" }\n')
    with pytest.raises(ValueError, match="unknown checks: vit:nothing.*visibility must be one of"):
        read_course(wrong_check)


def test_a_course_trains_an_exercise_with_another_recipe_and_budget(tmp_path):
    course = course_file(tmp_path, '[recipes]\nmnist = { recipe = "mnist-sheet-6x8", epochs = 3 }\n')
    recipe = GradeOptions(course=str(course)).recipe_for("mnist")
    assert (recipe.name, recipe.model.num_layers, recipe.model.num_heads, recipe.train.epochs) == ("mnist-sheet-6x8", 6, 8, 3)
    assert GradeOptions(device="cpu").recipe_for("cifar10").name == "cifar10-cpu"  # no course: the kit's, per device
    bad = course_file(tmp_path, '[recipes]\nmnist = "cifar10-cpu"\ncifar100 = "mnist"\n'
                                'cifar10 = { recipe = "cifar10", epochs = 0 }\n', "bad.toml")
    with pytest.raises(CourseError) as said:
        read_course(bad)
    for part in ("recipes.mnist: cifar10-cpu trains on other data", "recipes.cifar100: no such exercise",
                 "recipes.cifar10.epochs must be a number > 0"):
        assert part in str(said.value)


def test_a_course_sets_an_exercises_thresholds_which_name_its_checks(tmp_path):
    course = course_file(tmp_path, '[recipes]\nmnist = { thresholds = [0.9, 0.95] }\n'
                                   'cifar10 = { recipe = "cifar10", thresholds = [0.3, 0.6] }\n'
                                   '[checks]\n"training_mnist:95%" = { points = 3, visibility = "after_due_date" }\n')
    points, visibility = read_rubric(None, course)
    assert [n for n in points if n.startswith("training_")] == ["training_mnist:90%", "training_mnist:95%",
                                                                 "training_cifar10:30%", "training_cifar10:60%"]
    assert (points["training_mnist:90%"], points["training_mnist:95%"], visibility["training_mnist:95%"]) == \
        (2.0, 3.0, "after_due_date")
    assert GradeOptions(course=str(course), device="cpu").recipe_for("mnist").thresholds == (0.9, 0.95)
    cifar = GradeOptions(course=str(course), device="cpu").recipe_for("cifar10")
    assert (cifar.name, cifar.thresholds) == ("cifar10", (0.3, 0.6))  # the course named the GPU recipe
    thresholds_only = course_file(tmp_path, '[recipes]\ncifar10 = { thresholds = [0.5] }\n', "only.toml")
    assert GradeOptions(course=str(thresholds_only), device="cpu").recipe_for("cifar10").name == "cifar10-cpu"
    bad = course_file(tmp_path, '[recipes]\nmnist = { thresholds = [0.94, 0.9] }\ncifar10 = { thresholds = [0.501, 0.504] }\n'
                                '[checks]\n"training_mnist:94%" = 1\n', "bad.toml")
    with pytest.raises(CourseError) as said:
        read_course(bad)
    assert "recipes.mnist.thresholds must be increasing" in str(said.value)
    assert "recipes.cifar10.thresholds must be increasing" in str(said.value)  # two checks named 50%
    unknown = course_file(tmp_path, '[recipes]\nmnist = { thresholds = [0.9] }\n[checks]\n"training_mnist:94%" = 1\n', "u.toml")
    with pytest.raises(ValueError, match="unknown checks: training_mnist:94%"):
        read_course(unknown)


def test_grading_trains_the_courses_recipe(tmp_path):
    course = course_file(tmp_path, '[recipes]\nmnist = { recipe = "mnist-sheet-5x64", thresholds = [0.05, 0.94] }\n')
    data = make_mnist_dir(tmp_path / "data", 256, 64)
    options = GradeOptions(training="mnist", device="cpu", data_dir=str(data), time_limit=0.0, course=str(course))
    grade = grade_submission(REPO / "reference", tmp_path / "work", options)
    run = grade.training[0]
    assert (run.recipe, run.config) == ("mnist", "mnist-sheet-5x64") and run.measured
    assert [r.name for r in grade.results if r.component == "training_mnist"] == ["training_mnist:5%", "training_mnist:94%"]
    assert grade.max_score == 20 + 2 * 2  # the course's two thresholds, 2 points each
    assert run.attention is not None and tuple(run.attention.shape) == (4, 17, 17)


def test_grading_follows_the_course_file_and_the_command_line_wins(tmp_path, capsys):
    course = course_file(tmp_path, '[grading]\ntraining = "none"\n[guards]\nmnist = 1234\n'
                                   '[checks]\n"attention:function_shapes" = { points = 3, visibility = "hidden" }\n')
    out = tmp_path / "out"
    assert grader_main([str(REPO / "reference"), "--course", str(course), "--out", str(out)]) == 0
    results = json.loads((out / "reference" / "results.json").read_text())
    shapes = next(t for t in results["tests"] if t["name"] == "attention:function_shapes")
    assert (shapes["max_score"], shapes["visibility"]) == (3.0, "hidden")
    more = 3 - CHECKS["attention:function_shapes"].points
    assert results["score"] == 20 + more and not any(t["name"].startswith("training_") for t in results["tests"])  # none trained
    assert GradeOptions(course=str(course)).limit_for(get_recipe("mnist")) == 1234
    assert GradeOptions(course=str(course), time_limit=5).limit_for(get_recipe("mnist")) == 5
    bad = course_file(tmp_path, '[grading]\ntraining = "all of it"\n', "bad.toml")
    assert grader_main([str(REPO / "reference"), "--course", str(bad), "--out", str(out)]) == 2
    assert "grading.training must be one of" in capsys.readouterr().err


def test_the_gradescope_bundle_grades_with_the_course_file(tmp_path):
    data = str(make_mnist_dir(tmp_path / "data", 64, 16))
    course = course_file(tmp_path, '[grading]\ntraining = "none"\ngradescope_timeout_minutes = 20\n')
    root = autograder.stage(tmp_path / "bundle", "torch==2.13.0", data, course=course)
    assert (root / COURSE_FILE).read_text() == course.read_text()
    run = (root / "run_autograder").read_text()
    assert '--training "${VITKIT_TRAINING:-none}"' in run and "guard (480 s" in run  # 40 % of 20 minutes
    with pytest.raises(autograder.BundleError, match="cannot run on Gradescope's CPUs"):
        autograder.stage(tmp_path / "b2", "torch==2.13.0", data, course=course, training="all")
    with pytest.raises(autograder.BundleError, match="unknown section"):
        autograder.stage(tmp_path / "b3", "torch==2.13.0", data, course=course_file(tmp_path, "[nope]\n", "nope.toml"))


def test_the_handout_says_how_the_course_grades(tmp_path):
    course = course_file(tmp_path, '[grading]\ntraining = "checkpoint"\n[checks]\n"attention:function_shapes" = 3\n')
    archive = handout.build(tmp_path / "dist", "torch==2.13.0", course=course)
    with zipfile.ZipFile(archive) as zf:
        readme = zf.read(f"{handout.ASSIGNMENT}/README.md").decode()
    section = readme[readme.index("## How it is graded"):]
    more = 3 - CHECKS["attention:function_shapes"].points
    assert f"| attention | {4 + more:g} |" in section  # the table's 4 and what this course adds
    assert "the weights you submit (at 94 %)" in section and "(at 25 %, 50 %, 70 %)" in section
    own = course_file(tmp_path, '[recipes]\nmnist = { recipe = "mnist-sheet-6x8", epochs = 3, thresholds = [0.9, 0.95] }\n',
                      "own.toml")
    assert "(at 90 %, 95 %)" in handout.grading_section(own) and "Total: 24 points" in handout.grading_section(own)
    with zipfile.ZipFile(handout.build(tmp_path / "own", "torch==2.13.0", course=own)) as zf:  # its notebook trains them
        notebook = zf.read(f"{handout.ASSIGNMENT}/student_template/vision_transformer.ipynb").decode()
    assert "get_recipe('mnist-sheet-6x8')" in notebook and "epochs=3" in notebook and "MNIST 90%, 95%" in notebook
    assert f"Total: {28 + more:g} points" in section  # 20 + MNIST's 2 + CIFAR-10's 6 (checkpoint grades both)
    with pytest.raises(handout.HandoutError, match="unknown section"):
        handout.build(tmp_path / "dist", "torch==2.13.0", course=course_file(tmp_path, "[nope]\n", "nope.toml"))
