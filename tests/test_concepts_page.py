"""The Concepts page through Streamlit's AppTest, and the views behind it, on small audits the tests build: the
dashboard tests' audit (tiny real photos, one unreadable, one gone) made again with evidence maps and cell
descriptors of a known design, its concepts found by the library.

The design: every readable photo's evidence sits on two blocks of four layer3 cells, one in the middle of the
frame (on the animal; descriptors near one point) and one in the bottom-right corner (off it; near another),
in proportions that vary from photo to photo. The lists the page shows are checked against shares computed here
from ``concept_evidence.npy`` with numpy and pandas, not against the views the page calls."""

import json
import re
import shlex
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers_dashboard import UNREADABLE, VANISHED, make_audit
from streamlit.testing.v1 import AppTest

from whaleaudit import jobs, views
from whaleaudit.audit.concepts import (CONCEPT_EVIDENCE, CONCEPTS_INFO, CONCEPTS_TABLE, compute_concepts,
                                       write_concepts)
from whaleaudit.audit.review import Review
from whaleaudit.audit.store import IMAGE_COLUMNS, open_audit, unpack_masks, write_store
from whaleaudit.cli import parser
from whaleaudit.explain.concepts import FORMAT
from whaleaudit.views import concepts as concept_views

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
N = 120
GRID = (8, 8)
ON_BLOCK = [27, 28, 35, 36]     # the middle of the frame: the foreground of make_audit's masks
OFF_BLOCK = [54, 55, 62, 63]    # the bottom-right corner
#: (evidence per cell on the middle block, on the corner block), photo by photo in turn: the blocks take unalike
#: shares of the photos (Ruzicka 0.2, under JOIN_AT), so they stay two concepts
AMOUNTS = [(3.0, 1.0), (1.0, 3.0), (4.0, 0.25), (4.0, 0.5), (0.5, 2.5)]
#: A small mark in one corner cell, above any middle cell but under half of every photo's evidence (3 / 11 at most)
SMALL_MARK = [(2.0, 3.0), (2.0, 2.5), (2.5, 3.0)]


@pytest.fixture(autouse=True)
def _app_folder_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(APP.parent))


def with_evidence(store: Path, seed: int = 0, amounts=AMOUNTS, corner=OFF_BLOCK) -> Path:
    """Make the audit at ``store`` again, the same but with evidence maps and cell descriptors of the design in
    the module docstring (its review database is kept, as a rebuild keeps it); ``amounts`` and the cells of the
    corner block that hold evidence (``corner``) vary it."""
    audit = open_audit(store)
    n = len(audit.images)
    rng = np.random.default_rng(seed)
    evidence = np.full((n, 2, *GRID), -0.5, np.float32)
    cells = np.zeros((n, GRID[0] * GRID[1], 4), np.float32)
    cells[:] = [0, 0, 10, 0]
    cells[:, ON_BLOCK] = [10, 0, 0, 0]
    cells[:, OFF_BLOCK] = [0, 10, 0, 0]
    cells += rng.normal(0, 0.3, cells.shape)
    flat = evidence.reshape(n, 2, -1)
    for i in range(n):
        on, off = amounts[i % len(amounts)]
        flat[i, :, ON_BLOCK], flat[i, :, corner] = on, off
    evidence[(audit.images["status"] != "ok").to_numpy()] = 0
    manifest = {key: audit.manifest[key] for key in ("classes", "dataset", "model", "input_size", "cam")}
    return write_store(store, audit.images[IMAGE_COLUMNS], audit.probs, audit.cams,
                       unpack_masks(audit.masks_packed, audit.manifest["mask_size"]), manifest,
                       mask_size=audit.manifest["mask_size"], evidence=evidence.astype(np.float16),
                       cells=cells.astype(np.float16), cell_basis=np.zeros((5, 8), np.float32))


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The dashboard tests' audit, 120 photos, with evidence and its concepts."""
    store = with_evidence(make_audit(tmp_path, n=N))
    write_concepts(open_audit(store))
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    return store


def start(**query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(query)
    at.switch_page("pages/concepts.py").run()
    return ok(at)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def cards(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if re.match(r"\*\*\w+ #\d+\*\*", m.value)]


def factors(at: AppTest) -> list[str]:
    """The lines under the cards' crops that say why each concept is where it is."""
    return [c.value for c in at.caption if re.match(r"#\d+ of \d+ by unusualness", c.value)]


def concept_rows(store: Path, species: str) -> pd.DataFrame:
    """The concepts of ``species`` as the file lists them."""
    table = pd.read_parquet(store / CONCEPTS_TABLE)
    return table[table["species"] == species].reset_index(drop=True)


def expected_photos(store: Path, species: str, rank: int, at_least: float, keep=None) -> list[str]:
    """The photos predicted as ``species`` where concept ``rank`` holds at least ``at_least`` of the evidence, from
    the stored concept evidence: largest share first, ties by image id."""
    audit = open_audit(store)
    images = audit.images.reset_index(drop=True)
    evidence = np.load(store / CONCEPT_EVIDENCE)
    total = evidence.sum(axis=1)
    share = np.divide(evidence[:, rank], total, out=np.zeros_like(total), where=total > 0)
    chosen = images.assign(share=share)[(images["status"] == "ok") & (images["pred_idx"] == audit.classes.index(
        species)) & (share >= at_least) & (share > 0)]
    if keep is not None:
        chosen = chosen[keep(chosen)]
    return chosen.sort_values(["share", "image"], ascending=[False, True])["image"].tolist()


def test_each_species_shows_its_concepts_in_the_order_the_library_wrote_them(store):
    """Cards in the file's order, each with its numbers, mark, crops, heat and the factors of its place in the
    order. The file's order is reversed first within every species: the page follows the library's order,
    whatever rule made it, and never re-sorts."""
    table = pd.read_parquet(store / CONCEPTS_TABLE)
    table = table.iloc[::-1].sort_values("species", kind="stable")   # the file's order, reversed within a species
    table.to_parquet(store / CONCEPTS_TABLE, index=False)
    audit = open_audit(store)
    at = start(audit="small")
    species = at.selectbox(key="concepts_species@small")
    assert species.options == list(dict.fromkeys(table["species"]))
    for name in species.options:
        at = ok(species.set_value(name).run())
        rows = concept_rows(store, name)
        assert len(rows) == 2 and rows["rank"].tolist() == [1, 0]   # the reversed order
        images = audit.images
        in_class = int(((images["status"] == "ok") & (images["pred_idx"] == audit.classes.index(name))).sum())
        expected = [f"**{name} #{rank + 1}** :{'green' if on > 0.5 else 'orange'}-badge[{'on' if on > 0.5 else 'off'} "
                    f"the animal]  \n{share:.1%} of the class's evidence  \nin {photos} of {in_class} images  \n"
                    f"{on:.0%} on the animal"
                    for rank, share, photos, on in zip(rows["rank"], rows["evidence_share"], rows["n_photos"],
                                                       rows["on_animal"])]
        assert cards(at) == expected
        assert factors(at) == [f"#{rank + 1} of 2 by unusualness = looks unlike the rest: {d:.1f}x × sits apart: "
                               f"{moved:.0%} of its evidence is where the class's is not × concentrated: {c:.0%} of a "
                               "photo where it is"
                               for rank, d, moved, c in zip(rows["rank"], rows["distinctiveness"], rows["displacement"],
                                                            rows["concentration"])]
        assert rows["displacement"].min() > 0.05   # the design's two blocks lie apart: not a "0%" to read
        assert any(", the most unusual first." in c.value for c in at.caption)
        listed = expected_photos(store, name, int(rows["rank"].iloc[0]), 0.5)
        # crops and heat, then the first photos, save the one deleted since the audit (a message in its place)
        assert len(at.image) == 2 * len(rows) + len(set(listed[:12]) - {VANISHED})
        assert [w.value.startswith(f"Cannot show {VANISHED}:") for w in at.warning] == [True] * (
            VANISHED in listed[:12])
        assert at.selectbox(key=f"concepts_pick@small@{name}").value == 1   # the first one shown is chosen first
        species = at.selectbox(key="concepts_species@small")
    # the design puts the middle block on the animal and the corner off it, in every class
    where = table["heat"].map(lambda h: tuple(np.flatnonzero(h)))
    assert set(where[table["on_animal"] > 0.5]) == {tuple(ON_BLOCK)} and set(where[table["on_animal"] < 0.5]) == {
        tuple(OFF_BLOCK)}


def test_choosing_a_concept_lists_its_photos_and_flag_all_flags_exactly_them(store):
    """The list follows the chosen concept, the share and the sidebar's filters; its first page is the start of
    the list; one click flags every photo listed, on every page of it, and nothing else."""
    rows = concept_rows(store, "killer_whale")
    Review(store / "review.sqlite").flag(["img_001"], "other", "flagged before", "")   # not a killer whale photo
    at = start(audit="small")
    at = ok(at.selectbox(key="concepts_species@small").set_value("killer_whale").run())
    second = int(rows["rank"].iloc[1])
    at = ok(at.button(key=f"concepts_list_{second}").click().run())
    assert at.selectbox(key="concepts_pick@small@killer_whale").value == second
    at = ok(at.slider(key=f"concepts_share@small@killer_whale@{second}").set_value(0.15).run())
    everything = expected_photos(store, "killer_whale", second, 0.15)
    assert 12 < len(everything)   # more than a page
    shown = [m for c in at.caption for m in re.findall(r"\*\*(img_\w+)\*\*", c.value)]
    assert shown == everything[:12]
    assert any(c.value.startswith(f"{len(everything)} of ") for c in at.caption)

    at.sidebar.radio(key="correct@small").set_value("correct")
    at = ok(at.run())
    frame = open_audit(store).images.set_index("image")
    listed = expected_photos(store, "killer_whale", second, 0.15, keep=lambda c: c["correct"].astype(bool))
    assert 12 < len(listed) < len(everything)   # more than a page, fewer than without the filter
    assert any(c.value.startswith(f"{len(listed)} of ") for c in at.caption)
    assert at.button(key="concepts_flag_all").disabled   # no reason is assumed for a concept's photos
    assert at.selectbox(key=f"concepts_reason@small@killer_whale@{second}").value is None
    at = ok(at.selectbox(key=f"concepts_reason@small@killer_whale@{second}").set_value(
        "attention on another object").run())
    assert not at.button(key="concepts_flag_all").disabled
    at = ok(at.button(key="concepts_flag_all").click().run())
    assert at.success[0].value == f"Flagged {len(listed)} images: attention on another object."
    flags = Review(store / "review.sqlite").flags().set_index("image")
    assert set(flags.index) == {*listed, "img_001"}
    assert (flags.loc[listed, "reason"] == "attention on another object").all()
    assert (flags.loc[listed, "note"] == f"evidence concept killer_whale #{second + 1}: at least 15% of the "
                                         "evidence").all()
    assert flags.loc["img_001", "reason"] == "other"
    assert frame.loc[listed, "correct"].all()


def test_a_small_concept_lists_the_photos_it_reaches_and_each_concept_keeps_its_own_share(tmp_path, monkeypatch):
    """A mark in one corner cell that holds under half of every photo's evidence (SMALL_MARK): its list opens at
    25%, the largest round step a photo reaches, says that no photo reaches 50%, and "Flag all" flags exactly it;
    the concept on the animal opens at 50%. A share the analyst sets for one concept stays with that concept."""
    store = with_evidence(make_audit(tmp_path, n=N), amounts=SMALL_MARK, corner=[OFF_BLOCK[-1]])
    write_concepts(open_audit(store))
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    largest = max(off / (len(ON_BLOCK) * on + off) for on, off in SMALL_MARK)
    assert 0.25 <= largest < 0.5   # the design: 25% is the largest round step the mark reaches
    rows = concept_rows(store, "killer_whale")
    mark, middle = (int(rows.loc[rows["on_animal"] < 0.5, "rank"].iloc[0]),
                    int(rows.loc[rows["on_animal"] > 0.5, "rank"].iloc[0]))
    listed = expected_photos(store, "killer_whale", mark, 0.25)
    assert listed and not expected_photos(store, "killer_whale", mark, 0.5)
    at = start(audit="small")
    at = ok(at.selectbox(key="concepts_species@small").set_value("killer_whale").run())
    at = ok(at.button(key=f"concepts_list_{mark}").click().run())
    assert at.slider(key=f"concepts_share@small@killer_whale@{mark}").value == 0.25
    assert [m for c in at.caption for m in re.findall(r"\*\*(img_\w+)\*\*", c.value)] == listed[:12]
    images = open_audit(store).images
    in_class = int(((images["status"] == "ok") & (images["pred_idx"] == open_audit(store).classes.index(
        "killer_whale"))).sum())
    assert f"{len(listed)} of {in_class} images predicted as killer_whale, where killer_whale #{mark + 1} carries " \
        "at least 25% of the evidence (no photo reaches 50%), match the filters." in [c.value for c in at.caption]
    at = ok(at.selectbox(key=f"concepts_reason@small@killer_whale@{mark}").set_value("attention on another object")
            .run())
    at = ok(at.button(key="concepts_flag_all").click().run())
    assert set(Review(store / "review.sqlite").flags()["image"]) == set(listed)

    at = ok(at.button(key=f"concepts_list_{middle}").click().run())
    assert at.slider(key=f"concepts_share@small@killer_whale@{middle}").value == 0.5
    assert at.selectbox(key=f"concepts_reason@small@killer_whale@{middle}").value is None   # its own reason
    on_animal = expected_photos(store, "killer_whale", middle, 0.5)
    assert any(c.value.startswith(f"{len(on_animal)} of ") and f"#{middle + 1} carries at least 50% of the evidence,"
               in c.value for c in at.caption)
    at = ok(at.slider(key=f"concepts_share@small@killer_whale@{middle}").set_value(0.75).run())
    at = ok(at.button(key=f"concepts_list_{mark}").click().run())
    assert at.slider(key=f"concepts_share@small@killer_whale@{mark}").value == 0.25
    at = ok(at.button(key=f"concepts_list_{middle}").click().run())
    assert at.slider(key=f"concepts_share@small@killer_whale@{middle}").value == 0.75


def test_an_audit_made_before_evidence_says_to_audit_again_with_the_command(tmp_path, monkeypatch):
    store = make_audit(tmp_path)
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    at = start(audit="small")
    assert "made before evidence concepts existed" in at.warning[0].value
    command = at.code[0].value
    arguments = parser().parse_args(shlex.split(command)[1:])   # a command the CLI takes as it stands
    assert (arguments.command, arguments.images, arguments.out) == ("precompute", tmp_path / "images", store)
    assert not at.button and not cards(at)


def test_the_command_to_audit_again_keeps_the_audits_files_and_settings(tmp_path):
    """What the manifest records goes into the command: the label file, the images, the model, layer3 maps and the
    causal share; paths with spaces come quoted."""
    audit = open_audit(make_audit(tmp_path / "my data", cam_shape=(8, 8)))
    audit.manifest["dataset"]["label_file"] = str(tmp_path / "my data" / "train.csv")
    audit.manifest["model"]["path"] = str(tmp_path / "models" / "r18.pth")
    audit.manifest["parameters"] = {"causal": 0.25}
    arguments = parser().parse_args(shlex.split(concept_views.reaudit_command(audit))[1:])
    assert (arguments.labels, arguments.images, arguments.model, arguments.out, arguments.cam_layer,
            arguments.causal) == (tmp_path / "my data" / "train.csv", tmp_path / "my data" / "images",
                                  tmp_path / "models" / "r18.pth", audit.path, "layer3", 0.25)


def test_concepts_not_computed_are_offered_as_a_job_and_shown_when_it_is_done(tmp_path, monkeypatch):
    store = with_evidence(make_audit(tmp_path))
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    at = start(audit="small")
    assert at.info[0].value.startswith("No evidence concepts computed for this audit yet") and not cards(at)
    at = ok(at.button[0].click().run())
    ident = jobs.job_id("concepts", jobs.concepts_arguments(store))
    folder = jobs.folder(store.parent)
    deadline = time.monotonic() + 120
    while (job := jobs.read(ident, jobs=folder)).active and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.status == jobs.DONE, job.sentence()
    assert job.result == f"6 concepts of 3 species written into {store}"
    stages = Path(job.log).read_text()
    assert "opening the audit" in stages and f"finding the evidence concepts of {len(open_audit(store).images)} " \
        "photos" in stages
    at = ok(at.run())
    assert not at.info and cards(at)[0].startswith("**beluga #1**")
    assert len(cards(at)) == len(concept_rows(store, at.selectbox(key="concepts_species@small").value))


def test_damaged_concepts_are_offered_again(store):
    """A concept file that cannot be read: the sidebar says why, and the page offers to compute them again."""
    np.save(store / CONCEPT_EVIDENCE, np.zeros((3, 3), np.float32))
    at = start(audit="small")
    assert "concept_evidence.npy has shape (3, 3)" in at.sidebar.warning[0].value
    assert at.info[0].value.startswith("This audit's concept files cannot be read") and not cards(at)
    assert [b.label for b in at.button] == ["Compute the concepts"]


def test_concepts_of_an_earlier_format_show_and_are_offered_again(store):
    """Concepts that an earlier WhaleAudit found (ranked alike, but found differently) show as they are; the page
    names their format and offers to find them again. The current format shows no such note."""
    at = start(audit="small")
    assert not at.info and cards(at)
    info = json.loads((store / CONCEPTS_INFO).read_text())
    (store / CONCEPTS_INFO).write_text(json.dumps({**info, "format": "whaleaudit-concepts/5"}))
    at = start(audit="small")
    assert at.info[0].value.startswith("These concepts were found by an earlier WhaleAudit (whaleaudit-concepts/5; "
                                       f"this one writes {FORMAT})")
    assert FORMAT != "whaleaudit-concepts/5"
    assert "Compute the concepts" in [b.label for b in at.button]
    name = at.selectbox(key="concepts_species@small").value
    assert [c.split("**")[1] for c in cards(at)] == [f"{name} #{r + 1}" for r in concept_rows(store, name)["rank"]]


def test_concepts_found_before_the_unusualness_order_still_open_in_their_own_order(store):
    """Concepts written before the order by unusualness (whaleaudit-concepts/1: no distinctiveness or displacement
    in the table) show as they are, in the file's order, without factors; the page says so and offers to compute
    them again; their photos still list."""
    table = pd.read_parquet(store / CONCEPTS_TABLE).drop(columns=["distinctiveness", "displacement"])
    table.to_parquet(store / CONCEPTS_TABLE, index=False)
    info = json.loads((store / CONCEPTS_INFO).read_text())
    (store / CONCEPTS_INFO).write_text(json.dumps({**info, "format": "whaleaudit-concepts/1"}))
    at = start(audit="small")
    name = at.selectbox(key="concepts_species@small").value
    rows = concept_rows(store, name)
    assert [c.split("**")[1] for c in cards(at)] == [f"{name} #{rank + 1}" for rank in rows["rank"]]
    assert not factors(at)
    assert at.info[0].value.startswith("These concepts were found before WhaleAudit ordered them by how unusual")
    assert "Compute the concepts" in [b.label for b in at.button]
    shown = [m for c in at.caption for m in re.findall(r"\*\*(img_\w+)\*\*", c.value)]
    assert shown and shown == expected_photos(store, name, int(rows["rank"].iloc[0]), 0.5)[:12]
    assert any(", the largest share of the evidence first." in c.value for c in at.caption)


def test_concepts_found_before_pieces_open_with_two_factors_and_their_cells(store):
    """Concepts written before pieces and the third factor (whaleaudit-concepts/3: one ``centre`` per concept, no
    ``concentration``) show with the two factors that ranked them, and a photo's cells are outlined as before."""
    audit = open_audit(store)
    table = pd.read_parquet(store / CONCEPTS_TABLE)
    assert (table["centres"].map(len) == 1).all()   # the design: one piece per concept
    old = table.drop(columns=["concentration"]).assign(centre=table["centres"].map(lambda c: c[0])).drop(
        columns=["centres"])
    old.to_parquet(store / CONCEPTS_TABLE, index=False)
    at = start(audit="small")
    name = at.selectbox(key="concepts_species@small").value
    rows = concept_rows(store, name)
    assert factors(at) == [f"#{rank + 1} of 2 by unusualness = looks unlike the rest: {d:.1f}x × sits apart: "
                           f"{moved:.0%} of its evidence is where the class's is not"
                           for rank, d, moved in zip(rows["rank"], rows["distinctiveness"], rows["displacement"])]
    idx = int(np.flatnonzero((audit.images["pred_idx"] == rows["class_idx"].iloc[0]).to_numpy())[0])
    for concept in rows.itertuples():
        expected = concept_views.concept_cells(audit, table[table["species"] == name], idx, concept.rank)
        np.testing.assert_array_equal(concept_views.concept_cells(audit, rows, idx, concept.rank), expected)


def test_finding_concepts_tells_its_progress_class_by_class(store):
    told = []
    again = compute_concepts(open_audit(store), progress=told.append)
    assert told == [0, 1 / 3, 2 / 3]   # before each of the three classes
    pd.testing.assert_frame_equal(again.table, pd.read_parquet(store / CONCEPTS_TABLE))


def test_a_listed_photo_outlines_the_cells_its_concept_holds(store):
    """The cells outlined on a photo are the library's: their positive evidence is the concept's evidence in the
    photo as stored, and in the design they are the middle block for the concept on the animal, the corner for
    the other; the outline runs around them."""
    audit = open_audit(store)
    table = pd.read_parquet(store / CONCEPTS_TABLE)
    stored = np.load(store / CONCEPT_EVIDENCE)
    positive = np.maximum(audit.evidence[:, 0].astype(np.float32), 0).reshape(len(stored), -1)
    checked = 0
    for idx in np.flatnonzero((audit.images["status"] == "ok").to_numpy()):
        rows = table[table["class_idx"] == audit.images["pred_idx"].iloc[idx]]
        for concept in rows.itertuples():
            cells = concept_views.concept_cells(audit, rows, idx, concept.rank)
            assert cells.shape == GRID
            assert positive[idx][cells.reshape(-1)].sum() == pytest.approx(stored[idx, concept.rank], rel=1e-5)
            assert set(np.flatnonzero(cells)) == set(ON_BLOCK if concept.on_animal > 0.5 else OFF_BLOCK)
            checked += 1
    assert checked == 2 * (N - 1)
    photo = np.zeros((64, 64, 3), np.uint8)
    block = np.zeros(GRID, bool)
    block[3:5, 3:5] = True   # pixels 24-39
    drawn = (concept_views.outline_cells(photo, block) == concept_views.OUTLINE_RGB).all(axis=2)
    assert drawn[24, 24:40].all() and drawn[39, 24:40].all() and not drawn[26:38, 26:38].any()
    assert not drawn[:23].any() and not drawn[41:].any()


def test_a_crop_outlines_its_cell_in_its_surroundings():
    """An 80 x 160 photo on an 8 x 8 grid: a cell is 10 x 20 pixels; its crop holds it with one cell around (two at
    a corner), squashed to a square, and the outline runs on the cell's border."""
    rgb = np.zeros((80, 160, 3), np.uint8)
    rgb[20:30, 60:80] = 200   # cell 2 * 8 + 3
    assert concept_views.cell_box(19, GRID, 80, 160) == (60, 20, 80, 30)
    out = concept_views.crop(rgb, 19, GRID, size=90)
    outline = (out == concept_views.OUTLINE_RGB).all(axis=2)
    assert outline[30, 30:60].all() and outline[59, 30:60].all()
    assert outline[30:60, 30].all() and outline[30:60, 59].all()
    assert not outline[32:58, 32:58].any() and (out[35:55, 35:55] > 150).all()   # the cell inside, bright
    assert not outline[:29].any() and not outline[61:].any() and (out[:25] < 30).all()
    corner = concept_views.crop(rgb, 0, GRID, size=90)   # cells 0, 1, 8, 9: the cell is the top-left half
    outline = (corner == concept_views.OUTLINE_RGB).all(axis=2)
    assert outline[0, :45].all() and outline[44, :45].all() and not outline[50:].any() and not outline[:, 50:].any()


def test_the_strip_leaves_out_photos_that_cannot_be_read(store):
    audit = open_audit(store)
    overlays = views.Overlays(audit)
    row = lambda image: int(audit.images.index[audit.images["image"] == image][0])   # noqa: E731
    both = concept_views.strip(overlays.photo, [(row("img_000"), 0), (row(VANISHED), 5), (row(UNREADABLE), 9),
                                                (row("img_001"), 63)], GRID, size=40)
    assert both.shape == (40, 2 * 40 + concept_views.GAP_PX, 3)
    assert concept_views.strip(overlays.photo, [(row(VANISHED), 5)], GRID) is None
