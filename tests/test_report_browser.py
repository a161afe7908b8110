"""The HTML report in a real headless browser (Debian's chromium): every chart drawn, no script error,
and a hostile name from a result file shown as text.

The page records what happened in its own DOM (``#gpusizer-status``: charts drawn, script errors),
and chromium's ``--dump-dom`` hands that DOM back after the page's timers have run.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BROWSER_DEADLINE_S = 180  # generous: the page carries 3.5 MB of plotly.js and the CI machine may be busy
HOSTILE_NAME = "<img src=x onerror=\"document.title='pwned'\">"


def find_chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)


pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="needs a headless browser: apt-get install -y chromium (Debian's package; .ci/run installs it)")


def dump_dom(page: Path, profile: Path, extra: tuple[str, ...] = ("--dump-dom",)) -> str:
    """Load the page in headless chromium, let its scripts and timers run, return the final DOM
    (or, with other ``extra`` arguments such as ``--screenshot``, what chromium prints)."""
    # --disable-dev-shm-usage: containers often have a tiny /dev/shm, where chromium's renderer crashes.
    command = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
               "--disable-extensions", f"--user-data-dir={profile}", "--virtual-time-budget=15000", *extra,
               page.as_uri()]
    log = profile.parent / f"{profile.name}-chromium.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
        try:
            out, _ = process.communicate(timeout=BROWSER_DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # chromium's renderer and helpers go with it
            process.communicate()
            pytest.fail(f"chromium did not finish loading {page} within {BROWSER_DEADLINE_S} s; log: {log}")
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    errors = log.read_text(errors="replace")[-2000:]
    assert process.returncode == 0, f"chromium exited with {process.returncode}:\n{errors}"
    assert out.strip() or "--dump-dom" not in extra, f"chromium printed no DOM:\n{errors}"
    return out.decode("utf-8", errors="replace")


def page_status(dom: str) -> dict:
    match = re.search(r'<p id="gpusizer-status"([^>]*)>', dom)
    assert match, "the report's status element is missing from the loaded page"
    return {name: html.unescape(value) for name, value in re.findall(r'data-([a-z-]+)="([^"]*)"', match.group(1))}


@pytest.fixture(scope="module")
def full_report(real_result_files, tmp_path_factory) -> Path:
    """A report drawing all seven charts (the step split among them): real runs, plus a copy of one as a second machine with NVML
    telemetry (which cannot exist without a GPU) and a hostile hostname - both changes marked here."""
    folder = tmp_path_factory.mktemp("browser-report")
    data = json.loads(Path(real_result_files[0]).read_text())
    data["machine_info"]["node"] = HOSTILE_NAME
    for bench in data["benchmarks"]:
        bench["extra_info"]["telemetry"] = {"source": "nvml", "energy_j": 120.0, "cpu": {},
                                            "devices": [{"util_mean_pct": 90.0, "memory_total_bytes": 16 * 1024**3}]}
    hostile = folder / "hostile.json"
    hostile.write_text(json.dumps(data))
    prices = folder / "prices.csv"
    prices.write_text("match,price_per_hour,per,source,date\n"
                      f"{data['machine_info']['gpusizer']['cpu_model']},0.5,instance,browser test,2026-11-28\n")
    out = folder / "report.html"
    done = subprocess.run([sys.executable, "-m", "reports", "report", *real_result_files, str(hostile),
                           "--prices", str(prices), "-o", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return out


def test_every_chart_draws_without_a_script_error(full_report, tmp_path):
    dom = dump_dom(full_report, tmp_path / "profile")
    status = page_status(dom)
    assert status["errors"] == ""
    assert int(status["plots-expected"]) == 7
    assert int(status["plots-drawn"]) == 7
    assert "<title>pwned</title>" not in dom and "gpusizer report" in dom.split("</title>")[0]
    # The hostile hostname is text on the page, not an element.
    assert html.escape(HOSTILE_NAME, quote=False) in dom
    assert '<img src="x"' not in dom


def test_a_script_error_on_the_page_is_caught(full_report, tmp_path):
    """The check above can fail: the same page with one throwing script reports the error."""
    broken = tmp_path / "broken.html"
    broken.write_text(full_report.read_text().replace(
        '<h2>Charts</h2>', '<h2>Charts</h2><script>throw new Error("deliberate test error")</script>', 1))
    status = page_status(dump_dom(broken, tmp_path / "profile"))
    assert "deliberate test error" in status["errors"]


SCREEN_WIDTH_PX = 1400  # a laptop screen: the answer must read there without scrolling sideways


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (no imaging library needed)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_the_page_at_1400_px_draws_every_chart_and_the_answer_needs_no_sideways_scroll(full_report, tmp_path):
    window = f"--window-size={SCREEN_WIDTH_PX},1000"
    status = page_status(dump_dom(full_report, tmp_path / "profile", (window, "--dump-dom")))
    assert status["errors"] == ""
    assert int(status["plots-drawn"]) == int(status["plots-expected"]) == 7
    assert 0 < int(status["viewport-px"]) <= SCREEN_WIDTH_PX
    assert int(status["answer-overflow-px"]) == 0, status  # the answer section scrolls not at all sideways
    assert int(status["page-overflow-px"]) == 0, status  # nor does the page (the wide table scrolls in its box)
    # A real screenshot at that width: the page renders to pixels, not only to a DOM.
    shot = tmp_path / "report.png"
    dump_dom(full_report, tmp_path / "profile-shot", (window, f"--screenshot={shot}", "--hide-scrollbars"))
    width, height = png_size(shot)
    assert width == SCREEN_WIDTH_PX and height > 0
    assert len(set(png_pixels(shot))) > 50  # not a blank page: text and charts give many colours


def png_pixels(path: Path) -> bytes:
    """The PNG's decompressed scanlines (filter bytes included): enough to tell a blank page apart."""
    data, position, chunks = path.read_bytes(), 8, []
    while position < len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        if kind == b"IDAT":
            chunks.append(data[position + 8:position + 8 + length])
        position += 12 + length
    return zlib.decompress(b"".join(chunks))
