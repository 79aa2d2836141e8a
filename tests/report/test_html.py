"""report.html on a tiny synthetic sweep, opened in headless Chromium over the DevTools protocol.

2 presets × 2 learning rates × 3 seeds × 3 epochs, one run diverged. The page must load with no console error and
no request beyond its own file:// URL and data: URIs, show the tables and images we expect, and leave a screenshot.
"""

import base64
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from normlab.errors import ConfigError
from normlab.report.html import report_command, write_html

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
         "--remote-debugging-port=0", "--window-size=1280,900"]
SCREENSHOT_COPY = Path("/tmp/normlab-report-screenshot.png")
TIMEOUT_S = 20.0
START = {"baseline": 0.74, "bn-after": 0.80}
LRS, SEEDS, EPOCHS = (0.01, 0.1), (0, 1, 2), 3
DIVERGED = ("baseline", 0.1, 2)   # diverges at epoch 3: keeps 2 epochs of history and has no test result
LABELS = ["baseline lr=0.01", "baseline lr=0.1", "bn-after lr=0.01", "bn-after lr=0.1"]


def make_run(preset: str, lr: float, seed: int) -> dict:
    rate = 0.05 if lr == 0.1 else 0.03
    val = [START[preset] + rate * e + 0.007 * seed - 0.004 * (seed == 1) for e in range(EPOCHS)]
    run = {"preset": preset, "seed": seed, "setting": {"preset": preset, "learning_rate": lr},
           "params": {"total": 10, "trainable": 8, "non_trainable": 2}, "status": "ok", "diverged_epoch": None,
           "history": {"loss": [1 - a for a in val], "accuracy": [a + 0.01 for a in val],
                       "val_loss": [1.1 - a for a in val], "val_accuracy": val},
           "test": {"loss": 0.4, "accuracy": val[-1] - 0.01 + 0.002 * seed}, "time": {"compile_s": 1.0, "train_s": 2.0}}
    if (preset, lr, seed) == DIVERGED:
        run.update(status="diverged", diverged_epoch=3, test=None,
                   history={k: v[:2] for k, v in run["history"].items()})
    return run


def make_sweep(root: Path) -> Path:
    """One trial directory per setting, each with its own results.json, as a sweep writes them."""
    for i, (preset, lr) in enumerate((p, lr) for p in START for lr in LRS):
        results = {"provenance": {"git_commit": "abc1234", "versions": {"jax": "0.4.30"}, "device": "cpu",
                                  "timestamp": "2024-01-01T00:00:00Z", "host": "ci", "command": "normlab sweep"},
                   "config": {"learning_rate": lr, "epochs": EPOCHS},
                   "runs": [make_run(preset, lr, seed) for seed in SEEDS]}
        (root / f"trial-{i}").mkdir(parents=True)
        (root / f"trial-{i}" / "results.json").write_text(json.dumps(results))
    return root


def final(preset: str, lr: float, metric: str) -> np.ndarray:
    runs = [make_run(preset, lr, s) for s in SEEDS if (preset, lr, s) != DIVERGED]
    return np.array([r["history"]["val_accuracy"][-1] if metric == "validation" else r["test"]["accuracy"]
                     for r in runs])


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return report_command([make_sweep(tmp_path_factory.mktemp("sweep"))], None, None)


# A minimal DevTools client: RFC 6455 websocket (masked text frames out, unmasked frames in) over one socket.
class DevTools:
    def __init__(self, port: int, path: str, deadline: float):
        self.deadline, self.events, self.buffer, self.next_id = deadline, [], b"", 0
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _fill(self) -> None:
        self.sock.settimeout(max(0.01, self.deadline - time.monotonic()))
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("DevTools closed the connection")
        self.buffer += chunk

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _send(self, payload: bytes, opcode: int = 0x1) -> None:
        n, mask = len(payload), os.urandom(4)
        size = bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + struct.pack(">H", n) if n < 1 << 16
                                                  else bytes([0x80 | 127]) + struct.pack(">Q", n))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode]) + size + mask + masked)

    def _message(self) -> dict:
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n >= 126:
                n = struct.unpack(">H" if n == 126 else ">Q", self._read(2 if n == 126 else 8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools sent close")
            if opcode == 0x9:
                self._send(payload, 0xA)
            elif opcode in (0x0, 0x1):
                parts.append(payload)
                if b0 & 0x80:
                    return json.loads(b"".join(parts))

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        while True:
            message = self._message()
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str) -> dict:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._message())
        return next(e for e in self.events if e.get("method") == method)


DOM_PROBE = """({
  h2: [...document.querySelectorAll('h2')].map(h => h.textContent),
  tables: [...document.querySelectorAll('table')].map(t => ({
    head: [...t.querySelectorAll('thead th')].map(th => th.textContent),
    rows: [...t.querySelectorAll('tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))})),
  images: [...document.images].map(i => ({png: i.src.startsWith('data:image/png;base64,'), width: i.naturalWidth})),
  details: document.querySelectorAll('details').length,
})"""


def load_in_chromium(page: Path, tmp_path: Path, screenshot: Path) -> tuple[dict, list[dict]]:
    """Open `page`, return (what DOM_PROBE saw, every DevTools event), save a full-page screenshot."""
    profile, deadline = tmp_path / "profile", time.monotonic() + TIMEOUT_S
    with open(tmp_path / "chromium.log", "wb") as log:
        proc = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=log, stderr=log)
    devtools = None
    try:
        port_file = profile / "DevToolsActivePort"
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            assert proc.poll() is None, (tmp_path / "chromium.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Chromium wrote no DevToolsActivePort"
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/json/list")
        target = next(t for t in json.loads(connection.getresponse().read()) if t["type"] == "page")
        connection.close()
        devtools = DevTools(port, "/" + target["webSocketDebuggerUrl"].split("/", 3)[3], deadline)
        for domain in ("Page", "Runtime", "Log", "Network"):
            devtools.call(f"{domain}.enable")
        devtools.call("Page.navigate", url=page.as_uri())
        devtools.wait_for("Page.loadEventFired")
        dom = devtools.call("Runtime.evaluate", expression=DOM_PROBE, returnByValue=True)["result"]["value"]
        size = devtools.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = devtools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                             clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return dom, devtools.events
    finally:
        if devtools:
            devtools.sock.close()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package `chromium`) to render")
def test_page_loads_offline_without_errors_and_shows_tables_and_figures(report, tmp_path):
    dom, events = load_in_chromium(report, tmp_path, tmp_path / "report.png")
    shutil.copyfile(tmp_path / "report.png", SCREENSHOT_COPY)
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")

    errors = [e for e in events if e["method"] == "Runtime.exceptionThrown"
              or e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")
              or e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    assert errors == []
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    assert report.as_uri() in urls
    assert [u for u in urls if not u.startswith(("file://", "data:"))] == []

    tables = {tuple(t["head"]): t["rows"] for t in dom["tables"]}
    final_rows = tables[("setting", "n", "val acc %", "val 95% CI", "test acc %", "test 95% CI", "epochs to 85% val")]
    assert [row[0] for row in final_rows] == LABELS
    assert final_rows[1][1] == "3 (1 diverged)"
    tests = tables[("setting", "control", "metric", "Δ pp", "t", "df", "p", "Hedges' g")]
    assert {(row[0], row[1], row[2]) for row in tests} == {
        (f"bn-after lr={lr:g}", f"baseline lr={lr:g}", m) for lr in LRS for m in ("validation", "test")}
    assert len(dom["images"]) == 2 and all(i["png"] and i["width"] > 0 for i in dom["images"])
    assert "Sweep over learning_rate" in dom["h2"] and dom["details"] == 4


def test_page_is_self_contained(report):
    text = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text
    words = re.findall(r"\w+", re.sub(r"<img[^>]*>", "", text))
    assert "NaN" not in words and "nan" not in words


def test_numbers_match_scipy(report):
    """Every statistic on the page for bn-after lr=0.1 against its control, recomputed with NumPy and SciPy."""
    text = report.with_suffix(".md").read_text()
    for metric in ("validation", "test"):
        ours, base = final("bn-after", 0.1, metric), final("baseline", 0.1, metric)
        low, high = stats.t.interval(0.95, len(ours) - 1, loc=ours.mean(), scale=stats.sem(ours))
        assert f"{100 * ours.mean():.2f} ± {100 * ours.std(ddof=1):.2f} | {100 * low:.2f} – {100 * high:.2f}" in text
        w = stats.ttest_ind(ours, base, equal_var=False)
        delta = 100 * (ours.mean() - base.mean())
        assert f"| {metric} | {delta:+.2f} | {w.statistic:+.2f} | {w.df:.1f} | {w.pvalue:.3g} |" in text
    assert "| bn-after lr=0.01 | 3 |" in text and "| 3.0 (3/3) |" in text
    assert "baseline lr=0.1 seed 2 diverged at epoch 3" in text


def test_control_can_be_chosen_and_unknown_control_is_a_config_error(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    out = report_command([sweep], tmp_path / "out" / "cmp.html", control="bn-after lr=0.1")
    assert out.exists() and (tmp_path / "out" / "cmp.md").exists()
    assert "| baseline lr=0.01 | bn-after lr=0.1 | validation |" in (tmp_path / "out" / "cmp.md").read_text()
    with pytest.raises(ConfigError, match="control 'nope'"):
        report_command([sweep], tmp_path / "x.html", control="nope")


def test_results_without_setting_group_by_preset_and_single_seed_has_no_interval(tmp_path):
    runs = [make_run(p, 0.01, 0) for p in START]
    for run in runs:
        del run["setting"], run["status"], run["diverged_epoch"]
    page = write_html([{"runs": runs}], tmp_path / "r.html")
    text = page.read_text()
    assert "<td class=t>baseline</td><td>1</td><td>80.00</td><td>—</td>" in text and "Sweep over" not in text
    assert ("<td class=t>bn-after</td><td class=t>baseline</td><td class=t>validation</td><td>+6.00</td>"
            + "<td>—</td>" * 4) in text


@pytest.mark.parametrize("content, message", [
    (None, "no results.json"),
    ("{not json", "cannot read"),
    ('{"runs": []}', "no 'runs' list"),
    ('{"runs": [{"preset": "baseline", "seed": 0}]}', "run 0 needs 'history'"),
    (json.dumps({"runs": [{**make_run("baseline", 0.01, 0), "test": {"accuracy": float("nan")}}]}), "finite"),
])
def test_bad_run_directory_is_a_one_line_config_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(ConfigError, match=message) as error:
        report_command([tmp_path], None, None)
    assert "\n" not in str(error.value)


def test_a_sweep_over_two_architectures_gets_a_panel_each():
    """The norms-vs-batch-size study: the MLP's norms and the CNN's are compared among themselves."""
    from normlab.nn.models import presets, with_classes
    from normlab.report.html import architecture
    from normlab.report.plots import sweep_png
    assert architecture(with_classes(presets()["cnn-bn"], 10)) == "conv 16-32, dense 128-10"
    assert architecture(with_classes(presets()["bn-after"], 100)) == "dense 300-100-100"  # CIFAR-100's classes
    assert architecture(with_classes(presets()["ln-after"], 10)) == "dense 300-100-10"
    # a ResNet's convs inside its blocks (branches and projection shortcuts), equal neighbours counted
    assert architecture(with_classes(presets()["resnet20"], 10)) == "conv 16x7-32x7-64x7, dense 10"
    series = {"bn-after": [(2, 0.7, (0.6, 0.8)), (32, 0.8, None)], "cnn-bn": [(2, 0.75, None), (32, 0.85, None)]}
    one, two = sweep_png(series, "batch_size"), sweep_png(series, "batch_size", {"bn-after": "MLP", "cnn-bn": "CNN"})
    width = lambda png: int.from_bytes(png[16:20], "big")  # noqa: E731 - the PNG header's IHDR width
    assert width(two) > 1.5 * width(one)
