"""Make a published asv site work without internet access.

asv 0.6's index.html loads jQuery, flot, bootstrap and a few plugins from public CDNs, so the site shows nothing on
a machine that cannot reach them (a GPU cluster's intranet, a CI sandbox). This fetches the same libraries as npm
packages, with the npm client, copies them next to the page (`vendor/`) and points the page at the copies.

Each package is pinned by the sha512 `integrity` the npm registry publishes for it (`npm view PKG@VER
dist.integrity`). The tarball in the cache is checked against that hash every time before a file is read from it,
so a tarball changed in the cache or served changed by a registry or mirror is refused, never copied into the site.
"""

from __future__ import annotations

import base64
import hashlib
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
# npm registry integrity of each package's tarball (`npm view PKG@VER dist.integrity`)
INTEGRITY = {
    "jquery@3.3.1":
        "sha512-Ubldcmxp5np52/ENotGxlLe6aGMvmF4R8S6tZjsP6Knsaxd/xp3Zrh50cG93lR6nPXyUFwzN3ZSOQI0wRJNdGg==",
    "flot@0.8.3":
        "sha512-xg2otcTJDvS+ERK+my4wxG/ASq90QURXtoM4LhacCq0jQW2jbyjdttbRNqU2cPykrpMvJ6b2uSp6SAgYAzj9tQ==",
    "flot-orderbars@1.0.0":
        "sha512-Jv51fvzevUjNXEeozpwEKfPjhiZhfiJddv0WHjduUTCmSF+7T5K7C9c9Y1wIVmUhDBv5fLMjgbwKecT0GIKPZA==",
    "stupid-table-plugin@1.1.3":
        "sha512-2Vk7XouQPxUQPRe9w0Fu7ZZ8kHLK7rDoLMsCgtKxRNJ7f4dSOGvW9CkHsq5wD6QsaEnWoyLBYH3xOEsrK3yWBg==",
    "blueimp-md5@2.19.0":
        "sha512-DRQrD6gJyy8FbiE4s+bDoXS9hiW3Vbx5uCdwvcCf3zLHL+Iv7LtGHLpr+GZV8rHG8tK766FGYBwRbu8pELTt+w==",
    "bootstrap@3.1.1":
        "sha512-TAzqS8E/ISpVHP29gYhy+1NSV+FJwApDVQhDfgLYsIuUDJiqJzH2DfORN5tiu+Ie2iBLrzEG34t4Rf465cigqg==",
}
TAG = re.compile(r'<(script|link)\b[^>]*?(?:src|href)="(https?://[^"]+)"[^>]*>')


def tarball_name(spec: str) -> str:
    """The file name `npm pack` gives the tarball of `spec` (name@version; a scope's @ and / become -)."""
    name, version = spec.lstrip("@").rsplit("@", 1)
    return f"{name.replace('/', '-')}-{version}.tgz"


def integrity(path: pathlib.Path) -> str:
    """npm's integrity string of a file: sha512-<base64 of the digest>."""
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def _tarball(spec: str, cache: pathlib.Path) -> pathlib.Path:
    """The npm tarball of `spec` in `cache` (fetched with `npm pack` when missing), checked against its pinned hash."""
    expected = INTEGRITY.get(spec)
    if expected is None:
        raise KvbenchError(f"{spec} has no pinned integrity hash in kvbench.site_vendor.INTEGRITY")
    path = cache / tarball_name(spec)
    if not path.exists():
        if shutil.which("npm") is None:
            raise KvbenchError("site-vendor needs the npm client (Node.js) to fetch the site's libraries")
        cache.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", str(cache)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise KvbenchError(f"npm pack {spec} failed: {out.stderr.strip().splitlines()[-1:]}")
        packed = cache / out.stdout.strip().splitlines()[-1]
        if packed != path:
            packed.replace(path)
    actual = integrity(path)
    if actual != expected:
        raise KvbenchError(f"{spec}: npm tarball {path} has integrity {actual}, expected {expected}; not using it")
    return path


def _read(tarball: pathlib.Path, member: str) -> bytes:
    """The file `member` (a path inside the package, e.g. dist/jquery.min.js) of an npm tarball."""
    with tarfile.open(tarball) as tar:
        for info in tar.getmembers():
            # npm tarballs hold the package in one top folder, usually `package/`
            if info.isfile() and info.name.partition("/")[2] == member:
                return tar.extractfile(info).read()
    raise KvbenchError(f"{tarball.name} has no file {member}")


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
    checked: dict[str, pathlib.Path] = {}

    def replace(match: re.Match) -> str:
        kind, url = match.group(1), match.group(2)
        for piece, spec, path in LIBRARIES:
            if piece in url:
                if spec not in checked:
                    checked[spec] = _tarball(spec, cache)
                name = f"{spec.split('@')[0]}-{pathlib.PurePosixPath(path).name}"
                (html_dir / "vendor" / name).write_bytes(_read(checked[spec], path))
                copied.add(name)
                return _local_tag(kind, name) + ">"
        raise KvbenchError(f"the site loads {url}, which kvbench does not know how to vendor (a newer asv?)")

    for page in html_dir.glob("*.html"):
        text = page.read_text()
        page.write_text(TAG.sub(replace, text))
    return sorted(copied)
