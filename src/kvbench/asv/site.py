"""Make a published asv site work without internet access.

asv 0.6's index.html loads jQuery, flot, bootstrap and a few plugins from public CDNs, so the site shows nothing on
a machine that cannot reach them (a GPU cluster's intranet, a CI sandbox). This fetches the same libraries as npm
packages, with the npm client, copies them next to the page (`vendor/`) and points the page at the copies.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import tarfile

from kvbench.errors import KvbenchError

# (a piece of the CDN address the page uses, npm package, file inside the package)
LIBRARIES = [
    ("jquery-3.3.1.min.js", "jquery@3.3.1", "dist/jquery.min.js"),
    ("flot/0.8.3/jquery.flot.min.js", "flot@0.8.3", "jquery.flot.js"),
    ("flot/0.8.3/jquery.flot.time.min.js", "flot@0.8.3", "jquery.flot.time.js"),
    ("flot/0.8.3/jquery.flot.selection.min.js", "flot@0.8.3", "jquery.flot.selection.js"),
    ("flot/0.8.3/jquery.flot.categories.min.js", "flot@0.8.3", "jquery.flot.categories.js"),
    ("flot-orderbars@1.0.0/js/jquery.flot.orderBars.js", "flot-orderbars@1.0.0", "js/jquery.flot.orderBars.js"),
    ("stupidtable/1.0.1/stupidtable.min.js", "stupid-table-plugin@1.1.3", "stupidtable.min.js"),  # 1.0.1 not on npm
    ("blueimp-md5/2.19.0/js/md5.min.js", "blueimp-md5@2.19.0", "js/md5.min.js"),
    ("bootstrap@3.1.1/dist/js/bootstrap.min.js", "bootstrap@3.1.1", "dist/js/bootstrap.min.js"),
    ("bootstrap@3.1.1/dist/css/bootstrap.min.css", "bootstrap@3.1.1", "dist/css/bootstrap.min.css"),
]
TAG = re.compile(r'<(script|link)\b[^>]*?(?:src|href)="(https?://[^"]+)"[^>]*>')


def _package_dir(spec: str, cache: pathlib.Path) -> pathlib.Path:
    """The unpacked npm package `spec` (name@version) in `cache`, fetched with `npm pack` when missing."""
    target = cache / spec.replace("/", "_")
    if not target.exists():
        if shutil.which("npm") is None:
            raise KvbenchError("site-vendor needs the npm client (Node.js) to fetch the site's libraries")
        cache.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", str(cache)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise KvbenchError(f"npm pack {spec} failed: {out.stderr.strip().splitlines()[-1:]}")
        tarball = cache / out.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as tar:
            tar.extractall(target, filter="data")
    return target / "package"


def _local_tag(kind: str, name: str) -> str:
    if kind == "script":
        return f'<script src="vendor/{name}"'
    return f'<link rel="stylesheet" href="vendor/{name}"'


def vendor(html_dir: str | pathlib.Path, cache: str | pathlib.Path) -> list[str]:
    """Rewrite every .html page of the site to load its libraries from `vendor/`; return the files copied."""
    html_dir, cache = pathlib.Path(html_dir), pathlib.Path(cache)
    if not (html_dir / "index.html").exists():
        raise KvbenchError(f"no published site in {html_dir} (run asv publish first)")
    (html_dir / "vendor").mkdir(exist_ok=True)
    copied = set()

    def replace(match: re.Match) -> str:
        kind, url = match.group(1), match.group(2)
        for piece, spec, path in LIBRARIES:
            if piece in url:
                source = _package_dir(spec, cache) / path
                name = f"{spec.split('@')[0]}-{source.name}"
                shutil.copyfile(source, html_dir / "vendor" / name)
                copied.add(name)
                return _local_tag(kind, name) + ">"
        raise KvbenchError(f"the site loads {url}, which kvbench does not know how to vendor (a newer asv?)")

    for page in html_dir.glob("*.html"):
        text = page.read_text()
        page.write_text(TAG.sub(replace, text))
    return sorted(copied)
