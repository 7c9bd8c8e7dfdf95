"""FairFace beside UTKFace: the loader, partial-label losses, 7-race answers, mixed training."""
import json
from pathlib import Path

import numpy as np
import pytest

from face.crops import margin_box
from face.data import FAIRFACE_RACES, RACES, DatasetError, load_fairface, load_named, parse_data_spec
from face.errors import DatasetError as HowoldDatasetError
from face.evaluation import compute_metrics, evaluate_folder
from face.features import StackedArrays, AugmentConfig, cache_folder
from face.heads import age_loss, age_targets, race_set_loss, race_set_targets, set_accuracy
from face.readout import interpret, race5_probabilities
from face.training import TrainConfig, train

from conftest import FAIRFACE_HEADER


def test_fairface_layout_gives_bins_and_seven_races(tiny_fairface):
    dataset = load_fairface(tiny_fairface)
    assert len(dataset) == 16 and dataset.kind == "fairface" and dataset.loose_crops
    labels = dataset.labels()
    assert (labels["age"] == -1).all()
    assert labels["age_bin"][:3].tolist() == [1, 2, 3]  # rows 1-3: 3-9, 10-19, 20-29
    assert labels["race7"][:3].tolist() == [1, 2, 3]  # Black, East Asian, Southeast Asian
    assert labels["race"][:3].tolist() == [1, 2, 2]  # UTKFace's Black, Asian, Asian
    assert parse_data_spec(tiny_fairface) == ("fairface", tiny_fairface)
    assert parse_data_spec(f"utkface={tiny_fairface}")[0] == "utkface"
    assert load_named("fairface", tiny_fairface / "fairface_label_train.csv", limit=5).faces[4].race7 == 5


@pytest.mark.parametrize(
    "row, problem",
    [
        ("train/1.jpg,25-30,Male,White,True", "unknown age bin '25-30'"),
        ("train/1.jpg,20-29,Robot,White,True", "unknown gender 'Robot'"),
        ("train/1.jpg,20-29,Male,Purple,True", "unknown race 'Purple'"),
        ("train/99.jpg,20-29,Male,White,True", "image 'train/99.jpg' not found"),
    ],
)
def test_malformed_fairface_rows_are_one_line_errors(tiny_fairface, row, problem):
    csv = tiny_fairface / "fairface_label_train.csv"
    csv.write_text(FAIRFACE_HEADER + "train/2.jpg,3-9,Female,Black,False\n" + row + "\n")
    with pytest.raises(DatasetError, match=rf"fairface_label_train.csv:3: {problem}"):
        load_fairface(tiny_fairface)
    assert DatasetError is HowoldDatasetError


def test_fairface_without_its_columns_or_csv_is_an_error(tmp_path, tiny_fairface):
    (tiny_fairface / "fairface_label_train.csv").write_text("name,age\ntrain/1.jpg,3-9\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_fairface(tiny_fairface)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no FairFace label CSV"):
        load_fairface(tmp_path / "empty")
    with pytest.raises(DatasetError, match="unknown dataset 'celeba'"):
        parse_data_spec("celeba=faces")


def test_margin_box_is_the_crop_minus_its_margin():
    assert margin_box(np.zeros((224, 224, 3), np.uint8), 0.25) == (37, 37, 187, 187)


def test_partial_race_labels_are_trained_by_the_likelihood_of_their_set():
    probabilities = np.array([[0.1, 0.1, 0.3, 0.2, 0.1, 0.1, 0.1]], np.float32)
    asian = race_set_targets(np.array([2]), np.array([-1]))  # UTKFace's Asian: {East Asian, Southeast Asian}
    assert asian.tolist() == [[0, 0, 1, 1, 0, 0, 0]]
    assert np.isclose(float(race_set_loss(0.0)(asian, probabilities)[0]), -np.log(0.5), atol=1e-6)
    indian = race_set_targets(np.array([3]), np.array([4]))
    assert np.isclose(float(race_set_loss(0.0)(indian, probabilities)[0]), -np.log(0.1), atol=1e-6)
    # FairFace's own race, where known, not the set of UTKFace's class: Southeast Asian alone
    assert race_set_targets(np.array([2]), np.array([3])).tolist() == [[0, 0, 0, 1, 0, 0, 0]]
    # heads of UTKFace's 5 races: plain one-hot labels
    assert race_set_targets(np.array([1, 3]), np.array([-1, 4]), classes=5).tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]]
    # smoothed, row by row: (1 - s) -log P(set) + s times the mean cross-entropy over the 7 classes
    rows = np.array([[0.1, 0.1, 0.3, 0.2, 0.1, 0.1, 0.1], [0.4, 0.05, 0.05, 0.1, 0.2, 0.1, 0.1]], np.float32)
    expected = [0.9 * -np.log(0.5) - 0.1 * np.log(rows[0]).mean(), 0.9 * -np.log(0.2) - 0.1 * np.log(rows[1]).mean()]
    assert np.allclose(np.asarray(race_set_loss(0.1)(np.concatenate([asian, indian]), rows)), expected, atol=1e-5)
    # the training log's race accuracy: right when the most probable race is in the label's set
    # (East Asian for the Asian label, yes; for the Indian label, no); mixed-up labels: in either
    assert np.asarray(set_accuracy(np.concatenate([asian, indian, (asian + indian) / 2]), np.repeat(probabilities, 3, axis=0))).tolist() == [1.0, 0.0, 1.0]
    indian_first = np.array([[0.1, 0.1, 0.1, 0.1, 0.3, 0.2, 0.1]], np.float32)
    assert np.asarray(set_accuracy(indian, indian_first)).tolist() == [1.0]
    # each row its own most probable race
    assert np.asarray(set_accuracy(np.concatenate([indian, indian]), np.concatenate([probabilities, indian_first]))).tolist() == [0.0, 1.0]


def test_age_bins_are_interval_labels_and_exact_ages_keep_their_loss():
    probabilities = np.full((2, 101), 1 / 101, np.float32)
    targets = age_targets(np.array([30, -1]), np.array([4, 2]), sigma=2.0)  # an exact 30; the bin 10-19
    assert targets.shape == (2, 2 * 101 + 1) and targets[:, -1].tolist() == [0, 1]  # [distribution | bin mask | is-a-bin]
    newborn = age_targets(np.array([0]), np.array([-1]), sigma=2.0)[0]  # an exact age of 0 is an age too
    assert newborn[:101].argmax() == 0 and np.isclose(newborn[:101].sum(), 1) and newborn[101:].sum() == 0
    losses = np.asarray(age_loss(0.05)(targets, probabilities))
    distribution = targets[0, :101]
    expected_exact = -np.sum(distribution * np.log(1 / 101)) + 0.05 * abs(50 - 30)
    assert np.isclose(losses[0], expected_exact, atol=1e-3)
    assert np.isclose(losses[1], -np.log(10 / 101), atol=1e-5)
    # mixup of the two rows: the mixture of their losses, row by row (a batch of three)
    skewed = np.tile(np.linspace(1, 3, 101, dtype=np.float32), (3, 1))
    skewed /= skewed.sum(axis=1, keepdims=True)
    mixed = np.concatenate([targets, targets.mean(axis=0, keepdims=True)])
    losses = np.asarray(age_loss(0.05)(mixed, skewed))
    assert losses.shape == (3,) and np.isclose(losses[2], (losses[0] + losses[1]) / 2, atol=1e-4)


def test_answers_give_both_race_views_and_they_agree():
    race7 = np.array([[0.05, 0.05, 0.3, 0.25, 0.15, 0.1, 0.1]])
    outputs = {"age": np.full((1, 101), 1 / 101), "gender": np.array([[0.3, 0.7]]), "race": race7}
    (answer,) = interpret(outputs)
    assert answer["race"] == "Asian" and answer["race_fairface"] == "East Asian"
    assert answer["race_confidences"]["Asian"] == pytest.approx(0.55) and answer["race_confidences"]["Others"] == pytest.approx(0.2)
    assert list(answer["race_fairface_confidences"]) == list(FAIRFACE_RACES)
    uneven = np.array([[0.123456, 0.1, 0.276544, 0.1, 0.1, 0.2, 0.1]])
    (rounded,) = interpret({**outputs, "race": uneven})
    assert list(rounded["race_fairface_confidences"].values()) == [0.1235, 0.1, 0.2765, 0.1, 0.1, 0.2, 0.1]  # 4 decimals, as race_confidences
    (old,) = interpret({**outputs, "race": race5_probabilities(race7)})  # heads of UTKFace's 5 races
    assert "race_fairface" not in old and old["race_confidences"] == answer["race_confidences"]


def test_stacked_arrays_index_like_one_array():
    first, second = np.arange(24).reshape(4, 3, 2), np.arange(100, 118).reshape(3, 3, 2)
    stacked, whole = StackedArrays([first, StackedArrays([second])]), np.concatenate([first, second])
    rows, views = np.array([5, 0, 3, 6, 4]), np.array([2, 1, 0, 0, 1])
    assert stacked.shape == whole.shape and np.array_equal(np.asarray(stacked), whole)
    assert np.array_equal(stacked[rows, views], whole[rows, views])
    assert np.array_equal(stacked[rows, :2], whole[rows, :2]) and np.array_equal(stacked[5, 0], whole[5, 0])
    assert stacked[np.array([], int), 0].shape == (0, 2)


def _mapped_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


def test_released_cache_pages_leave_the_process_memory(tmp_path):
    """Epoch after epoch, unfreezing reads every row of caches of several GB: released pages
    must stop counting in the process's resident memory, and reads must still be right."""
    from face.unfreezing import ActivationBatches

    values = np.random.default_rng(0).standard_normal((512, 2, 64, 256)).astype(np.float16)  # 32 MiB
    np.save(tmp_path / "chunk.npy", values)
    stacked = StackedArrays([np.load(tmp_path / "chunk.npy", mmap_mode="r")])
    before = _mapped_file_kb()
    assert float(np.abs(stacked[np.arange(512), 1]).astype(np.float32).sum()) > 0
    read = _mapped_file_kb()
    assert read - before > 24 * 1024  # the pages read are resident in the process
    stacked.release()
    assert read - _mapped_file_kb() > 24 * 1024
    rows = np.array([511, 3, 200])
    assert np.array_equal(stacked[rows, 1], values[rows, 1])
    # unfreezing's batches release them at every epoch's end
    batches = ActivationBatches(stacked, np.arange(512), {"gender": np.zeros((512, 2), np.float32)}, 128, 2, 0.0, seed=0)
    for index in range(len(batches)):
        batches[index]
    read = _mapped_file_kb()
    batches.on_epoch_end()
    assert read - _mapped_file_kb() > 12 * 1024


def test_metrics_score_bins_seven_races_and_the_under_20s():
    labels = {"age": np.array([10, -1]), "age_bin": np.array([2, 4]), "gender": np.array([0, 1]), "race": np.array([2, 4]), "race7": np.array([-1, 6])}
    age = np.zeros((2, 101))
    age[0, 12], age[1, 35] = 1, 1
    race = np.array([[0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0]], float)
    report = compute_metrics({"age": age, "gender": np.array([[1, 0], [0, 1]]), "race": race}, labels)
    assert report["age_mae"] == 2 and report["age_bin_accuracy"] == 1 and report["race_accuracy"] == 1
    assert report["race7_accuracy"] == 0 and report["by_race7"]["Middle Eastern"]["n"] == 1
    assert report["under_20"] == {"n": 1, "age_mae": 2.0, "age_mean_signed_error": 2.0}


def test_training_on_utkface_and_fairface_reports_each(tiny_utkface, tiny_fairface, tmp_path):
    output = tmp_path / "heads.keras"
    config = TrainConfig(
        datasets=(f"utkface={tiny_utkface}", f"fairface={tiny_fairface}"), detector="hog", backbone="dlib-resnet-keras", output=output,
        logs_dir=tmp_path / "logs", epochs=2, batch_size=8, validation_fraction=0.25, augment=AugmentConfig(views=2), progress=False, cache_root=tmp_path / "cache",
    )
    report = train(config)
    assert set(report["datasets"]) == {"utkface", "fairface"}
    assert report["datasets"]["utkface"]["n"] == 6 and report["datasets"]["fairface"]["n"] == 4 and report["n"] == 10
    assert report["datasets"]["fairface"]["age_mae"] is None and report["datasets"]["fairface"]["race7_accuracy"] is not None
    faces = report["datasets"]["fairface"]["faces"]
    assert faces["images"] == 16 and faces["detected"] + faces["margin_fallback"] == 16
    metadata = json.loads(output.with_suffix(".json").read_text())
    assert metadata["classes"]["race_fairface"] == list(FAIRFACE_RACES) and metadata["classes"]["race"] == list(RACES) and set(metadata["validation"]["datasets"]) == {"utkface", "fairface"}
    assert metadata["training"]["datasets"]["fairface"]["train_images"] == 12
    # the two datasets' caches never share a folder, and FairFace's depends on the detector
    from face.backbones import create_backbone
    from face.data import load_dataset

    backbone = create_backbone("dlib-resnet")
    utk, ff = load_dataset(tiny_utkface), load_fairface(tiny_fairface)
    assert cache_folder(backbone, utk, AugmentConfig(views=2)) != cache_folder(backbone, ff, AugmentConfig(views=2))
    assert cache_folder(backbone, ff, AugmentConfig(views=2), detector="hog") != cache_folder(backbone, ff, AugmentConfig(views=2), detector="cnn")

    evaluation = evaluate_folder(tiny_fairface, tmp_path / "ff.json", backbone="dlib-resnet-keras", heads=output, progress=False, detector="hog")
    assert evaluation["n"] == 16 and evaluation["dataset"] == "fairface" and set(evaluation["by_age_bin"]) >= {"0-2", "more than 70"}
    assert evaluation["race7_accuracy"] is not None and evaluation["age_mae"] is None and evaluation["faces"]["images"] == 16
    assert len(RACES) == len(evaluation["by_race"])


def test_fairface_extra_trains_on_every_image_and_validates_on_none(tiny_utkface, tiny_fairface, tmp_path):
    from conftest import make_fairface_folder

    extra = make_fairface_folder(tmp_path / "fairface2", 10, seed=1)
    output = tmp_path / "heads.keras"
    config = TrainConfig(
        datasets=(f"utkface={tiny_utkface}", f"fairface={tiny_fairface}", f"fairface-extra={extra}"), detector="hog", backbone="dlib-resnet-keras",
        output=output, logs_dir=tmp_path / "logs", epochs=1, batch_size=8, validation_fraction=0.25, augment=AugmentConfig(views=2), progress=False,
        cache_root=tmp_path / "cache",
    )
    report = train(config)
    # the validation parts are those of the same run without the extra folder: figures compare
    assert set(report["datasets"]) == {"utkface", "fairface"} and report["n"] == 10
    training = json.loads(output.with_suffix(".json").read_text())["training"]
    assert training["datasets"]["fairface-extra"] == {"data": str(extra), "train_images": 10, "validation_images": 0, "skipped_names": 0}
    assert training["datasets"]["fairface"]["train_images"] == 12 and training["train_images"] == 18 + 12 + 10


def test_loose_crops_train_on_the_chips_the_analyzer_cuts(tiny_fairface, tmp_path):
    """A FairFace crop's training chip is warped on YuNet's landmarks, as the Analyzer warps a
    photo's face, not re-aligned by dlib inside the box."""
    from face.alignment import Aligner
    from face.analyzer import Analyzer
    from face.backbones import create_backbone
    from face.features import dataset_boxes, dataset_views
    from face.images import load_image

    dataset = load_fairface(tiny_fairface)
    boxes, found, landmarks = dataset_boxes(dataset, "yunet", tmp_path / "cache", progress=False)
    assert found.all() and not np.isnan(landmarks).any() and landmarks.shape == (16, 5, 2)
    backbone = create_backbone("dlib-resnet-keras")
    chips = dataset_views(dataset, range(2), backbone, Aligner(), AugmentConfig(views=1), boxes, landmarks)
    analyzer = Analyzer(backbone="dlib-resnet-keras", detector="yunet")
    for index in range(2):
        image = load_image(dataset.faces[index].path)
        detections = analyzer.detect(image)
        assert len(detections) == 1 and np.allclose(detections[0].landmarks, landmarks[index], atol=1e-3)
        assert np.array_equal(analyzer.chips(image, detections)[0], chips[index])
    dlib_chips = dataset_views(dataset, range(2), backbone, Aligner(), AugmentConfig(views=1), boxes)
    assert not np.array_equal(dlib_chips, chips)
    # a crop where nothing is found falls back to its margin box, with no landmarks
    blank = tmp_path / "blank"
    (blank / "train").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.full((224, 224, 3), 128, np.uint8)).save(blank / "train" / "1.jpg")
    (blank / "fairface_label_train.csv").write_text(FAIRFACE_HEADER + "train/1.jpg,20-29,Male,White,False\n")
    boxes, found, landmarks = dataset_boxes(load_fairface(blank), "yunet", tmp_path / "cache", progress=False)
    assert not found[0] and np.isnan(landmarks).all() and tuple(boxes[0]) == margin_box(np.zeros((224, 224, 3)), 0.25)
