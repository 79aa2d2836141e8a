"""CIFAR's binary records against bytes packed one by one from the format's description, the archive reader
against malformed archives, and CIFAR-10/100 downloaded from a loopback server (few records each)."""

import dataclasses
import io
import tarfile

import numpy as np
import pytest

from datafiles import sha
from normlab.data import cifar, registry
from normlab.data.cifar_records import read_archive, read_records
from normlab.errors import DataError
from normlab.files import cache_root

RNG = np.random.default_rng(100)
RECORDS = {"data_batch_1.bin": 3, "data_batch_2.bin": 2, "data_batch_3.bin": 1, "data_batch_4.bin": 2,
           "data_batch_5.bin": 1, "test_batch.bin": 2, "train.bin": 6, "test.bin": 3}
N_VAL = 4
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_NAMES = [f"fine_{i}" for i in range(100)]


def pack(images: np.ndarray, labels: list[tuple[int, ...]]) -> bytes:
    """The record format written byte by byte: the label bytes, then every red pixel row by row, then green,
    then blue."""
    out = bytearray()
    for image, label in zip(images, labels):
        out.extend(label)
        for channel in range(3):
            for row in range(32):
                for col in range(32):
                    out.append(int(image[row, col, channel]))
    return bytes(out)


def batch(n: int, classes: tuple[int, ...]):
    images = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = [tuple(int(RNG.integers(0, c)) for c in classes) for _ in range(n)]
    return images, labels, pack(images, labels)


def test_records_decode_pixel_by_pixel():
    images, labels, raw = batch(3, (10,))
    assert len(raw) == 3 * 3073 and raw[0] == labels[0][0] and raw[1 + 1024 + 5] == images[0, 0, 5, 1]
    x, y = read_records(raw, (10,), "b", "fix")
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.uint8 and x.flags.c_contiguous
    for n in range(3):
        for row in range(32):
            for col in range(32):
                for channel in range(3):
                    assert x[n, row, col, channel] == raw[n * 3073 + 1 + channel * 1024 + row * 32 + col]
    assert y.tolist() == [label for (label,) in labels]


def test_cifar100_records_use_the_fine_label():
    images, labels, raw = batch(4, (20, 100))
    assert len(raw) == 4 * 3074 and raw[3074] == labels[1][0] and raw[3075] == labels[1][1]
    x, y = read_records(raw, (20, 100), "b", "fix")
    assert np.array_equal(x, images) and y.tolist() == [fine for _, fine in labels]


@pytest.mark.parametrize("raw, classes, problem", [
    (bytes(3072), (10,), "3,072 bytes is not a whole number of 3,073-byte records"),
    (bytes(3073) + bytes([10]) + bytes(3072), (10,), "record 1: label 10 outside 0..9"),
    (bytes([20, 0]) + bytes(3072), (20, 100), "record 0: label 20 outside 0..19"),
    (bytes([0, 100]) + bytes(3072), (20, 100), "record 0: label 100 outside 0..99"),
])
def test_bad_records(raw, classes, problem):
    with pytest.raises(DataError, match=f"^b: {problem}; fix$"):
        read_records(raw, classes, "b", "fix")


def files_of(spec) -> dict[str, tuple[np.ndarray, list, bytes]]:
    return {b.name: batch(RECORDS[b.name], spec.classes) for b in spec.train + spec.test}


def names_of(spec) -> bytes:
    return ("\n".join(CIFAR10_NAMES if spec.name == "cifar10" else CIFAR100_NAMES) + "\n\n").encode()


def targz(members: list[tuple[str, bytes | None, dict]]) -> bytes:
    """A .tar.gz of ``(name, data, TarInfo fields)``; data None: a header only (its size is what the fields say)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, data, fields in members:
            info = tarfile.TarInfo(name)
            info.size = len(data or b"")
            for key, value in fields.items():
                setattr(info, key, value)
            if data is None and info.size:
                tar.fileobj.write(info.tobuf(tarfile.GNU_FORMAT))  # a header whose data never follows
                break
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def archive_of(spec, files, extra=(), drop=(), names=None) -> bytes:
    members = [(spec.folder, None, {"type": tarfile.DIRTYPE})]
    members += [(f"{spec.folder}/{n}", raw, {}) for n, (_, _, raw) in files.items() if n not in drop]
    members += [(f"{spec.folder}/{spec.names_file}", names or names_of(spec), {}),
                (f"{spec.folder}/readme.html", b"<p>", {})]
    return targz(members + list(extra))


@pytest.fixture(params=["cifar10", "cifar100"])
def small(request, home, monkeypatch, http_server):
    """``(spec, files, archive)``: the dataset made small (few records, their digests) and served."""
    spec = cifar.CIFAR10 if request.param == "cifar10" else cifar.CIFAR100
    files = files_of(spec)
    spec = dataclasses.replace(
        spec, n_val=N_VAL,
        train=tuple(dataclasses.replace(b, records=RECORDS[b.name], sha256=sha(files[b.name][2])) for b in spec.train),
        test=tuple(dataclasses.replace(b, records=RECORDS[b.name], sha256=sha(files[b.name][2])) for b in spec.test))
    archive = archive_of(spec, files)
    spec = dataclasses.replace(spec, archive_size=len(archive), archive_sha256=sha(archive))
    monkeypatch.setattr(cifar, "CIFAR10" if spec.name == "cifar10" else "CIFAR100", spec)
    monkeypatch.setenv(spec.url_env, http_server.url)
    http_server.routes[f"/{spec.archive}"] = (archive, None)
    return spec, files, archive


def check(data, spec, files):
    train = [files[b.name] for b in spec.train]
    x = np.concatenate([images for images, _, _ in train])
    y = [label[-1] for _, labels, _ in train for label in labels]
    assert np.array_equal(data.x_val, x[:N_VAL]) and np.array_equal(data.x_train, x[N_VAL:])
    assert data.y_val.tolist() == y[:N_VAL] and data.y_train.tolist() == y[N_VAL:]
    test = [files[b.name] for b in spec.test]
    assert np.array_equal(data.x_test, np.concatenate([images for images, _, _ in test]))
    assert data.y_test.tolist() == [label[-1] for _, labels, _ in test for label in labels]
    assert list(data.class_names) == (CIFAR10_NAMES if spec.name == "cifar10" else CIFAR100_NAMES)
    assert data.shape == spec.shape and data.x_train.dtype == np.uint8


def test_download_and_load(small, http_server):
    spec, files, archive = small
    data = registry.load(spec.name)
    check(data, spec, files)
    assert data.verified and data.source == str(cache_root() / spec.name / spec.archive)
    assert [p.name for p in (cache_root() / spec.name).iterdir()] == [spec.archive]
    http_server.routes.clear()  # from the cache now
    assert registry.load(spec.name).digest == data.digest


@pytest.mark.parametrize("layout", ["archive folder", "dataset folder", "itself"])
def test_an_extracted_folder(small, tmp_path, layout):
    spec, files, _ = small
    given = tmp_path / "data"
    where = {"archive folder": given / spec.folder, "dataset folder": given / spec.name, "itself": given}[layout]
    where.mkdir(parents=True)
    for name, (_, _, raw) in files.items():
        (where / name).write_bytes(raw)
    (where / spec.names_file).write_bytes(names_of(spec))
    data = registry.load(spec.name, data_dir=given)
    check(data, spec, files)
    assert data.verified and data.source == str(where)
    first = spec.train[0].name
    (where / first).write_bytes(files[first][2][:-1])
    with pytest.raises(DataError, match=f"{first}: {len(files[first][2]) - 1:,} bytes, expected"):
        registry.load(spec.name, data_dir=given)


def test_a_changed_batch_fails_its_digest(small, tmp_path):
    spec, files, _ = small
    first = spec.train[0].name
    raw = bytearray(files[first][2])
    raw[-1] ^= 1
    (tmp_path / spec.archive).write_bytes(archive_of(spec, {**files, first: (None, None, bytes(raw))}))
    with pytest.raises(DataError, match=f"{spec.archive}: {first}: SHA-256 .* differs.*`normlab data {spec.name}`"):
        registry.load(spec.name, data_dir=tmp_path)
    assert not registry.load(spec.name, data_dir=tmp_path, verify=False).verified


def malformed(spec, files, case) -> tuple[bytes, str]:
    """An archive broken as ``case`` says, and the problem it must be refused for."""
    first = f"{spec.folder}/{spec.train[0].name}"
    if case == "symlink":
        return archive_of(spec, files, [(f"{spec.folder}/link", b"", {"type": tarfile.SYMTYPE,
                                                                       "linkname": "/etc/passwd"})]), \
            f"member {spec.folder}/link is a symbolic link"
    if case == "wrong size":
        short = files[spec.train[0].name][2][:-3073]
        return archive_of(spec, {**files, spec.train[0].name: (None, None, short)}), \
            f"member {first} is {len(short):,} bytes, expected {len(short) + 3073:,}"
    if case == "missing":
        return archive_of(spec, files, drop=[spec.test[0].name]), f"the archive lacks {spec.folder}/{spec.test[0].name}"
    if case == "outside":
        return archive_of(spec, files, [("../evil", b"x", {})]), "member '../evil' is not a file in the folder"
    if case == "twice":
        return archive_of(spec, files, [(first, files[spec.train[0].name][2], {})]), f"member {first} appears twice"
    if case == "bomb":  # a header claiming a terabyte, no data behind it
        return archive_of(spec, files, [(f"{spec.folder}/huge", None, {"size": 1 << 40})]), \
            "members hold more than the"
    if case == "bomb needed":
        return targz([(first, None, {"size": 1 << 40})]), f"member {first} is 1,099,511,627,776 bytes, expected"
    if case == "names":
        return archive_of(spec, files, names=b"x\n" * (1 << 19)), "is 1,048,576 bytes, expected at most"
    if case == "few names":
        return archive_of(spec, files, names=b"cat\ndog\n"), f"{spec.names_file}: 2 class names"
    if case == "bad gzip":
        return b"\x1f\x8b\x08\x00" + bytes(100), "not a readable .tar.gz"
    whole = archive_of(spec, files)  # "truncated"
    return whole[:len(whole) // 2], "not a readable .tar.gz"


CASES = ["symlink", "wrong size", "missing", "outside", "twice", "bomb", "bomb needed", "names", "few names",
         "bad gzip", "truncated"]


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_archive_is_one_line(small, tmp_path, case):
    spec, files, _ = small
    blob, problem = malformed(spec, files, case)
    (tmp_path / spec.archive).write_bytes(blob)
    with pytest.raises(DataError, match=problem) as caught:
        registry.load(spec.name, data_dir=tmp_path)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(tmp_path / spec.archive))


@pytest.mark.parametrize("case", ["wrong size", "symlink", "truncated"])
def test_a_malformed_download_keeps_nothing(small, monkeypatch, http_server, case):
    spec, files, _ = small
    blob, problem = malformed(spec, files, case)  # served with its own digest, as if the publisher's
    monkeypatch.setattr(cifar, "CIFAR10" if spec.name == "cifar10" else "CIFAR100",
                        dataclasses.replace(spec, archive_size=len(blob), archive_sha256=sha(blob)))
    http_server.routes[f"/{spec.archive}"] = (blob, None)
    with pytest.raises(DataError, match=f"{http_server.url}/{spec.archive}: {problem}"):
        registry.load(spec.name)
    assert not (cache_root() / spec.name).exists()


@pytest.mark.parametrize("case", ["truncated", "wrong digest", "stall"])
def test_a_failed_download_keeps_nothing(small, monkeypatch, http_server, silent_url, case):
    spec, _, archive = small
    url = f"{http_server.url}/{spec.archive}"
    if case == "truncated":
        http_server.routes[f"/{spec.archive}"] = (archive[:1000], len(archive))
        problem = f"downloading {spec.title} failed: {url}: the connection closed after 1,000 of"
    elif case == "wrong digest":
        http_server.routes[f"/{spec.archive}"] = (archive[:-1] + bytes([archive[-1] ^ 1]), None)
        problem = f"{url}: SHA-256 .* differs from the expected"
    else:
        monkeypatch.setenv(spec.url_env, silent_url)
        problem = f"downloading {spec.title} failed: {silent_url}/{spec.archive}: no answer within 1 s"
    with pytest.raises(DataError, match=problem) as caught:
        registry.load(spec.name)
    assert "\n" not in str(caught.value) and spec.folder in str(caught.value)  # says what to get instead
    assert not (cache_root() / spec.name).exists()


def test_the_real_sizes_and_names():
    assert cifar.CIFAR10.sizes == {**{f"data_batch_{i}.bin": 30730000 for i in range(1, 6)},
                                   "test_batch.bin": 30730000}
    assert cifar.CIFAR100.sizes == {"train.bin": 50000 * 3074, "test.bin": 10000 * 3074}
    assert cifar.CIFAR10.shape == ((32, 32, 3), 10) and cifar.CIFAR100.shape == ((32, 32, 3), 100)


def test_read_archive_needs_every_member():
    with pytest.raises(DataError, match="^w: the archive lacks d/a, d/n; fix$"):
        read_archive(io.BytesIO(targz([("d", None, {"type": tarfile.DIRTYPE})])), "d", {"a": 1}, "n", "w", "fix")
