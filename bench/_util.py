"""What the bench scripts share: where data and output lie, the machine they ran on, memory sampling, and the
printed table. Imported by the scripts as a sibling module (a script's own folder is on ``sys.path``)."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
#: Where the benches write (caches, generated photos, audits): bench/out, or WHALEAUDIT_BENCH_OUT (the tests'
#: smoke runs point it at a temporary folder).
OUT = Path(os.environ.get("WHALEAUDIT_BENCH_OUT") or ROOT / "bench" / "out")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def require(*paths: Path) -> None:
    """Stop with a sentence (exit status 2) when the real data a bench reads is not here."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        sys.exit(f"needs the real Happywhale data, not found: {', '.join(missing)} (the bench reads ../shared/data "
                 "beside the repository)")


def concepts_current(store: Path) -> bool:
    """Does the audit at ``store`` hold concepts written by this library's version of the concepts (its
    ``concepts.json`` names the current format)? A cached audit with older ones has them found again."""
    from whaleaudit.explain.concepts import FORMAT

    info = store / "concepts.json"
    return info.is_file() and json.loads(info.read_text()).get("format") == FORMAT


def quiet_caches(folder: Path) -> None:
    """torch, fastai and matplotlib caches go under ``folder`` (bench/out), never the home folder."""
    for var in ("TORCH_HOME", "FASTAI_HOME", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR"):
        os.environ.setdefault(var, str(folder / "cache" / var.lower()))


def cpu_features() -> list[str]:
    """The CPU's vector and matrix extensions that decide how fast the network runs: AVX2, every AVX-512 flag
    (avx512_bf16: native bf16) and AMX, as /proc/cpuinfo (what ``lscpu`` reads) lists them."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = re.search(r"flags\s*:\s*(.*)", cpuinfo)
    return [f for f in (flags.group(1).split() if flags else []) if f == "avx2" or f.startswith(("avx512", "amx"))]


def machine() -> str:
    """One line: CPU model, cores, vector extensions, memory, Python."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    simd = cpu_features()
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()) if Path("/proc/meminfo").exists() else None
    gib = f"{int(mem.group(1)) / 2**20:.0f} GiB RAM" if mem else "RAM unknown"
    return (f"{model.group(1).strip() if model else platform.processor() or 'CPU'}, {os.cpu_count()} cores "
            f"({'/'.join(simd) or 'no AVX2'}), {gib}, Python {platform.python_version()}")


def load() -> str:
    """The 1/5/15-minute load averages: other work on the machine while the numbers were taken."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size: pages shared between processes counted once in total, not once per process."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        return int(re.search(r"^Pss:\s+(\d+) kB", text, re.M).group(1)) * 1024
    except (OSError, AttributeError, ValueError):
        return 0


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(k) for k in task.read_text().split()]
        except OSError:
            pass
    return kids + [g for k in kids for g in _children(k)]


class PeakMemory:
    """Samples memory while in the ``with`` block.

    ``start`` and ``peak``: this process's resident size when the block began and at its highest (sampled
    every ``every`` seconds); ``peak_all``: the highest proportional set size of this process plus its child
    processes (DataLoader workers), so pages the children share with this process count once. PSS is read
    only every ``pss_every`` seconds: the kernel walks every page table to report it, which would slow the
    process being measured.
    """

    def __init__(self, every: float = 0.05, pss_every: float = 1.0):
        self.every, self.pss_every = every, pss_every
        self.start, self.peak, self.peak_all = _rss(os.getpid()), 0, 0
        self._stop = threading.Event()

    def _sample(self):
        me, last_pss = os.getpid(), 0.0
        while True:
            self.peak = max(self.peak, _rss(me))
            if time.monotonic() - last_pss >= self.pss_every:
                last_pss = time.monotonic()
                kids = _children(me)
                if kids:
                    self.peak_all = max(self.peak_all, _pss(me) + sum(_pss(k) for k in kids))
            if self._stop.wait(self.every):
                return

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``fn()``. CPU time counts every thread of this process and the child
    processes that ended meanwhile (loader workers): on a machine busy with other work it still tells what
    the work costs, where wall time also tells how long others held the cores."""
    before, start = os.times(), time.perf_counter()
    fn()
    wall, after = time.perf_counter() - start, os.times()
    return wall, sum(after[:4]) - sum(before[:4])


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, columns padded so it also reads as plain text."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"
