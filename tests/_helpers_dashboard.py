"""What the dashboard tests share: a small audit they build for themselves (a few dozen rows, 3 species,
random 4x4 maps, tiny real PNG photos, one unreadable image, one photo deleted after the audit was built,
and label text that a spreadsheet would execute; on request, 8x8 evidence maps and cell descriptors with the
evidence concepts computed from them), a real Streamlit server on a free local port, and Debian's headless
Chromium (never a downloaded one) to look at it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from whaleaudit.audit.concepts import write_concepts
from whaleaudit.audit.store import open_audit, write_store
from whaleaudit.columns import IMAGE_COLUMNS

CLASSES = ["beluga", "bottlenose_dolphin", "killer_whale"]
MASK_SIZE = 16
MALICIOUS_SPECIES_RAW = "=HYPERLINK(\"http://evil.example\",\"x\")"
MALICIOUS_INDIVIDUAL = "+cmd|' /C calc'!A0"
UNREADABLE = "img_unreadable"
VANISHED = "img_vanished"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def make_audit(root: Path, name: str = "small", n: int = 36, seed: int = 0, cam_shape=(4, 4),
               concepts: bool = False) -> Path:
    """Write images under ``root/images`` and the audit at ``root/audits/<name>``, with maps of ``cam_shape``
    cells, and with ``concepts`` the evidence maps, cell descriptors and evidence concepts
    (:func:`evidence_arrays`); return the audit folder."""
    rng = np.random.default_rng(seed)
    image_root = root / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    ids = [f"img_{i:03d}" for i in range(n - 2)] + [UNREADABLE, VANISHED]
    label = np.arange(n) % len(CLASSES)
    probs = rng.dirichlet(np.ones(len(CLASSES)), size=n).astype(np.float32)
    probs[: n // 2, :] = 0.1 / (len(CLASSES) - 1)  # the first half is predicted right, confidently
    probs[np.arange(n // 2), label[: n // 2]] = 0.9
    pred = probs.argmax(1)
    ok = np.array([i != UNREADABLE for i in ids])
    bg = rng.uniform(0, 1, n)
    bg[3] = np.nan  # an image without a foreground estimate has no score
    frame = pd.DataFrame({
        "image": ids,
        "path": [f"{i}.png" for i in ids],
        "species_raw": [CLASSES[k] for k in label],
        "species": [CLASSES[k] for k in label],
        "individual_id": [f"ind_{i % 7}" for i in range(n)],
        "split": np.where(np.arange(n) % 5 == 0, "valid", "train"),
        "status": np.where(ok, "ok", "error"),
        "error": np.where(ok, "", "truncated: the file ends before the image does"),
        "label_idx": label,
        "pred_idx": np.where(ok, pred, -1),
        "prediction": [CLASSES[p] if good else "" for p, good in zip(pred, ok)],
        "prob_pred": np.where(ok, probs.max(1), np.nan),
        "prob_true": np.where(ok, probs[np.arange(n), label], np.nan),
        "loss": np.where(ok, -np.log(probs[np.arange(n), label]), np.nan),
        "correct": ok & (pred == label),
        "fg_source": np.where(np.isnan(bg), "none", "auto"),
        "fg_area": rng.uniform(0.05, 0.6, n),
        "bg_share": bg * 0.8 + 0.1,
        "bg_score": bg,
        "bg_share_true": rng.uniform(0, 1, n),
        "bg_score_true": rng.uniform(0, 1, n),
        "peak_on_animal": rng.integers(0, 2, n).astype(float),
        "cam_entropy": rng.uniform(0, 1, n),
        "prob_without_animal": rng.uniform(0, 1, n),
        "prob_animal_only": rng.uniform(0, 1, n),
        "prob_flat_photo": rng.uniform(0, 1, n),
        "causal_checked": "sample",
    })
    frame.loc[1, "species_raw"] = MALICIOUS_SPECIES_RAW
    frame.loc[2, "individual_id"] = MALICIOUS_INDIVIDUAL
    for k, image in enumerate(ids):
        if image != UNREADABLE:
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(image_root / f"{image}.png")
    (image_root / f"{UNREADABLE}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cams = rng.normal(0, 1, (n, len(CLASSES), *cam_shape)).astype(np.float16)
    masks = np.zeros((n, MASK_SIZE, MASK_SIZE), dtype=bool)
    masks[:, 4:12, 4:12] = True
    manifest = {"classes": CLASSES, "dataset": {"image_root": str(image_root), "label_file": None, "n_images": n},
                "model": {"arch": "resnet18", "head": "cam", "pretrained": False}, "input_size": 128,
                "cam": {"method": "exact-cam", "layer": "layer4", "shape": list(cam_shape)} if cam_shape == (4, 4)
                else {"method": "grad-cam", "layer": "layer3", "shape": list(cam_shape), "spread": 1.3}}
    extra = evidence_arrays(np.random.default_rng([seed, 1]), ok) if concepts else {}
    store = write_store(root / "audits" / name, frame.assign(idx=0)[IMAGE_COLUMNS], probs, cams, masks, manifest,
                        mask_size=MASK_SIZE, **extra)
    if concepts:
        write_concepts(open_audit(store))
    (image_root / f"{VANISHED}.png").unlink()
    return store


def evidence_arrays(rng, ok: np.ndarray) -> dict:
    """8 x 8 evidence maps and 4-number cell descriptors of two kinds, the left half of the frame near one point
    and the right half near another, so that each class's concepts split its evidence between the halves in a
    proportion that differs from photo to photo; none for an unreadable photo."""
    n = len(ok)
    left = rng.uniform(0, 1, n)[:, None, None, None]
    side = np.arange(8) < 4
    evidence = np.where(side, left, 1 - left) * rng.uniform(0.5, 1.5, (n, 2, 8, 8)) - 0.1
    evidence[~ok] = 0
    cells = np.where(side[None, None, :, None], [5.0, 0, 0, 0], [0, 5.0, 0, 0]) + rng.normal(0, 0.5, (n, 8, 8, 4))
    return {"evidence": evidence.astype(np.float16), "cells": cells.reshape(n, 64, 4).astype(np.float16),
            "cell_basis": np.zeros((5, 8), np.float32)}


def review_worker(path, worker: int, n_ops: int, seed: int, shared: list[str]) -> list[dict]:
    """Random flag/unflag/note actions on shared images and on images only this worker touches; returns
    what it did, in order, so a test can replay it."""
    import random

    from whaleaudit.audit.review import REASONS, Review

    rng = random.Random(seed)
    review = path if isinstance(path, Review) else Review(path)
    private = [f"w{worker}_{k}" for k in range(4)]
    log = []
    for i in range(n_ops):
        images = rng.sample(shared + private, k=rng.choice([1, 1, 1, 3]))
        action, tag, who = rng.choice(["flag", "unflag", "note"]), f"w{worker}-op{i}", f"worker {worker}"
        reason = rng.choice(REASONS)
        if action == "flag":
            review.flag(images, reason, tag, who)
        elif action == "unflag":
            review.unflag(images, who)
        else:
            images = images[:1]
            review.note(images[0], tag, who)
        log.append({"images": images, "action": action, "reason": reason, "note": tag, "who": who})
    return log


@contextlib.contextmanager
def chromium():
    """Debian's Chromium through Playwright; the test is skipped without it, or fails where
    ``WHALEAUDIT_REQUIRE_BROWSER`` says it must run (CI)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) to run this test"
        if os.environ.get("WHALEAUDIT_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(command: list[str], port: int, *, cwd: Path, env: dict, log: Path, wait: float = 90):
    """Run ``command`` (a Streamlit server listening on ``port``) and yield its base URL once it answers its
    health check; stop it afterwards. Its output goes to ``log``, shown when it does not come up."""
    with open(log, "ab") as out:
        server = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + wait
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


#: True once the page is at rest: the frontend's script-run state (Streamlit 1.67 writes it on stApp) says no run
#: is going or asked for (the status widget shows only after half a second of running, and stays up with a
#: "source changed" prompt), no element still waits for its lazily loaded code (a skeleton stands in for it),
#: every Plotly chart has drawn, and every image has loaded.
AT_REST = """() =>
    document.querySelector('[data-testid="stApp"]')?.getAttribute('data-test-script-state') === 'notRunning'
    && !document.querySelector('[data-testid="stSkeleton"]')
    && [...document.querySelectorAll('[data-testid="stPlotlyChart"]')].every(c => c.querySelector('.main-svg'))
    && [...document.images].every(i => i.complete)"""


def settle(page, text: str, *, exact: bool = False) -> None:
    """Wait until ``text`` shows and the page is at rest (:data:`AT_REST`), then until ``text`` shows still: the
    elements of a run that has not ended yet, or of the page a link left, show until the run ends. ``text``
    must be one that only the awaited run draws, or the wait may end before the run has begun."""
    shown = page.get_by_text(text, exact=exact).first
    shown.wait_for(timeout=60_000)
    page.wait_for_function(AT_REST, timeout=60_000, polling=100)
    shown.wait_for(timeout=60_000)


def steady_box(locator) -> dict:
    """The bounding box of what ``locator`` finds once it is visible and has stopped moving (a chart sizes itself
    to its column after it first draws), for a click at a point inside it."""
    locator.element_handle(timeout=60_000).wait_for_element_state("stable", timeout=60_000)
    return locator.bounding_box(timeout=60_000)
