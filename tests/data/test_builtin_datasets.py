"""The MNIST family as built-ins (MNIST, KMNIST, Fashion-MNIST), downloaded from a loopback server in the
publisher's format (gzip IDX, few images); every failed download is one line and leaves nothing in the cache."""

import dataclasses
import gzip
import os
import signal
import socket
import threading

import numpy as np
import pytest

from datafiles import idx_bytes, sha
from normlab import signals
from normlab.data import fashion_mnist, kmnist, mnist, registry
from normlab.data.download import fetch
from normlab.errors import ConfigError, DataError
from normlab.files import cache_root

MODULES = {"mnist": mnist, "kmnist": kmnist, "fashion-mnist": fashion_mnist}
RNG = np.random.default_rng(29)
N_TRAIN, N_TEST, N_VAL = 7, 3, 2
ARRAYS = [RNG.integers(0, 256, (N_TRAIN, 28, 28)), RNG.integers(0, 10, N_TRAIN),
          RNG.integers(0, 256, (N_TEST, 28, 28)), RNG.integers(0, 10, N_TEST)]


RAW = [idx_bytes(a) for a in ARRAYS]
GZ = [gzip.compress(r, mtime=0) for r in RAW]


def small(monkeypatch, name: str, http_server, gz=GZ, published=None):
    """Dataset ``name`` made small and served: its spec's shapes and archive digests those of ``gz``, its content
    digests published (Fashion-MNIST's are) or not; returns the spec's files."""
    module = MODULES[name]
    published = name == "fashion-mnist" if published is None else published
    files = tuple(dataclasses.replace(f, shape=a.shape, gz_sha256=sha(g), sha256=sha(r) if published else None)
                  for f, a, r, g in zip(module.SPEC.files, ARRAYS, RAW, gz))
    monkeypatch.setattr(module, "SPEC", dataclasses.replace(module.SPEC, files=files, n_val=N_VAL, debian=None))
    monkeypatch.setenv(module.SPEC.url_env, f"{http_server.url}/{name}")
    for f, g in zip(files, gz):
        http_server.routes[f"/{name}/{f.name}.gz"] = (g, None)
    return files


def kept(name: str) -> list[str]:
    folder = cache_root() / name
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("name", MODULES)
def test_download_and_load_each(home, monkeypatch, http_server, name):
    files = small(monkeypatch, name, http_server)
    data = registry.load(name)
    assert data.name == name and data.source == str(cache_root() / name) and data.verified
    assert np.array_equal(data.x_val, ARRAYS[0][:N_VAL]) and np.array_equal(data.x_train, ARRAYS[0][N_VAL:])
    assert np.array_equal(data.y_val, ARRAYS[1][:N_VAL]) and np.array_equal(data.y_train, ARRAYS[1][N_VAL:])
    assert np.array_equal(data.x_test, ARRAYS[2]) and np.array_equal(data.y_test, ARRAYS[3])
    assert data.class_names == MODULES[name].SPEC.class_names and len(data.class_names) == 10
    archives = sorted(f"{f.name}.gz" for f in files)
    assert kept(name) == (archives if name == "fashion-mnist" else sorted([*archives, "sha256.json"]))
    http_server.routes.clear()  # loaded again from the cache, checked against the digests recorded
    again = registry.load(name)
    assert again.verified and again.digest == data.digest and again.provenance()["verified"]


def test_the_class_names():
    assert mnist.SPEC.class_names == tuple(str(d) for d in range(10))
    assert [f"U+{ord(c):04X}" for c in kmnist.SPEC.class_names] == [
        "U+304A", "U+304D", "U+3059", "U+3064", "U+306A", "U+306F", "U+307E", "U+3084", "U+308C", "U+3092"]


def test_a_copy_without_a_record_loads_unverified(home, monkeypatch, http_server):
    small(monkeypatch, "mnist", http_server)
    downloaded = registry.load("mnist")
    folder = home / "copy"
    folder.mkdir()
    for f, r in zip(mnist.SPEC.files, RAW):
        (folder / f.name).write_bytes(r)  # unpacked by hand: no sha256.json
    copy = registry.load("mnist", data_dir=folder)
    assert not copy.verified and not copy.provenance()["verified"] and copy.digest == downloaded.digest


def test_a_changed_file_fails_its_recorded_digest(home, monkeypatch, http_server):
    small(monkeypatch, "kmnist", http_server)
    registry.load("kmnist")
    changed = RAW[3][:-1] + bytes([(RAW[3][-1] + 1) % 10])
    (cache_root() / "kmnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(changed))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: SHA-256 .* differs"):
        registry.load("kmnist")
    assert not registry.load("kmnist", verify=False).verified


def test_a_record_of_another_archive_is_not_trusted(home, monkeypatch, http_server):
    small(monkeypatch, "mnist", http_server)
    registry.load("mnist")
    other = dataclasses.replace(mnist.SPEC.files[0], gz_sha256="0" * 64)
    monkeypatch.setattr(mnist, "SPEC", dataclasses.replace(mnist.SPEC, files=(other, *mnist.SPEC.files[1:])))
    assert not registry.load("mnist").verified


def test_one_folder_serves_several_datasets(home, monkeypatch, http_server):
    for name in ("mnist", "fashion-mnist"):
        small(monkeypatch, name, http_server)
    shared = home / "shared"
    (shared / "mnist").mkdir(parents=True)
    for f, r in zip(mnist.SPEC.files, RAW):
        (shared / "mnist" / f.name).write_bytes(r)
        (shared / f.name).write_bytes(r)
    monkeypatch.setenv("NORMLAB_DATA_DIR", str(shared))
    assert registry.load("mnist").source == str(shared / "mnist")
    assert registry.load("fashion-mnist").source == str(shared)


def failing(http_server, silent_url, files, case):
    """Serve the first file as ``case`` breaks it; the message it must give."""
    route, url = f"/mnist/{files[0].name}.gz", f"{http_server.url}/mnist/{files[0].name}.gz"
    if case == "bad gzip":
        http_server.routes[route] = (b"\x1f\x8b" + b"not deflate" * 10, None)
        return f"{url}: not a readable gzip archive"
    if case == "truncated":
        http_server.routes[route] = (GZ[0][:100], len(GZ[0]))
        return f"downloading MNIST failed: {url}: the connection closed after 100 of {len(GZ[0]):,} bytes"
    if case == "wrong digest":
        http_server.routes[route] = (gzip.compress(RAW[0][:-1] + b"\x07"), None)
        return f"{url}: SHA-256 .* differs from the expected"
    if case == "not IDX":
        http_server.routes[route] = (gzip.compress(b"\x00\x00\x09\x03" + RAW[0][4:]), None)
        return f"{url}: element type 0x09"
    if case == "missing":
        del http_server.routes[route]
        return f"downloading MNIST failed: {url}: HTTP Error 404"
    if case == "too large":  # declared: refused before reading the body
        http_server.routes[route] = (GZ[0] + bytes(files[0].size * 2), None)
        return f"downloading MNIST failed: {url}: {len(GZ[0]) + files[0].size * 2:,} bytes, more than the"
    if case == "undeclared too large":  # read one byte past the bound, then refused
        http_server.routes[route] = (GZ[0] + bytes(files[0].size * 2), "omit")
        return f"downloading MNIST failed: {url}: more than the {files[0].size + files[0].size // 100 + 4096:,} bytes"
    return f"downloading MNIST failed: {silent_url}/{files[0].name}.gz: no answer within 1 s"


@pytest.mark.parametrize("case", ["bad gzip", "truncated", "wrong digest", "not IDX", "missing", "too large",
                                  "undeclared too large", "stall"])
def test_a_failed_download_is_one_line_and_keeps_nothing(home, monkeypatch, http_server, silent_url, case):
    files = small(monkeypatch, "mnist", http_server)
    message = failing(http_server, silent_url, files, case)
    if case in ("bad gzip", "not IDX"):  # the publisher's digest matches: the checks after it must catch these
        body = http_server.routes[f"/mnist/{files[0].name}.gz"][0]
        monkeypatch.setattr(mnist, "SPEC", dataclasses.replace(
            mnist.SPEC, files=(dataclasses.replace(files[0], gz_sha256=sha(body)), *files[1:])))
    if case == "stall":
        monkeypatch.setenv("NORMLAB_MNIST_URL", silent_url)
    with pytest.raises(DataError, match=message) as caught:
        registry.load("mnist")
    assert "\n" not in str(caught.value) and "NORMLAB_DATA_DIR" in str(caught.value)
    assert kept("mnist") == []  # no archive, no record, no temp file


def test_a_file_url_and_the_timeout_setting(home, monkeypatch, tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert fetch((tmp_path / "f").as_uri(), 3, sha(b"abc"), "X", "elsewhere") == b"abc"
    with pytest.raises(DataError, match=r": 3 bytes, more than the 2 expected; elsewhere$"):
        fetch((tmp_path / "f").as_uri(), 2, sha(b"abc"), "X", "elsewhere")
    monkeypatch.setenv("NORMLAB_DATA_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="NORMLAB_DATA_TIMEOUT must be a number of seconds"):
        fetch((tmp_path / "f").as_uri(), 3, sha(b"abc"), "X", "elsewhere")


def test_ctrl_c_stops_a_stalled_download_at_once(home, monkeypatch):
    """SIGINT once the server holds the connection (observable: accept returns): `Interrupted` now, not a
    DataError when the 30 s timeout runs out."""
    monkeypatch.setenv("NORMLAB_DATA_TIMEOUT", "30")
    previous = signals.install()
    held = []
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            def interrupt():
                held.append(listener.accept()[0])
                os.kill(os.getpid(), signal.SIGINT)

            thread = threading.Thread(target=interrupt)
            thread.start()
            with pytest.raises(signals.Interrupted):
                fetch(f"http://127.0.0.1:{listener.getsockname()[1]}/f", 10, "0" * 64, "X", "elsewhere")
            thread.join()
    finally:
        signals.restore(previous)
        signals.clear()
        for connection in held:
            connection.close()
