import shutil

import pytest

from face.data import load_dataset, parse_name, split_dataset
from face.errors import DatasetError

from conftest import UTKFACE


@pytest.mark.parametrize(
    "name, labels",
    [
        ("26_0_2_20170104023102422.jpg.chip.jpg", (26, 0, 2)),
        ("55_0_0_20170116232725357jpg.chip.jpg", (55, 0, 0)),  # the dot before jpg is missing
        ("116_1_4_20170110183726390.jpg.chip.jpg", (116, 1, 4)),
        ("39_1_20170116174525125.jpg.chip.jpg", None),  # race missing
        ("26_2_2_20170104023102422.jpg.chip.jpg", None),  # gender out of range
        ("26_0_7_20170104023102422.jpg.chip.jpg", None),  # race out of range
        ("notes.txt", None),
    ],
)
def test_parse_name(name, labels):
    parsed = parse_name(name)
    assert (None if parsed is None else (parsed.age, parsed.gender, parsed.race)) == labels


def test_load_dataset_skips_and_reports_malformed_names(tiny_utkface):
    (tiny_utkface / "README.txt").write_text("not an image")
    dataset = load_dataset(tiny_utkface)
    assert len(dataset) == 24
    assert sorted(dataset.skipped) == ["39_1_20170116174525125.jpg.chip.jpg", "README.txt"]


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image named like UTKFace"):
        load_dataset(tmp_path / "empty")


def test_split_is_reproducible_and_keeps_duplicates_together(tiny_utkface):
    files = sorted(tiny_utkface.glob("*.chip.jpg"))
    # byte-identical copies under other names, one with conflicting labels
    shutil.copy(files[0], tiny_utkface / "10_0_0_20990101000000001.jpg.chip.jpg")
    shutil.copy(files[0], tiny_utkface / "70_1_3_20990101000000002.jpg.chip.jpg")
    dataset = load_dataset(tiny_utkface)
    train, validation = split_dataset(dataset, 0.25, seed=7)
    again_train, again_validation = split_dataset(dataset, 0.25, seed=7)
    assert [f.path for f in train.faces] == [f.path for f in again_train.faces]
    assert len(train) + len(validation) == len(dataset)
    assert not {f.path for f in train.faces} & {f.path for f in validation.faces}
    copies = {files[0].name, "10_0_0_20990101000000001.jpg.chip.jpg", "70_1_3_20990101000000002.jpg.chip.jpg"}
    sides = {("train" if any(f.path.name == c for f in train.faces) else "validation") for c in copies}
    assert len(sides) == 1
    other_train, _ = split_dataset(dataset, 0.25, seed=8)
    assert [f.path for f in other_train.faces] != [f.path for f in train.faces]


@pytest.mark.skipif(not UTKFACE.is_dir(), reason="../shared/data/utkface is absent")
def test_real_utkface_names():
    dataset = load_dataset(UTKFACE)
    assert len(dataset) + len(dataset.skipped) == 19708
    assert len(dataset.skipped) == 3
    labels = dataset.labels()
    assert labels["age"].min() == 1 and labels["age"].max() == 116
