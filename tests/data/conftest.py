"""Downloads without the internet: a loopback HTTP server (127.0.0.1, port 0, a thread) and one that never answers."""

import http.server
import socket
import threading

import pytest


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (body, declared length, None or "omit")``; anything else is a 404. HTTP/1.0: the
    connection closes after each answer, so a declared length longer than the body is a truncated download."""

    def do_GET(self):
        if (route := self.server.routes.get(self.path)) is None:
            self.send_error(404)
            return
        body, declared = route
        self.send_response(200)
        if declared != "omit":  # a body without a length: it ends when the connection closes
            self.send_header("Content-Length", str(len(body) if declared is None else declared))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """The server; ``server.url`` is its base URL, ``server.routes`` what it serves (empty at first)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.routes, server.url = {}, f"http://127.0.0.1:{server.server_address[1]}"
    # shutdown() waits for the loop's next poll: 0.5 s by default, 0.5 s of every test's teardown
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def silent_url():
    """A listening socket nobody reads: the kernel completes each connection (the server "accepts") and no answer
    ever comes, so only the client's timeout can end the request."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """No real folders: home and cache under tmp_path, no data folder, downloads give up after 1 s of silence."""
    for var in ("XDG_CACHE_HOME", "NORMLAB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NORMLAB_DATA_TIMEOUT", "1")
    return tmp_path
