"""Label files and species folders: good ones load, bad ones stop at the door with the row, value and fix."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whaleaudit.data.dataset import COLUMNS, Dataset, load_dataset, stratified_split
from whaleaudit.errors import DatasetError

GOOD = "image,species,individual_id\na.jpg,killer_whale,k1\nb.jpg,bottlenose_dolpin,b1\nc.jpg,Killer Whale,k2\n"


def labels(tmp_path, content, name="labels.csv") -> "os.PathLike":
    """A label file in ``tmp_path`` with an empty ``images/`` folder beside it."""
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def refused(path, *patterns, images=None):
    """Load, expect DatasetError, check that its message names every pattern; return the message."""
    with pytest.raises(DatasetError) as e:
        load_dataset(path, images)
    message = str(e.value)
    for p in patterns:
        assert p in message, f"{p!r} not in {message!r}"
    return message


# --- the Happywhale layout ------------------------------------------------------------------------------


def test_label_file_loads_in_order_with_raw_and_normalised_species(tmp_path):
    ds = load_dataset(labels(tmp_path, GOOD))
    assert isinstance(ds, Dataset) and list(ds.frame.columns) == COLUMNS
    assert ds.frame["image"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert ds.frame["path"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert ds.frame["species_raw"].tolist() == ["killer_whale", "bottlenose_dolpin", "Killer Whale"]
    assert ds.frame["species"].tolist() == ["killer_whale", "bottlenose_dolphin", "killer_whale"]
    assert ds.frame["individual_id"].tolist() == ["k1", "b1", "k2"]
    assert ds.image_root == (tmp_path / "images").resolve() and ds.image_root.is_absolute()
    assert ds.label_file == (tmp_path / "labels.csv").resolve()


def test_image_root_defaults_and_choice(tmp_path):
    (tmp_path / "flat").mkdir()
    flat = tmp_path / "flat" / "train.csv"
    flat.write_text(GOOD)
    assert load_dataset(flat).image_root == (tmp_path / "flat").resolve()  # no images/ beside: the CSV's folder
    (tmp_path / "elsewhere").mkdir()
    assert load_dataset(flat, tmp_path / "elsewhere").image_root == (tmp_path / "elsewhere").resolve()
    refused(flat, "nowhere", "image folder does not exist", images=tmp_path / "nowhere")


def test_a_folder_holding_labels_csv_is_read_through_it(tmp_path):
    labels(tmp_path, GOOD)
    (tmp_path / "images" / "killer_whale").mkdir()  # would be a species folder otherwise
    ds = load_dataset(tmp_path)
    assert ds.label_file == (tmp_path / "labels.csv").resolve() and len(ds.frame) == 3


def test_individual_id_is_optional_and_extra_columns_ignored(tmp_path):
    ds = load_dataset(labels(tmp_path, "Image , SPECIES,comment\na.jpg,beluga,nice\n"))
    assert ds.frame["individual_id"].tolist() == [""] and ds.frame["species"].tolist() == ["beluga"]
    ds = load_dataset(labels(tmp_path, "image,species,individual_id\n a.jpg ,beluga, b7 \nb.jpg,beluga\n"))
    assert ds.frame["image"].tolist() == ["a.jpg", "b.jpg"] and ds.frame["individual_id"].tolist() == ["b7", ""]


@pytest.mark.parametrize("encode", [
    lambda t: b"\xef\xbb\xbf" + t.encode(),  # UTF-8 with a byte-order mark (Excel's "CSV UTF-8")
    lambda t: t.replace(",", ";").encode(),  # semicolons (Excel in many European locales)
    lambda t: t.replace(",", "\t").encode(),  # tabs
    lambda t: t.replace("\n", "\r\n").encode(),  # Windows line ends
    lambda t: t.replace(",", "\t").encode("utf-16"),  # Excel's "Unicode text": UTF-16 with a BOM, tabs
    lambda t: t.replace("a.jpg", '"a.jpg"').encode() + b"\n\n",  # quoted values, blank lines at the end
], ids=["bom", "semicolon", "tab", "crlf", "utf16", "quoted"])
def test_common_spreadsheet_exports_read_the_same(tmp_path, encode):
    expected = pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg"], "path": ["a.jpg", "b.jpg", "c.jpg"],
                             "species_raw": ["killer_whale", "bottlenose_dolpin", "Killer Whale"],
                             "species": ["killer_whale", "bottlenose_dolphin", "killer_whale"],
                             "individual_id": ["k1", "b1", "k2"]})  # GOOD, read by hand
    pd.testing.assert_frame_equal(load_dataset(labels(tmp_path, encode(GOOD))).frame, expected)


def test_missing_images_are_not_a_dataset_error(tmp_path):
    path = labels(tmp_path, GOOD.replace("c.jpg", "sub/c.jpg"))
    (tmp_path / "images" / "a.jpg").write_bytes(b"x")
    ds = load_dataset(path)
    assert ds.missing_images().tolist() == [False, True, True]
    (tmp_path / "images" / "sub").mkdir()
    (tmp_path / "images" / "sub" / "c.jpg").write_bytes(b"x")
    assert ds.missing_images().tolist() == [False, True, False]


def test_paths_are_normalised_and_absolute_paths_inside_the_root_accepted(tmp_path):
    root = (tmp_path / "images").resolve()
    ds = load_dataset(labels(tmp_path, f"image,species\n./a.jpg,orca\nsub\\b.jpg,orca\n{root}/c.jpg,orca\n"))
    assert ds.frame["path"].tolist() == ["a.jpg", "sub/b.jpg", "c.jpg"]
    assert ds.frame["image"].tolist() == ["./a.jpg", "sub\\b.jpg", f"{root}/c.jpg"]


# --- the bad label files ----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    refused(tmp_path / "nope.csv", "nope.csv", "no such label file")


def test_missing_columns_say_which_were_found(tmp_path):
    refused(labels(tmp_path, "filename,label\na.jpg,orca\n"), "labels.csv", "row 1", "'image' or 'species'",
            "found ['filename', 'label']", "image,species")
    refused(labels(tmp_path, "image,Species_Name\na.jpg,orca\n"), "no 'species' column", "'Species_Name'")


def test_column_named_twice(tmp_path):
    refused(labels(tmp_path, "image,species,species\na.jpg,orca,beluga\n"), "row 1", "'species' twice")


@pytest.mark.parametrize("content", [b"", b"   \n\n", b"\xef\xbb\xbf", b"\xff\xfe"],
                         ids=["zero", "blank", "bom", "utf16"])
def test_empty_file(tmp_path, content):
    refused(labels(tmp_path, content), "labels.csv", "empty")


def test_only_a_header(tmp_path):
    refused(labels(tmp_path, "image,species\n"), "header but no rows")
    refused(labels(tmp_path, "image,species\n\n,\n"), "header but no rows")


@pytest.mark.parametrize("content, kind", [
    (b"PAR1\x15\x04\x15\x10", "Parquet"),
    (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook"),
    (b"\x1f\x8b\x08\x00", "gzip"),
    (b"\x89PNG\r\n\x1a\n\0\0", "PNG image"),
    (b"\xff\xd8\xff\xe0\0\x10JFIF", "JPEG image"),
    (b"image,species\na.jpg,orca\0\0\0", "binary file"),
    (json.dumps([{"image": "a.jpg", "species": "orca"}]).encode(), "JSON"),
    (b'  {"image": "a.jpg"}', "JSON"),
], ids=["parquet", "xlsx", "gzip", "png", "jpeg", "nul", "json-list", "json-object"])
def test_not_a_csv(tmp_path, content, kind):
    refused(labels(tmp_path, content), "labels.csv", kind, "not", "image,species")


def test_real_parquet_file(tmp_path):
    (tmp_path / "images").mkdir()
    pd.DataFrame({"image": ["a.jpg"], "species": ["orca"]}).to_parquet(tmp_path / "labels.parquet")
    refused(tmp_path / "labels.parquet", "Parquet file, not a CSV")


def test_non_utf8_bytes_name_the_row(tmp_path):
    content = "image,species\na.jpg,orca\nb.jpg,".encode() + "baleine_à_bosse".encode("latin-1") + b"\n"
    refused(labels(tmp_path, content), "labels.csv", "row 3", "not valid UTF-8", "b'\\xe0'", "Save the file as UTF-8")


def test_blank_species_and_image_name_the_row_and_value(tmp_path):
    refused(labels(tmp_path, "image,species\na.jpg,orca\nb.jpg,  \nc.jpg,\n"),
            "row 3 has no species (image 'b.jpg') (1 more rows like it)", "Fill it in")
    refused(labels(tmp_path, "image,species\na.jpg,orca\n ,beluga\n"),
            "row 3 has no image file name (species 'beluga')")


def test_species_with_no_letters(tmp_path):
    refused(labels(tmp_path, "image,species\na.jpg,orca\nb.jpg,???\n"), "row 3", "'???'", "no letters or digits")


def test_blank_lines_keep_spreadsheet_row_numbers(tmp_path):
    refused(labels(tmp_path, "image,species\na.jpg,orca\n\n,,\nb.jpg,\n"), "row 5 has no species")


def test_quoted_newline_counts_as_one_row(tmp_path):
    refused(labels(tmp_path, 'image,species,note\na.jpg,orca,"two\nlines"\nb.jpg,\n'), "row 3 has no species")


def test_duplicate_rows_name_both(tmp_path):
    refused(labels(tmp_path, "image,species\na.jpg,orca\nb.jpg,orca\n./a.jpg,beluga\n"),
            "'a.jpg' is listed on row 2 and again on row 4", "delete the extra rows")
    message = refused(labels(tmp_path, "image,species\na.jpg,orca\nb.jpg,x\na.jpg,y\nb.jpg,z\n"), "row 2", "row 4")
    assert "1 other images are listed twice too" in message


def test_too_many_values_in_a_row(tmp_path):
    refused(labels(tmp_path, "image,species\na.jpg,orca\nb.jpg,killer,whale\n"), "row 3 has 3 values", "quotes")
    assert len(load_dataset(labels(tmp_path, "image,species\na.jpg,orca,\n")).frame) == 1  # a trailing comma is fine


@pytest.mark.parametrize("image, problem", [
    ("../secret.jpg", "climbs out"),
    ("sub/../../secret.jpg", "climbs out"),
    ("..\\secret.jpg", "climbs out"),
    ("/etc/passwd", "absolute path '/etc/passwd'"),
    ("C:\\photos\\a.jpg", "absolute path"),
])
def test_paths_out_of_the_image_folder(tmp_path, image, problem):
    refused(labels(tmp_path, f"image,species\na.jpg,orca\n{image},orca\n"), "row 3", problem, "relative")


def test_absolute_path_beside_but_outside_the_root(tmp_path):
    outside = f"{(tmp_path / 'images').resolve()}2/a.jpg"  # shares the root's text prefix, not its folder
    refused(labels(tmp_path, f"image,species\n{outside},orca\n"), "row 2", "absolute path")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300))
def test_arbitrary_bytes_give_a_dataset_or_dataset_error(tmp_path, content):
    path = labels(tmp_path, content)
    try:
        ds = load_dataset(path)
    except DatasetError as e:
        assert "labels.csv" in str(e)
    else:
        assert list(ds.frame.columns) == COLUMNS and len(ds.frame) > 0


CSVISH = st.lists(st.sampled_from(list(",;\t\"\r\n /\\.:aA?é\x00") + ["..", "jpg", "species", "image"]),
                  max_size=60).map("".join)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.sampled_from(["image,species\n", "image;species;individual_id\r\n", "\ufeffimage\tspecies\n"]),
       body=CSVISH)
def test_csv_like_text_gives_a_dataset_or_dataset_error(tmp_path, header, body):
    """Past the header, into the row checks: separators, quotes, dots, slashes and blanks in any order."""
    try:
        ds = load_dataset(labels(tmp_path, header + body))
    except DatasetError as e:
        assert "labels.csv" in str(e)
    else:
        assert not ds.frame["path"].str.split("/").map(lambda parts: ".." in parts).any()
        assert not ds.frame["path"].str.startswith("/").any() and (ds.frame["species"] != "").all()


# --- the folder-per-species layout --------------------------------------------------------------------------


def test_species_folders(tmp_path):
    for rel in ["Killer Whale/b.jpg", "Killer Whale/a.JPG", "beluga/deep/c.png", "beluga/notes.txt",
                "beluga/.hidden.jpg", ".trash/d.jpg", "e.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    ds = load_dataset(tmp_path)
    assert ds.label_file is None and ds.image_root == tmp_path.resolve()
    assert ds.frame["path"].tolist() == ["Killer Whale/a.JPG", "Killer Whale/b.jpg", "beluga/deep/c.png"]
    assert ds.frame["image"].tolist() == ds.frame["path"].tolist()
    assert ds.frame["species"].tolist() == ["killer_whale", "killer_whale", "beluga"]
    assert ds.frame["species_raw"].tolist() == ["Killer Whale", "Killer Whale", "beluga"]
    assert ds.frame["individual_id"].tolist() == [""] * 3


def test_species_folders_need_images(tmp_path):
    (tmp_path / "beluga").mkdir()
    (tmp_path / "loose.jpg").write_bytes(b"x")
    refused(tmp_path, "no species folders with images", "<species>/<image>.jpg")


def test_species_folders_refuse_a_separate_image_folder(tmp_path):
    (tmp_path / "beluga").mkdir()
    refused(tmp_path, "leave out the separate image folder", images=tmp_path)


@pytest.mark.parametrize("rel", [b"beluga/caf\xe9.jpg", b"caf\xe9/a.jpg", b"beluga/d\xe9ep/a.jpg"])
def test_non_utf8_file_names_on_disk(tmp_path, rel):
    base = os.fsencode(tmp_path)
    os.makedirs(os.path.dirname(base + b"/" + rel), exist_ok=True)
    with open(base + b"/" + rel, "wb") as f:
        f.write(b"x")
    refused(tmp_path, "is not valid UTF-8", "\\xe9", "Rename it")


# --- fingerprint --------------------------------------------------------------------------------------------


def test_fingerprint_follows_the_label_bytes_and_the_image_root(tmp_path):
    path = labels(tmp_path, GOOD)
    (tmp_path / "other").mkdir()
    first = load_dataset(path).fingerprint()
    assert len(first) == 64 and first == load_dataset(path).fingerprint()
    assert load_dataset(path, tmp_path / "other").fingerprint() != first
    path.write_text(GOOD.replace("k2", "k3"))
    assert load_dataset(path).fingerprint() != first


def test_fingerprint_of_species_folders_follows_the_file_list(tmp_path):
    (tmp_path / "beluga").mkdir()
    (tmp_path / "beluga" / "a.jpg").write_bytes(b"x")
    first = load_dataset(tmp_path).fingerprint()
    (tmp_path / "beluga" / "b.jpg").write_bytes(b"x")
    assert load_dataset(tmp_path).fingerprint() != first


# --- split ---------------------------------------------------------------------------------------------------


def test_stratified_split():
    species = pd.Series(["a"] * 50 + ["b"] * 10 + ["c"] * 2 + ["d"] + ["e"] * 3)
    valid = stratified_split(species, 0.2, seed=1)
    assert valid.dtype == bool and len(valid) == len(species)
    per_species = pd.Series(valid).groupby(species).agg(["sum", "size"])
    assert per_species["sum"].to_dict() == {"a": 10, "b": 2, "c": 1, "d": 0, "e": 1}
    assert (per_species["sum"] < per_species["size"]).all()  # every species keeps a training image
    assert np.array_equal(valid, stratified_split(species, 0.2, seed=1))
    assert not np.array_equal(valid, stratified_split(species, 0.2, seed=2))
    assert not stratified_split(species, 0.0).any()


def test_stratified_split_shuffles_within_species():
    valid = stratified_split(pd.Series(["a"] * 1000), 0.5, seed=0)
    assert valid.sum() == 500 and 200 < valid[:500].sum() < 300


@pytest.mark.parametrize("pct", [-0.1, 1.0, 2])
def test_split_refuses_impossible_shares(pct):
    with pytest.raises(DatasetError, match="valid_pct"):
        stratified_split(pd.Series(["a", "a"]), pct)


# --- the real data ----------------------------------------------------------------------------------------


def test_real_label_file(real_labels):
    ds = load_dataset(real_labels)
    counts = ds.frame["species"].value_counts()
    assert len(ds.frame) == 51033 and ds.frame["species_raw"].nunique() == 30
    assert len(counts) == 26
    assert counts["bottlenose_dolphin"] == 10781 and counts["frasiers_dolphin"] == 14
    assert "kiler_whale" not in counts and "globis" not in counts and "pilot_whale" not in counts
    assert ds.frame["individual_id"].nunique() == 15587
    valid = stratified_split(ds.frame["species"], 0.2)
    assert pd.Series(valid).groupby(ds.frame["species"]).sum().min() >= 1


def test_real_photos(real_photos):
    for source in (real_photos, real_photos / "labels.csv"):
        ds = load_dataset(source)
        assert len(ds.frame) == 3000 and ds.image_root == (real_photos / "images").resolve()
        assert ds.frame["species"].value_counts().to_dict() == {"bottlenose_dolphin": 1500, "killer_whale": 1500}
        assert not ds.missing_images().any()
