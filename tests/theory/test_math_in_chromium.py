"""The page in a real browser, headless Chromium (skipped where it is not installed:
``apt-get install chromium``): brackets stretch over what they enclose, bold letters come out bold,
and no formula runs past the edge of a printed A4 page."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from theory import build, printfit

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium)")

# Run in the page once its fonts are loaded: the maths whose content crosses an edge of the window
# (a display formula's own box is as wide as the column, so its content is measured), and each
# stretchy opening bracket against the tallest thing beside it in its row.
MEASURE = """<script>
document.fonts.ready.then(() => {
  const edge = document.documentElement.clientWidth, out = {edge, overflow: [], short: [], fences: 0};
  for (const m of document.querySelectorAll("math")) {
    const boxes = [...m.children, m].map(e => e.getBoundingClientRect()).slice(0, Math.max(1, m.children.length));
    if (Math.max(...boxes.map(b => b.right)) > edge + 0.5 || Math.min(...boxes.map(b => b.left)) < -0.5)
      out.overflow.push(m.textContent.slice(0, 80));
  }
  for (const mo of document.querySelectorAll('mo[stretchy="true"][form="prefix"]')) {
    const tallest = Math.max(...[...mo.parentElement.children].filter(e => e.tagName !== "mo")
                                  .map(e => e.getBoundingClientRect().height));
    out.fences += 1;
    if (mo.getBoundingClientRect().height < 0.9 * tallest) out.short.push(mo.textContent);
  }
  const pre = document.createElement("pre");
  pre.id = "measured"; pre.textContent = JSON.stringify(out); document.body.append(pre);
});
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=10000", *args], capture_output=True, text=True, timeout=180)


def measured_in_print(page: str, tmp_path: Path) -> dict:
    """``page`` laid out as printed on A4 (the print style sheet on, a window as wide as the
    printable part of the page), measured by ``MEASURE``."""
    printed = page.replace("@media print {", "@media all {").replace("</body>", MEASURE + "</body>")
    path = tmp_path / "printed.html"
    path.write_text(printed, encoding="utf-8")
    width = round((printfit.PAGE_WIDTH_MM - 2 * printfit.MARGIN_MM) * printfit.MM)
    done = chromium("--dump-dom", f"--window-size={width},1000", path.as_uri())
    found = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_brackets_stretch_and_no_formula_is_cut_when_printed(answers_html, tmp_path):
    measured = measured_in_print(answers_html, tmp_path)
    assert measured["edge"] == round((printfit.PAGE_WIDTH_MM - 2 * printfit.MARGIN_MM) * printfit.MM)
    assert measured["fences"] >= 20 and measured["short"] == []
    assert measured["overflow"] == []


def test_a_formula_too_wide_for_the_page_is_found(tmp_path):
    wide = build.render_markdown("$" + " + ".join(f"x_{{{i}}}" for i in range(60)) + "$", tmp_path)
    assert len(measured_in_print(build._page("wide", wide, []), tmp_path)["overflow"]) == 1


def ink(image: Image.Image) -> int:
    """The number of dark pixels."""
    return sum(image.convert("L").histogram()[:128])


def test_bold_letters_are_bold(tmp_path):
    # The same letter plain and bold, large, side by side; bold has visibly more ink.
    cells = {"bold": r"$\boldsymbol{\mu} \mathbf{1}$", "plain": r"$\mu 1$"}
    body = "".join(f'<div id="{k}" style="position: absolute; top: 150px; left: {x}px; font-size: 120px">'
                   f"{build.render_markdown(v, tmp_path)}</div>" for (k, v), x in zip(cells.items(), (40, 440)))
    path = tmp_path / "bold.html"
    path.write_text(build._page("bold", body, []), encoding="utf-8")
    shot = tmp_path / "bold.png"
    done = chromium(f"--screenshot={shot}", "--window-size=840,500", path.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot)
    bold, plain = ink(image.crop((0, 120, 420, 500))), ink(image.crop((420, 120, 840, 500)))
    assert plain > 1000 and bold > 1.3 * plain, (bold, plain)
