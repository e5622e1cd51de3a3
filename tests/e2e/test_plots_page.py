"""`dvc plots show` and `dvc plots diff` pages render with no network: the project's template
(`imgpipe.plots_page`, installed by make's install step) inlines vega, vega-lite and vega-embed.

Each page is opened in real headless Chromium (Debian's `chromium`; the tests skip without it) with
every host name unresolvable and every HTTP request sent to a dead proxy. A probe script injected
into a copy of the page records script errors and failed loads, waits for the plots, and writes a
JSON summary into the DOM, which `--dump-dom` hands back: every vega plot drew (its div holds a
<canvas> or <svg>), every <img> loaded, no script error. The negative control opens DVC's default
template (its scripts on a CDN) under the same blocked network and sees the same check fail.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image
from support.project import REPO, assert_one_line_error, in_process, make_project, run

from imgpipe.plots_page import PAGE_NAME
from imgpipe.plots_page import app as plots_page_app

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's `chromium` on PATH (apt-get install chromium)")

EXTRA_IMAGE = "metrics/page_check/sample.png"  # an image plot, so the <img> check has one to see

# Runs before the page's own scripts: it sees every error, then reports once the plots are drawn
# (or after 5 s of Chromium's virtual time). VEGA_IDS: the ids DVC passed to vegaEmbed.
PROBE = """
(() => {
  const errors = [];
  window.addEventListener("error", (e) => {
    const t = e.target;
    if (t && t !== window) errors.push(`${t.tagName} failed to load: ${t.src || t.href}`);
    else errors.push(`${e.message} (${e.filename}:${e.lineno})`);
  }, true);
  window.addEventListener("unhandledrejection", (e) => errors.push(`unhandled rejection: ${e.reason}`));
  const summary = () => ({
    errors,
    vega: VEGA_IDS.map((id) => {
      const div = document.getElementById(id);
      return {id, drawn: !!(div && div.querySelector("canvas, svg"))};
    }),
    images: [...document.images].map((i) => ({src: i.getAttribute("src"), loaded: i.complete && i.naturalWidth > 0})),
  });
  const settled = (s) => s.vega.every((p) => p.drawn) && [...document.images].every((i) => i.complete);
  window.addEventListener("load", () => {
    let polls = 50;
    const report = () => {
      if (polls-- > 0 && !settled(summary())) return setTimeout(report, 100);
      const out = document.createElement("pre");
      out.id = "plots-page-check";
      out.textContent = JSON.stringify(summary());
      document.body.append(out);
    };
    report();
  });
})();
"""

OFFLINE = [
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost',  # no name resolves
    "--proxy-server=127.0.0.1:9",  # and any http(s) request, IP literals too, goes nowhere
]


def render_in_chromium(page: Path, tmp_path: Path) -> dict:
    """Open a copy of `page` (beside it, so its relative image paths hold) in headless Chromium with
    no network, and return the probe's summary: `errors`, `vega` ({id, drawn}), `images` ({src, loaded})."""
    text = page.read_text(encoding="utf-8")
    ids = re.findall(r"vegaEmbed\('#([^']+)'", text)
    probe = PROBE.replace("VEGA_IDS", json.dumps(ids))
    probed = page.with_name(f"probed-{page.name}")
    probed.write_text(text.replace("<head>", f"<head>\n<script>{probe}</script>", 1), encoding="utf-8")
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}", *OFFLINE,
            "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)  # the probe says what failed
    found = re.search(r'<pre id="plots-page-check">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, f"the probe never reported (chromium exit {done.returncode}):\n{done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def page_problems(summary: dict) -> list[str]:
    """What is wrong with a rendered page: script errors, vega plots not drawn, images not loaded."""
    return [
        *(f"error: {e}" for e in summary["errors"]),
        *(f"vega plot not drawn: {p['id']}" for p in summary["vega"] if not p["drawn"]),
        *(f"image not loaded: {i['src']}" for i in summary["images"] if not i["loaded"]),
    ]


def images_of(summary: dict, folder: str) -> list[dict]:
    """The page's <img> of the plot files under `folder` (a project path such as
    metrics/evaluate/plots/images): DVC copies each to static/<rev>_<path with / as _>."""
    key = folder.strip("/").replace("/", "_") + "_"
    return [i for i in summary["images"] if key in Path(i["src"]).name]


def assert_renders(project: Path, command: list[str], out: str, tmp_path: Path, revisions: int) -> dict:
    """`dvc plots <command> -o <out>` writes a page that draws every plot offline: each vega plot
    and each image, EXTRA_IMAGE once per revision."""
    run(["dvc", "plots", *command, "-o", out], project)
    page = project / out / "index.html"
    text = page.read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in text
    summary = render_in_chromium(page, tmp_path)
    assert page_problems(summary) == []
    assert summary["vega"] and len(summary["images"]) == text.partition("<body>")[2].count("<img ")
    assert len(images_of(summary, Path(EXTRA_IMAGE).parent.as_posix())) == revisions
    return summary


@pytest.fixture(scope="module")
def project(tmp_path_factory, ran_shapes: Path) -> Path:
    """A git + DVC project with the shapes run's results committed, an image plot added, and the
    offline template installed as make's install step does (`python -m imgpipe.plots_page`)."""
    repo = make_project(tmp_path_factory.mktemp("plots-page") / "repo", {})
    shutil.copytree(ran_shapes / "metrics", repo / "metrics", dirs_exist_ok=True)
    (repo / EXTRA_IMAGE).parent.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 40, 40)).save(repo / EXTRA_IMAGE)
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    pipeline["plots"].append(EXTRA_IMAGE)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "results"], repo)
    run(["python", "-m", "imgpipe.plots_page"], repo)
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # the template stays out of git
    return repo


@needs_chromium
def test_show_renders_offline(project: Path, tmp_path: Path):
    summary = assert_renders(project, ["show"], "dvc_plots", tmp_path, revisions=1)
    # The reliability diagram is on the page (and drawn: assert_renders saw every vega plot drawn).
    assert "Reliability diagram (test)" in (project / "dvc_plots/index.html").read_text(encoding="utf-8")
    # The gallery of mistakes and augment's sample sheet are on the page, loaded.
    mistakes = sorted(p.name for p in (project / "metrics/evaluate/plots/images").glob("mistake_*.png"))
    assert mistakes and len(images_of(summary, "metrics/evaluate/plots/images")) == len(mistakes)
    assert len(images_of(summary, "metrics/augment/plots/images")) == 1


@needs_chromium
def test_diff_renders_offline(project: Path, tmp_path: Path):
    assert_renders(project, ["diff", "HEAD"], "diff_plots", tmp_path, revisions=2)  # HEAD and the workspace


@needs_chromium
def test_default_template_fails_offline(project: Path, tmp_path: Path):
    """The negative control: DVC's own page, its scripts on a CDN, draws no vega plot offline."""
    from dvc_render.html import PAGE_HTML

    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML)
    run(["dvc", "plots", "show", "-o", "cdn_plots", "--html-template", str(default)], project)
    summary = render_in_chromium(project / "cdn_plots" / "index.html", tmp_path)
    problems = page_problems(summary)
    assert summary["vega"] and not any(p["drawn"] for p in summary["vega"]), problems
    assert any("cdn.jsdelivr.net/npm/vega@5" in p for p in problems), problems
    assert any("vegaEmbed is not defined" in p for p in problems), problems
    assert all(i["loaded"] for i in summary["images"])  # local files still load


def test_a_clone_without_make_keeps_dvcs_page(project: Path, tmp_path: Path):
    """The setting is local (.dvc/config.local): a clone with no template gets DVC's own page, not
    DVC's error for a missing template."""
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / ".dvc" / PAGE_NAME).exists()
    run(["dvc", "plots", "show"], clone)
    assert "cdn.jsdelivr.net/npm/vega@5" in (clone / "dvc_plots" / "index.html").read_text(encoding="utf-8")


@needs_chromium
def test_image_check_sees_a_broken_image(tmp_path: Path):
    page = tmp_path / "page.html"
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    images = "".join(f'<img src="{name}">' for name in ("good.png", "broken.png", "gone.png"))
    page.write_text(f"<!DOCTYPE html><html><head></head><body>{images}</body></html>")
    problems = page_problems(render_in_chromium(page, tmp_path))
    assert [p for p in problems if p.startswith("image")] == ["image not loaded: broken.png", "image not loaded: gone.png"]


def test_make_installs_the_page():
    """Both install targets of the Makefile build the page (`make -n`: print, do not run)."""
    for target in (".venv/.installed", ".venv/.installed-dev"):
        dry = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, check=True).stdout
        assert "-m imgpipe.plots_page" in dry, dry


def test_not_a_dvc_project(tmp_path: Path):
    result = in_process(plots_page_app, ["--root", str(tmp_path)], tmp_path)
    assert_one_line_error(result, "not a DVC project", str(tmp_path))
    assert not (tmp_path / ".dvc" / PAGE_NAME).exists()
