import shutil
from pathlib import Path

import numpy as np
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
    """Eight groups of three byte-identical files (under other names, some with other labels):
    each group lands on one side. A split that ignores content keeps a group of three together
    with probability 0.25**3 + 0.75**3 = 0.44 at 25% validation, all eight groups with
    0.44**8 = 0.0014, and under each of three seeds about 3e-9: so this fails for any split
    that does not look at the files' bytes, whatever its seed."""
    files = sorted(tiny_utkface.glob("*.chip.jpg"))
    groups = []
    for number, original in enumerate(files[:8]):
        copies = [f"{10 + number}_0_0_2099010100000{number:02d}1.jpg.chip.jpg", f"{70 - number}_1_3_2099010100000{number:02d}2.jpg.chip.jpg"]
        for name in copies:
            shutil.copy(original, tiny_utkface / name)
        groups.append({original.name, *copies})
    dataset = load_dataset(tiny_utkface)
    assert len(dataset) == 24 + 16
    for seed in (7, 8, 9):
        train, validation = split_dataset(dataset, 0.25, seed=seed)
        again_train, again_validation = split_dataset(dataset, 0.25, seed=seed)
        assert [f.path for f in train.faces] == [f.path for f in again_train.faces]
        assert [f.path for f in validation.faces] == [f.path for f in again_validation.faces]
        assert len(train) + len(validation) == len(dataset)
        assert not {f.path for f in train.faces} & {f.path for f in validation.faces}
        in_validation = {f.path.name for f in validation.faces}
        for group in groups:
            assert len({name in in_validation for name in group}) == 1, (seed, sorted(group))
        # whole groups fill validation up to round(0.25 * 40) = 10, overshooting by at most a group's two extra files
        assert 10 <= len(validation) <= 12, seed
    other_train, _ = split_dataset(dataset, 0.25, seed=8)
    assert [f.path for f in other_train.faces] != [f.path for f in split_dataset(dataset, 0.25, seed=7)[0].faces]


@pytest.mark.skipif(not UTKFACE.is_dir(), reason="../shared/data/utkface is absent")
def test_real_utkface_names():
    dataset = load_dataset(UTKFACE)
    assert len(dataset) + len(dataset.skipped) == 19708
    assert len(dataset.skipped) == 3
    labels = dataset.labels()
    assert labels["age"].min() == 1 and labels["age"].max() == 116


@pytest.mark.parametrize("age, kept", [(0, True), (99, True), (120, True), (121, False), (999, False)])
def test_ages_up_to_120_are_kept(age, kept):
    name = f"{age}_1_3_20170104023102422.jpg.chip.jpg"
    parsed = parse_name(name)
    assert (parsed is not None) == kept
    if kept:
        assert parsed.path == Path(name) and (parsed.age, parsed.gender, parsed.race) == (age, 1, 3)


def test_labels_follow_the_file_names(tiny_utkface):
    (tiny_utkface / "0_a_subfolder").mkdir()  # sorts first; skipped, not the end of the listing
    dataset = load_dataset(tiny_utkface)
    assert len(dataset) == 24 and dataset.root == tiny_utkface
    labels = dataset.labels()
    for name in ("age", "gender", "race"):
        assert labels[name].dtype == np.int32 and len(labels[name]) == 24
    for index, face in enumerate(dataset.faces):
        age, gender, race = (int(part) for part in face.path.name.split("_")[:3])
        assert face.path.parent == tiny_utkface
        assert (labels["age"][index], labels["gender"][index], labels["race"][index]) == (age, gender, race) == (face.age, face.gender, face.race)
    assert [f.path.name for f in dataset.faces] == sorted(f.path.name for f in dataset.faces)


def test_limit_takes_the_first_faces_by_name(tiny_utkface):
    everything = load_dataset(tiny_utkface)
    first = load_dataset(tiny_utkface, limit=5)
    assert first.faces == everything.faces[:5] and first.skipped == everything.skipped
    assert load_dataset(tiny_utkface, limit=None).faces == everything.faces


def test_split_sizes_defaults_and_subsets(tiny_utkface):
    dataset = load_dataset(tiny_utkface)  # 24 distinct files
    train, validation = split_dataset(dataset)
    assert (len(train), len(validation)) == (20, 4)  # round(0.15 * 24) = 4 exactly, when no file has a copy
    again = split_dataset(dataset, 0.15, 42)
    assert [f.path for f in again[1].faces] == [f.path for f in validation.faces]  # the defaults: 15%, seed 42
    assert (len(split_dataset(dataset, 0.5, 1)[1])) == 12
    assert train.root == dataset.root and train.skipped == [] and validation.root == dataset.root
    subset = dataset.subset([3, 1])
    assert subset.faces == [dataset.faces[3], dataset.faces[1]] and subset.skipped == [] and subset.root == dataset.root


def test_fairface_csv_prefers_fairfaces_own_name_then_any_single_csv(tmp_path):
    from face.data import fairface_csv

    (tmp_path / "a_notes.csv").write_text("x\n")  # sorts first: a name FairFace does not use
    (tmp_path / "fairface_label_train.csv").write_text("x\n")
    assert fairface_csv(tmp_path) == tmp_path / "fairface_label_train.csv"
    assert fairface_csv(tmp_path / "a_notes.csv") == tmp_path / "a_notes.csv"  # a file is taken as given
    other = tmp_path / "other"
    other.mkdir()
    (other / "labels.csv").write_text("x\n")
    (other / "README.txt").write_text("x\n")
    assert fairface_csv(other) == other / "labels.csv"
    (other / "more.csv").write_text("x\n")
    with pytest.raises(DatasetError, match=r"several label CSVs \(labels.csv, more.csv\); pass the one to use, e.g. --data fairface=.*labels.csv"):
        fairface_csv(other)


def test_a_bare_folder_is_utkface_unless_it_holds_fairfaces_csv(tmp_path):
    from face.data import guess_kind, parse_data_spec

    assert guess_kind(tmp_path) == "utkface" and parse_data_spec(tmp_path) == ("utkface", tmp_path)
    assert guess_kind(tmp_path / "LABELS.CSV") == "fairface"  # a CSV given itself, any case
    assert guess_kind(tmp_path / "absent") == "utkface"
    (tmp_path / "fairface_label_val.csv").write_text("x\n")
    assert guess_kind(tmp_path) == "fairface"
    assert guess_kind(tmp_path / "fairface_label_val.csv") == "fairface"
    (tmp_path / "a=b").mkdir()  # a folder whose name holds "=": a folder, not NAME=DIR
    assert parse_data_spec(tmp_path / "a=b") == ("utkface", tmp_path / "a=b")
    assert parse_data_spec("utkface=x=y") == ("utkface", Path("x=y"))  # only the first "=" splits
    assert parse_data_spec("some/dir=1") == ("utkface", Path("some/dir=1"))  # a path, not a name
    with pytest.raises(DatasetError) as unknown:
        parse_data_spec("celeba=faces")
    assert str(unknown.value) == "--data celeba=faces: unknown dataset 'celeba'; choose one of utkface, fairface, fairface-extra"


def test_load_named_reads_each_kind_with_its_limit(tiny_utkface):
    from face.data import load_named

    assert len(load_named("utkface", tiny_utkface, limit=3)) == 3
    assert len(load_named("utkface", tiny_utkface)) == 24
    with pytest.raises(DatasetError) as unknown:
        load_named("celeba", tiny_utkface)
    assert str(unknown.value) == "unknown dataset 'celeba'; choose one of utkface, fairface, fairface-extra"


@pytest.mark.parametrize("age, bin_", [(0, 0), (2, 0), (3, 1), (9, 1), (10, 2), (19, 2), (20, 3), (69, 7), (70, 8), (99, 8), (100, 8), (101, 8), (116, 8)])
def test_exact_ages_fall_in_fairfaces_bins_inclusive(age, bin_):
    from face.data import age_bin_of

    assert age_bin_of(age) == bin_


def test_a_face_fills_in_its_bin_and_its_seven_way_race_where_known():
    from face.data import LabelledFace

    white, asian = LabelledFace(Path("a"), 0, 0, 0), LabelledFace(Path("b"), 30, 1, 2)
    assert (white.age_bin, white.race7) == (0, 0)  # age 0 still has a bin; White is FairFace's White
    assert (asian.age_bin, asian.race7) == (4, -1)  # UTKFace's Asian is two FairFace races
    black = LabelledFace(Path("c"), 1, 0, 1)
    assert (black.age_bin, black.race7) == (0, 1)
    binned = LabelledFace(Path("d"), -1, 0, 4, age_bin=0, race7=0)  # FairFace's: given, kept
    assert (binned.age, binned.age_bin, binned.race7) == (-1, 0, 0)
    given = LabelledFace(Path("e"), 40, 0, 3, age_bin=2, race7=4)
    assert (given.age_bin, given.race7) == (2, 4)
    assert LabelledFace(Path("f"), -1, 0, 4).age_bin == -1  # no age, no bin given: unknown
    kept = LabelledFace(Path("g"), 40, 0, 1, age_bin=0, race7=0)  # given labels are kept, even bin 0 and race 0
    assert (kept.age_bin, kept.race7) == (0, 0)


def test_fairface_rows_become_faces_with_every_label(tmp_path):
    """The loader's own reading of a hand-written CSV: genders, bins, races, paths, the limit."""
    from PIL import Image

    from face.data import load_fairface

    (tmp_path / "val").mkdir()
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / "val" / name)
    (tmp_path / "fairface_label_val.csv").write_text(
        "file,age,gender,race,service_test\n"
        " val/1.jpg ,0-2, Male ,White,True\n"
        "val/2.jpg,more than 70,female,Southeast Asian,False\n"
        "val/3.jpg,50-59,Female,Latino_Hispanic,False\n",
        encoding="utf-8",
    )
    dataset = load_fairface(tmp_path)
    assert dataset.root == tmp_path and dataset.skipped == [] and dataset.kind == "fairface"
    assert [f.path for f in dataset.faces] == [tmp_path / "val" / n for n in ("1.jpg", "2.jpg", "3.jpg")]
    assert [(f.age, f.age_bin, f.gender, f.race, f.race7) for f in dataset.faces] == [(-1, 0, 0, 0, 0), (-1, 8, 1, 2, 3), (-1, 6, 1, 4, 5)]
    assert len(load_fairface(tmp_path, limit=2)) == 2 and len(load_fairface(tmp_path, limit=3)) == 3
    assert dataset.subset([2]).kind == "fairface" and dataset.subset([2]).faces == [dataset.faces[2]]


@pytest.mark.parametrize(
    "row, problem",
    [
        ("val/1.jpg,,Male,White,True", "unknown age bin '' (want one of 0-2, 3-9, 10-19, 20-29, 30-39, 40-49, 50-59, 60-69, more than 70)"),
        ("val/1.jpg,0-2,,White,True", "unknown gender '' (want Male or Female)"),
        ("val/1.jpg,0-2,Male,,True", "unknown race '' (want one of White, Black, East Asian, Southeast Asian, Indian, Latino_Hispanic, Middle Eastern)"),
        (",0-2,Male,White,True", "image '' not found at"),
    ],
)
def test_empty_fairface_fields_are_named(tmp_path, row, problem):
    from face.data import load_fairface

    (tmp_path / "fairface_label_val.csv").write_text("file,age,gender,race\n" + row + "\n")
    with pytest.raises(DatasetError) as bad:
        load_fairface(tmp_path)
    assert str(bad.value).startswith(f"{tmp_path / 'fairface_label_val.csv'}:2: {problem}")


def test_fairface_without_rows_columns_or_folder_is_one_line(tmp_path):
    from face.data import load_fairface

    with pytest.raises(DatasetError) as absent:
        load_fairface(tmp_path / "absent")
    assert str(absent.value) == f"{tmp_path / 'absent'}: no such folder; pass a folder holding FairFace's label CSV and images"
    table = tmp_path / "fairface_label_val.csv"
    table.write_text("file,age,gender,race\n")
    with pytest.raises(DatasetError) as empty:
        load_fairface(tmp_path)
    assert str(empty.value) == f"{table}: no labelled rows"
    table.write_text("name,age\n")
    with pytest.raises(DatasetError) as columns:
        load_fairface(tmp_path)
    assert str(columns.value) == f"{table}: not a FairFace label CSV, missing column(s) file, gender, race (want file,age,gender,race)"
