"""The page of `dvc plots show` and `dvc plots diff` with no network: an HTML template for DVC
(`plots.html_template`) whose vega, vega-lite and vega-embed come inlined from vl-convert-python,
a dependency already installed, instead of DVC's default <script> tags to a CDN.

\b
    python -m imgpipe.plots_page            # in the project root; `make` runs it (docs/plots.md)
    python -m imgpipe.plots_page --root path/to/project

Writes .dvc/plots_page.html (git-ignored) and sets `plots.html_template` in .dvc/config.local
(`dvc config --local`), so a clone without it keeps DVC's default page.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.atomic import atomic_file
from imgpipe.core.errors import UserError
from imgpipe.core.stage_app import make_app, reports_user_errors

PAGE_NAME = "plots_page.html"  # in .dvc/: DVC resolves a relative plots.html_template from there
VEGA_LITE_MAJOR = "5"  # DVC's plot templates and .dvc/plots/*.json are Vega-Lite v5 specs

# dvc_render fills {plot_divs} and {refresh_tag}; with no {scripts} it adds no CDN <script> tags.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {versions}: inlined by imgpipe.plots_page, no network needed -->
    <script>
(() => {{
{bundle}
}})();
    </script>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def vega_bundle() -> tuple[str, str]:
    """vl-convert's one-file build of vega, vega-lite (the newest v5 it has) and vega-embed, which
    sets `window.vega`, `window.vegaLite` and `window.vegaEmbed`; and the versions, as one line."""
    import vl_convert

    majors = [v for v in vl_convert.get_vegalite_versions() if v.split(".")[0] == VEGA_LITE_MAJOR]
    if not majors:
        raise UserError(f"vl-convert-python {_vl_convert_version()} has no Vega-Lite v{VEGA_LITE_MAJOR}")
    lite = max(majors, key=lambda v: tuple(int(part) for part in v.split(".")))
    versions = (
        f"vega {vl_convert.get_vega_version()}, vega-lite {lite}, vega-embed {vl_convert.get_vega_embed_version()}"
        f" from vl-convert-python {_vl_convert_version()}"
    )
    return vl_convert.javascript_bundle(vl_version=lite), versions


def _vl_convert_version() -> str:
    return importlib.metadata.version("vl-convert-python")


def build_page(bundle: str, versions: str) -> str:
    """The template text: `bundle` inside one <script> (in a function, so its top-level names stay
    out of the page's global scope, where DVC's plot scripts declare `var spec`)."""
    # Text that would end the <script> early, or that DVC would replace inside the code.
    for bad in ("</script", "<!--", "{plot_divs}", "{refresh_tag}", "{scripts}"):
        if bad in bundle.lower():
            raise UserError(f"vl-convert-python {_vl_convert_version()}'s bundle holds {bad!r}: it cannot be inlined")
    return PAGE.format(versions=versions, bundle=bundle)


def install_page(root: Path) -> Path:
    """Write `root`/.dvc/plots_page.html and point the project's local DVC config at it."""
    dvc_dir = root / ".dvc"
    if not dvc_dir.is_dir():
        raise UserError(f"{root} is not a DVC project (no .dvc folder): run in the project root or pass --root")
    page = dvc_dir / PAGE_NAME
    with atomic_file(page) as partial:
        partial.write_text(build_page(*vega_bundle()), encoding="utf-8")
    config = [sys.executable, "-m", "dvc", "config", "--local", "plots.html_template", PAGE_NAME]
    done = subprocess.run(config, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"dvc config --local plots.html_template failed: {done.stderr.strip() or done.stdout.strip()}")
    return page


app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    root: Annotated[Path, typer.Option(help="The DVC project's root folder.")] = Path("."),
) -> None:
    page = install_page(root)
    print(f"plots page: {page} ({page.stat().st_size // 1024} KiB), set as plots.html_template in .dvc/config.local")


if __name__ == "__main__":
    app()
