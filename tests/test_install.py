"""WhaleAudit as a user installs it, and its ``dashboard`` command.

The slow test builds the wheel from the checkout, installs it into a new virtual environment (its
dependencies are the project environment's, through a ``.pth`` line, so nothing is downloaded) and uses it
from a folder that is not the checkout: ``whaleaudit --help`` answers, and ``whaleaudit dashboard`` serves
an audit from the files the wheel carries, on this machine only.
"""

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect
from _helpers_dashboard import chromium, free_port, make_audit, serve, settle

REPO = Path(__file__).resolve().parents[1]
DASHBOARD_FILES = ["streamlit_app.py", "app_frame.py", ".streamlit/config.toml",
                   *(f"pages/{p.name}" for p in sorted((REPO / "pages").glob("*.py")))]


def run(command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)


def test_dashboard_help_is_fast_and_bad_options_are_refused(tmp_path):
    """``--help`` imports neither torch nor Streamlit; a file given as the audits folder or a port out of
    range is a message, not a traceback."""
    code = """
import sys
from whaleaudit import cli
try:
    cli.main(["dashboard", "--help"])
except SystemExit:
    pass
print(sorted(m for m in ("torch", "fastai", "streamlit") if m in sys.modules))
"""
    done = run([sys.executable, "-c", code], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m whaleaudit dashboard" in done.stdout and "--audits" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"

    not_a_folder = tmp_path / "audits.txt"
    not_a_folder.write_text("")
    done = run([sys.executable, "-m", "whaleaudit", "dashboard", "--audits", str(not_a_folder)], tmp_path)
    assert (done.returncode, done.stderr) == (1, f"error: {not_a_folder}: not a folder; --audits takes the folder "
                                                 "that holds the audits\n")
    done = run([sys.executable, "-m", "whaleaudit", "dashboard", "--port", "70000"], tmp_path)
    assert done.returncode == 2 and "70000: a TCP port between 1 and 65535" in done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The ``bin`` folder of a new virtual environment with the wheel built from the checkout installed."""
    root = tmp_path_factory.mktemp("install")
    # no build isolation: the build backend (hatchling) comes from requirements-dev.txt, not from the network
    done = run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                "-w", str(root / "wheel")], root)
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = next((root / "wheel").glob("whaleaudit-*.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {f"whaleaudit/_dashboard/{name}" for name in DASHBOARD_FILES} <= shipped
    assert "whaleaudit/cli.py" in shipped and not any(name.startswith(("tests/", "bench/")) for name in shipped)

    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root)
    # the dependencies: the project environment's packages, after the new environment's own
    (Path(purelib.stdout.strip()) / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                str(wheel)], root)
    assert done.returncode == 0, done.stderr[-3000:]
    return env_dir / "bin"


@pytest.mark.slow
@pytest.mark.e2e
def test_the_installed_command_serves_the_dashboard_from_another_folder(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"  # no checkout, no .streamlit/config.toml here
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WHALEAUDIT_AUDITS", "VIRTUAL_ENV")}
    done = run([str(installed / "whaleaudit"), "--help"], elsewhere, env=env)
    assert done.returncode == 0 and "dashboard" in done.stdout, done.stderr
    where = run([str(installed / "python"), "-c", "from whaleaudit.cli import dashboard_app; print(dashboard_app())"],
                elsewhere, env=env)
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout + where.stderr  # the wheel's copy

    store = make_audit(tmp_path / "work")
    port = free_port()
    log = tmp_path / "dashboard.log"
    command = [str(installed / "whaleaudit"), "dashboard", "--audits", str(store.parent), "--port", str(port)]
    with serve(command, port, cwd=elsewhere, env=env, log=log) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/heatmap?image=img_005")
        settle(page, "Background attention")
        page.get_by_role("heading", name="img_005").wait_for(timeout=60_000)
        audit = page.get_by_test_id("stSidebar").get_by_role("combobox", name="Audit")
        expect(audit).to_have_value("small", timeout=30_000)  # the sidebar may draw a moment after the page
        assert not page.locator('[data-testid="stException"]').count()
        page.close()
    assert f"URL: http://127.0.0.1:{port}" in log.read_text()  # this machine only, with no config file in sight


@pytest.mark.slow
@pytest.mark.e2e
def test_the_installed_command_builds_the_demo_and_serves_it_from_another_folder(installed, tmp_path):
    """A user's first steps after `pip install`: `whaleaudit demo`, then `whaleaudit dashboard`, in a folder of
    their own; what they make lands in that folder."""
    elsewhere = tmp_path / "project"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "WHALEAUDIT_AUDITS", "WHALEAUDIT_HOME", "VIRTUAL_ENV")}
    done = run([str(installed / "whaleaudit"), "demo", "--recipe", "tiny"], elsewhere, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (elsewhere / "audits" / "demo" / "manifest.json").is_file() and (elsewhere / "models" / "demo.pth").is_file()
    assert "whaleaudit dashboard" in done.stderr
    port = free_port()
    with serve([str(installed / "whaleaudit"), "dashboard", "--port", str(port)], port, cwd=elsewhere, env=env,
               log=tmp_path / "dashboard.log") as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base)
        page.get_by_role("heading", name="Overview · demo").wait_for(timeout=60_000)
        settle(page, "Overview · demo")
        assert not page.locator('[data-testid="stException"]').count()
        page.close()
