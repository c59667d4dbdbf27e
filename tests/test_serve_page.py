"""The web page at / in headless Chromium (driven over the DevTools protocol): pick a photo, see the
faces drawn, enroll one under a name, see it named; without a key, the page says one is needed. The API docs
at /docs list the operations. A screenshot is written as a test artifact."""
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from facepipe.serve.process import ServerProcess, write_key_file

websockets_sync = pytest.importorskip("websockets.sync.client")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/install-system.sh)")


class Browser:
    """Headless Chromium with a fresh profile; one page, spoken to over the DevTools websocket."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions",
             f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            websockets_sync.connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=20))
        self.ids = itertools.count(1)

    def send(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        status = self.js("document.getElementById('status')?.textContent")
        raise AssertionError(f"timed out waiting for {expression}; the page says: {status}")

    def enter(self, element_id: str, value: str) -> None:
        """Type a value into an input, as a person would (its change event fires)."""
        self.js(f"{{ const box = document.getElementById({json.dumps(element_id)}); box.value = {json.dumps(value)}; "
                "box.dispatchEvent(new Event('change')); }")

    def choose_file(self, selector: str, path: Path) -> None:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", files=[str(path)], nodeId=node)

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("page")
    key = write_key_file(root / "key")
    with ServerProcess(["--gallery", root / "gallery.db", "--api-key-file", root / "key"], root / "server.log") as srv:
        srv.key = key
        yield srv


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def test_pick_a_photo_enroll_and_see_the_name(server, browser, data_dir, tmp_path_factory):
    people = data_dir / "people" / "person01"
    browser.send("Page.enable")
    browser.send("Page.navigate", url=server.url + "/")
    browser.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
    browser.enter("key", server.key)

    # 1. a photo of someone not enrolled, into an empty gallery: one face, drawn, called unknown
    browser.choose_file("#file", people / "img1.jpg")
    browser.wait_for("document.body.dataset.state === 'identified'")
    assert browser.js("[...document.querySelectorAll('#faces li')].map(li => li.className)") == ["unknown"]
    assert "the gallery is empty" in browser.js("document.getElementById('status').textContent")

    # 2. enroll it under a non-ASCII name: the page re-identifies and names the face
    browser.js("document.getElementById('name').value = 'Zoë Ñúñez'; document.getElementById('enroll-button').click(); "
               "true")
    browser.wait_for("document.getElementById('status').textContent.startsWith('Enrolled as Zoë Ñúñez')")
    browser.wait_for("document.body.dataset.state === 'identified'")
    assert browser.wait_for("document.getElementById('persons').textContent") == "Zoë Ñúñez (1 face)"

    # 3. another photo of the same person is named, with a green box drawn where the server said
    browser.js("document.body.dataset.state = 'waiting for the second photo'; true")
    browser.choose_file("#file", people / "img4.jpg")
    browser.wait_for("document.body.dataset.state === 'identified' && "
                     "document.querySelector('#faces li.known') !== null")
    names = browser.js("[...document.querySelectorAll('#faces li')].map(li => li.textContent)")
    assert any(n.startswith("Zoë Ñúñez, similarity") for n in names), names
    canvas = browser.js("(() => { const c = document.getElementById('canvas'); return [c.hidden, c.width, c.height]; "
                        "})()")
    assert canvas[0] is False and canvas[1] > 100 and canvas[2] > 100

    # the box's top edge in the canvas is the page's green (the server's box, drawn at the right place)
    result = json.loads(_identify_json(server, people / "img4.jpg"))
    known = next(f for f in result["faces"] if f["identity"] == "Zoë Ñúñez")
    x1, y1, x2, _ = known["box"]
    pixel = browser.js(f"Array.from(document.getElementById('canvas').getContext('2d')"
                       f".getImageData({int((x1 + x2) / 2)}, {int(y1)}, 1, 1).data)")
    assert pixel[1] > 120 and pixel[0] < 90 and pixel[2] < 120, pixel  # #1e9e4a

    shot = browser.send("Page.captureScreenshot", format="png")["data"]
    out = Path(os.environ.get("FACEPIPE_ARTIFACTS", tmp_path_factory.getbasetemp() / "artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_page.png").write_bytes(base64.b64decode(shot))
    print(f"screenshot: {out / 'serve_page.png'}")


def _identify_json(server, photo: Path) -> str:
    import httpx

    r = httpx.post(server.url + "/v1/identify", files={"image": (photo.name, photo.read_bytes())},
                   headers={"Authorization": f"Bearer {server.key}"}, timeout=60)
    return r.text


def test_without_a_key_the_page_says_one_is_needed(server, browser):
    browser.send("Page.enable")
    browser.send("Page.navigate", url=server.url + "/")
    browser.wait_for("document.readyState === 'complete' && !!document.getElementById('cluster-list')")
    gallery, clusters = "document.getElementById('persons').textContent", \
        "document.getElementById('cluster-list').textContent"
    browser.wait_for(f"{gallery}.includes('needs an API key') && {clusters}.includes('needs an API key')")

    # the key box shows its whole placeholder (text width, in the box's own font, within the box)
    room = browser.js("""(() => {
        const box = document.getElementById('key'), style = getComputedStyle(box);
        const ctx = document.createElement('canvas').getContext('2d');
        ctx.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
        const inside = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        return [box.placeholder, ctx.measureText(box.placeholder).width, inside];
    })()""")
    assert room[0] and room[1] <= room[2], room

    browser.enter("key", "not-the-key")
    browser.wait_for(f"{gallery}.includes('not accepted') && {clusters}.includes('not accepted')")
    browser.enter("key", server.key)
    browser.wait_for(f"!{gallery}.includes('API key') && !{clusters}.includes('API key') && "
                     f"{gallery}.length > 0 && {clusters}.length > 0")  # the gallery or "no one yet"; likewise


def test_docs_list_the_operations(server, browser):
    """Swagger UI reads the server's OpenAPI 3.1 schema: every operation is on the page, not "Unable to render"."""
    import httpx

    schema = httpx.get(server.url + "/openapi.json", timeout=30).json()
    operations = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    browser.send("Page.enable")
    browser.send("Page.navigate", url=server.url + "/docs")
    browser.wait_for("document.readyState === 'complete'")
    browser.wait_for(f"document.querySelectorAll('.opblock').length >= {len(operations)} || "
                     "document.body.innerText.includes('Unable to render')")
    shown = browser.js("[...document.querySelectorAll('.opblock')].map(b => [b.querySelector('.opblock-summary-method')"
                       ".textContent, b.querySelector('.opblock-summary-path').dataset.path])")
    assert "Unable to render" not in browser.js("document.body.innerText")
    assert {tuple(op) for op in shown} == operations
    assert ("POST", "/v1/identify") in operations
