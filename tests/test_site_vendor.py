"""`kvbench site-vendor`: each npm package is pinned by its registry integrity hash, and a tarball that does not
match is refused before anything is read from it. Offline: the tarballs are made here, in a temporary cache."""

import base64
import io
import pathlib
import re
import tarfile

import pytest

from kvbench.asv import site as site_vendor
from kvbench.errors import KvbenchError

PAGE = '<html><script src="https://code.jquery.com/jquery-3.3.1.min.js"></script></html>'


def fake_tarball(cache: pathlib.Path, spec: str, files: dict[str, bytes]) -> pathlib.Path:
    """An npm-style tarball (files under package/) named as `npm pack` names it, in `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / site_vendor.tarball_name(spec)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def site(tmp_path):
    html = tmp_path / "html"
    html.mkdir()
    (html / "index.html").write_text(PAGE)
    return html


@pytest.fixture
def offline(monkeypatch):
    """Fail the test if site-vendor tries to run npm (everything must come from the cache)."""
    def no_npm(*args, **kwargs):
        raise AssertionError(f"npm must not run here: {args}")
    monkeypatch.setattr(site_vendor.subprocess, "run", no_npm)


def test_every_package_is_pinned_by_a_sha512_integrity():
    specs = {spec for _, spec, _ in site_vendor.LIBRARIES}
    assert specs == set(site_vendor.INTEGRITY)
    for spec, value in site_vendor.INTEGRITY.items():
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", value), spec
        assert len(base64.b64decode(value.removeprefix("sha512-"))) == 64


def test_tarball_names_follow_npm_pack():
    assert site_vendor.tarball_name("jquery@3.3.1") == "jquery-3.3.1.tgz"
    assert site_vendor.tarball_name("@scope/pkg@1.0.0") == "scope-pkg-1.0.0.tgz"


def test_a_tampered_cached_tarball_is_rejected(tmp_path, site, offline):
    cache = tmp_path / "npm"
    tarball = fake_tarball(cache, "jquery@3.3.1", {"dist/jquery.min.js": b"window.stolen = document.cookie;"})
    with pytest.raises(KvbenchError) as error:
        site_vendor.vendor(site, cache)
    message = str(error.value)
    assert "\n" not in message
    assert "jquery@3.3.1" in message
    assert site_vendor.INTEGRITY["jquery@3.3.1"] in message  # expected
    assert site_vendor.integrity(tarball) in message  # found
    assert not list((site / "vendor").iterdir())  # nothing copied
    assert (site / "index.html").read_text() == PAGE  # the page still points at the CDN


def test_a_tarball_matching_its_pin_is_used(tmp_path, site, offline, monkeypatch):
    cache = tmp_path / "npm"
    tarball = fake_tarball(cache, "jquery@3.3.1", {"dist/jquery.min.js": b"/* jquery */", "README.md": b"x"})
    monkeypatch.setitem(site_vendor.INTEGRITY, "jquery@3.3.1", site_vendor.integrity(tarball))
    assert site_vendor.vendor(site, cache) == ["jquery-jquery.min.js"]
    assert (site / "vendor" / "jquery-jquery.min.js").read_bytes() == b"/* jquery */"
    assert '<script src="vendor/jquery-jquery.min.js">' in (site / "index.html").read_text()


def test_the_integrity_string_is_npms(tmp_path):
    """sha512 over the file's bytes, base64 (npm's `dist.integrity` format); sha512 of b'' is a known value."""
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert site_vendor.integrity(empty) == ("sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7"
                                            "kxvUdBeoGlODJ6+SfaPg==")
