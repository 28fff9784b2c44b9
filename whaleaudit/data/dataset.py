"""Load a labelled image dataset and stop bad input at the door.

Two layouts:

- Happywhale: a CSV label file with columns ``image,species`` and optionally ``individual_id``, plus a folder
  of images. Comma-, semicolon- and tab-separated files are accepted, with or without a byte-order mark.
- Folder per species: ``root/<species>/<image>.jpg`` (sub-folders inside a species folder are allowed).

Every problem with the label file raises :class:`DatasetError` naming the file, the row as a spreadsheet shows
it (the header is row 1), the value and the fix. A missing or unreadable image file is *not* a dataset error:
it is reported per image when the image is read (see :mod:`whaleaudit.data.images`), so one bad photo never stops an
audit of 50,000. Nothing here touches the image files, which keeps loading the full Happywhale list fast.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
import pandas as pd

from ..data.species import normalise_species
from ..errors import DatasetError

REQUIRED = ("image", "species")
OPTIONAL = ("individual_id",)
COLUMNS = ["image", "path", "species_raw", "species", "individual_id"]
DELIMITERS = (",", ";", "\t")
LABEL_FILE_NAMES = ("labels.csv", "train.csv")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_EXPECTED = "a CSV file with a header row `image,species[,individual_id]`"

#: First bytes of files that people export by mistake instead of a CSV.
_NOT_CSV = {
    b"PAR1": "a Parquet file",
    b"PK\x03\x04": "a zip archive or Excel workbook",
    b"\x1f\x8b": "a gzip archive",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"%PDF": "a PDF document",
    b"SQLite format 3": "an SQLite database",
}


@dataclass
class Dataset:
    """One row per image in label-file order (columns: :data:`COLUMNS`), and where the images lie."""

    frame: pd.DataFrame
    image_root: Path
    label_file: Path | None

    def fingerprint(self) -> str:
        """sha256 of the label file's bytes (without one: of the rows in order) and the image root.

        It tells a resumed or cached precompute whether it still describes the same inputs.
        """
        h = hashlib.sha256()
        if self.label_file is not None:
            try:
                h.update(Path(self.label_file).read_bytes())
            except OSError as e:
                raise DatasetError(f"{self.label_file}: cannot be read any more ({e.strerror}).") from None
        else:  # species folders or a DataFrame: the rows in order, labels included
            rows = self.frame["path"].str.cat([self.frame["species_raw"], self.frame["individual_id"]], sep="\t")
            h.update("\n".join(rows).encode("utf-8", "surrogateescape"))
        h.update(b"\0" + str(self.image_root).encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def missing_images(self) -> np.ndarray:
        """Bool per row: is the image file absent? One directory listing per folder, not one stat per image."""
        paths = self.frame["path"]
        folders = paths.map(posixpath.dirname)
        present = set()
        for folder in folders.unique():
            try:
                with os.scandir(self.image_root / folder) as entries:
                    present.update(posixpath.join(folder, e.name) for e in entries if e.is_file())
            except OSError:
                pass  # the folder itself is missing: every image in it is missing
        return ~paths.isin(present).to_numpy()


def load_dataset(labels_or_folder, images: str | Path | None = None) -> Dataset:
    """Read a dataset in either layout.

    A file is a label file; ``images`` defaults to its folder, or to the ``images/`` folder beside it when
    there is one. A directory holding ``labels.csv`` or ``train.csv`` is read through that file; any other
    directory is a folder-per-species layout.
    """
    source = Path(labels_or_folder)
    if source.is_dir():
        label_file = next((source / n for n in LABEL_FILE_NAMES if (source / n).is_file()), None)
        if label_file is None:
            if images is not None:
                raise DatasetError(f"{source}: a folder-per-species dataset holds its own images; "
                                   "leave out the separate image folder, or give a label file.")
            return _load_species_folders(source)
        source = label_file
    if not source.is_file():
        raise DatasetError(f"{source}: no such label file or folder. Give {_EXPECTED}, "
                           "or a folder with one sub-folder of images per species.")
    if images is None:
        images = source.parent / "images" if (source.parent / "images").is_dir() else source.parent
    image_root = Path(images).resolve()
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: the image folder does not exist. Pass the folder that holds the "
                           f"images named in {source.name}.")
    try:
        raw = source.read_bytes()
    except OSError as e:
        raise DatasetError(f"{source}: cannot be read ({e.strerror}).") from None
    frame = _parse_labels(raw, source, image_root)
    return Dataset(frame, image_root, source.resolve())


def dataset_from_frame(frame: pd.DataFrame, images: str | Path, *, source: str = "the DataFrame") -> Dataset:
    """A dataset from a DataFrame with columns ``image,species[,individual_id]`` (a notebook's labels) and the
    folder its image names are relative to, with the checks a label file gets; messages name the frame's row
    by its index label and the frame as ``source``."""
    if not isinstance(frame, pd.DataFrame):
        raise DatasetError(f"{source}: a {type(frame).__name__}, not a pandas DataFrame. Give a DataFrame with the "
                           "columns image, species (and optionally individual_id).")
    names = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise DatasetError(f"{source} has no {' or '.join(map(repr, missing))} column; found "
                           f"{[str(c) for c in frame.columns]}. Rename the columns to image, species "
                           "(and optionally individual_id).")
    twice = [c for c in REQUIRED + OPTIONAL if names.count(c) > 1]
    if twice:
        raise DatasetError(f"{source} has the column {twice[0]!r} twice; keep one.")
    if images is None:
        raise DatasetError(f"{source}: say where its images are: images=<the folder its image names are "
                           "relative to>.")
    image_root = Path(images).resolve()
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: the image folder does not exist. Pass the folder that holds the "
                           f"images named in {source}.")
    columns = [c for c in REQUIRED + OPTIONAL if c in names]
    picked = frame.iloc[:, [names.index(c) for c in columns]]
    body = picked.astype(object).where(picked.notna(), "").astype(str).to_numpy().tolist()
    rows = np.asarray(frame.index, dtype=object)
    return Dataset(_labelled_rows(columns, body, rows, source, image_root), image_root, None)


def stratified_split(species: pd.Series, valid_pct: float = 0.2, seed: int = 42) -> np.ndarray:
    """Bool ``is_valid`` per image: ``valid_pct`` of every species, drawn reproducibly from ``seed``.

    Each species with two or more images gets at least one validation image (when ``valid_pct > 0``) and
    keeps at least one training image; a species with a single image trains.
    """
    if not 0 <= valid_pct < 1:
        raise DatasetError(f"valid_pct={valid_pct}: the validation share must be at least 0 and below 1.")
    species = pd.Series(np.asarray(species, dtype=object))
    if valid_pct == 0 or species.empty:
        return np.zeros(len(species), dtype=bool)
    rank = pd.Series(np.random.default_rng(seed).random(len(species))).groupby(species).rank(method="first")
    n = species.map(species.value_counts()).to_numpy()
    n_valid = np.where(n >= 2, np.clip(np.round(n * valid_pct), 1, n - 1), 0)
    return rank.to_numpy() <= n_valid


# --- Happywhale layout -------------------------------------------------------------------------------------


def _parse_labels(raw: bytes, file: Path, image_root: Path) -> pd.DataFrame:
    records = _read_records(raw, file)
    return _labelled_rows(records[0], records[1:], np.arange(2, len(records) + 1), file, image_root)


def _labelled_rows(head: list[str], body: list[list[str]], rows: np.ndarray, file, image_root: Path) -> pd.DataFrame:
    """The dataset's frame from a header and records of text; ``rows`` numbers the records in messages (the
    spreadsheet's row for a label file) and ``file`` names their source."""
    header = [h.strip().lower() for h in head]
    found = [h.strip() for h in head if h.strip()]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DatasetError(f"{file}: row 1 (the header) has no {' or '.join(map(repr, missing))} column; "
                           f"found {found}. Rename the columns so the file is {_EXPECTED}.")
    for name in REQUIRED + OPTIONAL:
        if header.count(name) > 1:
            raise DatasetError(f"{file}: row 1 (the header) names the column {name!r} twice; keep one.")
    width = len(header)
    too_long = [i for i, r in enumerate(body) if len(r) > width and any(v.strip() for v in r[width:])]
    if too_long:
        i = too_long[0]
        raise DatasetError(f"{file}: row {rows[i]} has {len(body[i])} values but the header has {width} "
                           f"({body[i]!r}). Put quotes around a value that contains the separator.")

    def column(name):
        if name not in header:
            return [""] * len(body)
        k = header.index(name)
        return [r[k] if len(r) > k else "" for r in body]

    frame = pd.DataFrame({"image": column("image"), "species_raw": column("species"),
                          "individual_id": column("individual_id")}, dtype=str)
    frame["image"] = frame["image"].str.strip()
    frame["individual_id"] = frame["individual_id"].str.strip()
    blank_image, blank_species = frame["image"] == "", frame["species_raw"].str.strip() == ""
    empty = [i for i in np.flatnonzero(blank_image & blank_species) if not any(v.strip() for v in body[i])]
    if empty:  # blank lines (often at the end of a file) carry nothing: skip them
        keep = np.ones(len(frame), dtype=bool)
        keep[empty] = False
        frame, rows = frame[keep].reset_index(drop=True), rows[keep]
    if frame.empty:
        raise DatasetError(f"{file}: has a header but no rows of images. Add one row per image: "
                           "image file name, species.")
    image, species_raw = frame["image"], frame["species_raw"]
    _refuse_first(file, rows, image == "", lambda i: f"has no image file name (species {species_raw.iat[i]!r})",
                  "Fill it in or delete the row.")
    _refuse_first(file, rows, species_raw.str.strip() == "", lambda i: f"has no species (image {image.iat[i]!r})",
                  "Fill it in or delete the row.")
    frame["species"] = _normalised(species_raw)
    _refuse_first(file, rows, frame["species"] == "",
                  lambda i: f"has the species {species_raw.iat[i]!r}, which has no letters or digits",
                  "Write the species name, e.g. killer_whale.")
    frame["path"] = _safe_paths(frame["image"], rows, file, image_root)
    duplicated = frame["path"].duplicated(keep=False).to_numpy()
    if duplicated.any():
        first = frame["path"][duplicated].iloc[0]
        both = rows[(frame["path"] == first).to_numpy()][:2]
        others = frame["path"][duplicated].nunique() - 1
        more = f" ({others} other images are listed twice too)" if others else ""
        raise DatasetError(f"{file}: image {first!r} is listed on row {both[0]} and again on row {both[1]}{more}. "
                           "List each image once: delete the extra rows.")
    return frame[COLUMNS]


def _read_records(raw: bytes, file: Path) -> list[list[str]]:
    """Decode and split the label file into records; the first is the header."""
    utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff"))  # Excel's "Unicode text": UTF-16 with a byte-order mark
    kind = None if utf16 else next((k for magic, k in _NOT_CSV.items() if raw.startswith(magic)),
                                   "a binary file" if b"\0" in raw else None)
    if kind:
        raise DatasetError(f"{file}: this is {kind}, not a CSV label file. Export {_EXPECTED}.")
    encoding = "utf-16" if utf16 else "utf-8-sig"  # -sig: drop a UTF-8 byte-order mark
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        row = raw[:e.start].decode(encoding, "replace").count("\n") + 1
        raise DatasetError(f"{file}: row {row} is not valid {'UTF-16' if utf16 else 'UTF-8'} (byte "
                           f"{raw[e.start:e.start + 1]!r}). Save the file as UTF-8 (in Excel: 'CSV UTF-8').") from None
    if not text.strip():
        raise DatasetError(f"{file}: the file is empty. It should be {_EXPECTED}.")
    if text.lstrip().startswith(("{", "[")):
        raise DatasetError(f"{file}: this looks like JSON, not CSV. Export {_EXPECTED}.")
    lines = io.StringIO(text, newline="")
    delimiter = _delimiter(lines.readline())
    lines.seek(0)
    try:
        return list(csv.reader(lines, delimiter=delimiter))
    except csv.Error as e:
        raise DatasetError(f"{file}: not readable as CSV ({e}). Export {_EXPECTED}.") from None


def _delimiter(header_line: str) -> str:
    """The separator under which the header names the required columns, else the most frequent one."""
    for d in DELIMITERS:
        names = {h.strip().lower() for h in next(csv.reader([header_line], delimiter=d), [])}
        if all(c in names for c in REQUIRED):
            return d
    return max(DELIMITERS, key=header_line.count)


def _refuse_first(file: Path, rows: np.ndarray, bad, problem, fix: str) -> None:
    """Raise for the first row where ``bad`` holds; ``problem(i)`` says what is wrong with row ``i``."""
    bad = np.flatnonzero(np.asarray(bad, dtype=bool))
    if len(bad):
        more = f" ({len(bad) - 1} more rows like it)" if len(bad) > 1 else ""
        raise DatasetError(f"{file}: row {rows[bad[0]]} {problem(bad[0])}{more}. {fix}")


def _normalised(species_raw: pd.Series) -> pd.Series:
    """normalise_species once per distinct label, not once per image."""
    return species_raw.map({s: normalise_species(s) for s in species_raw.unique()})


def _safe_paths(images: pd.Series, rows: np.ndarray, file: Path, image_root: Path) -> pd.Series:
    """Image names -> posix paths relative to the image root; anything that could leave the root is refused.

    Only the rare names with a backslash, a dot segment, a double slash or a leading slash or drive go
    through the slow per-row check.
    """
    paths = images.str.replace("\\", "/", regex=False)
    unusual = paths.str.contains(r"(?:^|/)\.{1,2}(?:/|$)|//|^/|^[A-Za-z]:", regex=True).to_numpy()
    root = image_root.as_posix().rstrip("/") + "/"
    for i in np.flatnonzero(unusual):
        path, original = paths.iat[i], images.iat[i]
        if path.startswith("/") or PureWindowsPath(original).drive:
            inside = posixpath.normpath(path)
            if not PureWindowsPath(original).drive and inside.startswith(root):
                path = inside[len(root):]
            else:
                raise DatasetError(f"{file}: row {rows[i]} gives the absolute path {original!r}, which is outside "
                                   f"the image folder {image_root}. Write paths relative to that folder.")
        if ".." in path.split("/"):
            raise DatasetError(f"{file}: row {rows[i]} image {original!r} climbs out of the image folder with '..'. "
                               f"Write paths relative to {image_root}, without '..'.")
        paths.iat[i] = posixpath.normpath(path)
    return paths


# --- folder-per-species layout -----------------------------------------------------------------------------


def _load_species_folders(root: Path) -> Dataset:
    root = root.resolve()
    paths, species = [], []
    for folder in sorted(p for p in os.listdir(root) if not p.startswith(".") and (root / p).is_dir()):
        for dirpath, dirnames, filenames in os.walk(root / folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(root).as_posix()
            for name in sorted(filenames):
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                paths.append(_utf8_path(root, posixpath.join(rel, name)))
                species.append(folder)
    if not paths:
        raise DatasetError(f"{root}: found no species folders with images. Arrange the images as "
                           f"{root}/<species>/<image>.jpg, or give {_EXPECTED}.")
    frame = pd.DataFrame({"image": paths, "path": paths, "species_raw": species,
                          "individual_id": ""}, dtype=str)
    frame["species"] = _normalised(frame["species_raw"])
    return Dataset(frame[COLUMNS], root, None)


def _utf8_path(root: Path, rel: str) -> str:
    """``rel`` itself, unless a folder or file name in it is not UTF-8 (Python keeps such bytes as surrogates)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
        raise DatasetError(f"{root}: the name {shown!r} is not valid UTF-8. Rename it using UTF-8 characters "
                           "(e.g. plain letters, digits and underscores).") from None
    return rel
