"""/dashboard in a real browser (issue 14): headless Chromium (Debian's `chromium`), driven through
the DevTools protocol with Debian's python3-websocket, loads the page from a real ringlb with real
replica processes and an admin token on its own admin listener.

It checks that the page without the token says it needs one and draws nothing; that with the token
(given as #token=..., which the browser never sends) it draws one arc path per member with as many
arcs as /ring lists, and lists the replicas /rep lists with their states; that the dry-run button
shows the share a new replica would get; that after a replica process is SIGKILLed its row, its arc
and the transitions list say it is dead; that the add form adds a replica that then appears in the
table and the ring. It saves a screenshot in the test log folder (build/meson-logs/dashboard.png,
printed) and, when RINGLB_DASHBOARD_PNG names a file, there too (docs/dashboard.png).

Exit 77 (skip) when chromium or the websocket module is missing, unless RINGLB_REQUIRE_BROWSER=1
(CI), where that is a failure. Every wait is bounded.
"""
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import HOST  # noqa: E402

try:
    import websocket  # Debian python3-websocket (websocket-client)
except ImportError:
    websocket = None

RINGLB = harness.build_path("lb", "ringlb")
REPLICA = harness.build_path("replica", "ringlb-replica")
TOKEN = "dash-token-1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with a DevTools connection to its page. Closed by the test's cleanup:
    the process group it started is killed (only that one)."""

    def __init__(self, test, width=1360, height=900):
        self.profile = tempfile.mkdtemp(prefix="ringlb-chromium-")
        test.addCleanup(shutil.rmtree, self.profile, True)
        self.log = tempfile.NamedTemporaryFile(prefix="ringlb-chromium-", suffix=".log")
        test.addCleanup(self.log.close)
        argv = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
                f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0", "--remote-allow-origins=*",
                f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        test.addCleanup(self.close)
        port_file = os.path.join(self.profile, "DevToolsActivePort")

        def port():
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}: {self.output()}")
            try:
                with open(port_file) as f:
                    return int(f.readline().strip() or 0)
            except (FileNotFoundError, ValueError):
                return 0
        self.port = harness.wait_until(port, 60, "chromium's DevTools port", 0.1)

        def page():
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/json/list", timeout=5) as resp:
                targets = json.load(resp)
            return next((t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"), None)
        url = harness.wait_until(page, 30, "chromium's page target", 0.1)
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0

    def output(self):
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()[-3000:]

    def close(self):
        if getattr(self, "ws", None):
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own group: chromium and its helpers
            self.proc.wait(10)

    def call(self, method, **params):
        """One DevTools command; returns its result (events that arrive meanwhile are dropped)."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]
        raise AssertionError(f"no answer to {method} within 30 s")

    def eval(self, expression):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression, timeout, what):
        """Polls a JavaScript expression until it is truthy and returns its value. An expression
        that throws (the page not loaded yet) counts as false; the last error is in the failure."""
        last = []

        def check():
            try:
                return self.eval(expression)
            except AssertionError as e:
                last[:] = [str(e)[:300]]
                return False
        try:
            return harness.wait_until(check, timeout, what, 0.2)
        except AssertionError as e:
            status = self.eval("(document.getElementById('status') || {}).textContent")
            raise AssertionError(f"{e}; page status: {status!r}; last error: {last}") from None

    def screenshot(self, path):
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return len(data)


ROWS = """[...document.querySelectorAll('#replicas tbody tr')].map(tr => [tr.dataset.name,
  tr.querySelector('.state').textContent])"""
ARCS = """[...document.querySelectorAll('#ring path.arc')].map(p => [p.dataset.name, p.dataset.state,
  (p.getAttribute('d').match(/M/g) || []).length])"""


class Dashboard(unittest.TestCase):
    def admin(self, method, path, body=None):
        return harness.request(self.admin_port, method, path, {"Authorization": f"Bearer {TOKEN}"}, body)

    def details(self):
        return {d["name"]: d for d in self.admin("GET", "/rep?verbose=1").json()["message"]["details"]}

    def traffic(self, port):
        """Background requests so the req/s column has figures: 10 every 100 ms, for 120 s at most."""
        stop = threading.Event()

        def run():
            deadline, n = time.monotonic() + 120, 0
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    with harness.Connection(port, timeout=2) as conn:
                        for _ in range(10):
                            conn.request("GET", "/home", {"X-Request-Id": str(100000 + n % 900000)})
                            n += 1
                except (OSError, AssertionError):
                    pass
                stop.wait(0.1)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.addCleanup(lambda: (stop.set(), t.join(5)))

    def test_dashboard_in_chromium(self):
        self.admin_port = harness.free_port()
        lb = harness.start(self, [RINGLB, "--listen", f"{HOST}:{{port}}", "--admin-listen",
                                  f"{HOST}:{self.admin_port}", "--admin-token", TOKEN, "--replicas", "3",
                                  "--heal", "off", "--replica-bin", REPLICA], ready_timeout=10)
        harness.wait_until(lambda: len([d for d in self.details().values() if d["state"] == "healthy"]) == 3,
                           20, "3 healthy replicas")
        self.traffic(lb.port)
        browser = Browser(self)
        page = f"http://{HOST}:{self.admin_port}/dashboard"

        # Without the token: the page says so and draws nothing.
        browser.call("Page.navigate", url=page)
        browser.wait("document.getElementById('status').textContent.includes('token')", 30,
                     "the page to ask for the token")
        self.assertEqual(browser.eval("document.querySelectorAll('#ring path.arc').length"), 0)

        # With the token in the fragment: the ring and the table, as /ring and /rep say.
        browser.call("Page.navigate", url=page + "#token=" + TOKEN)
        browser.wait("document.querySelectorAll('#ring path.arc').length === 3", 30, "3 arcs drawn")
        self.assertEqual(browser.eval("location.hash"), "")  # the token left the address bar
        ring = {m["name"]: m for m in self.admin("GET", "/ring").json()["message"]["members"]}
        for name, state, subpaths in browser.eval(ARCS):
            self.assertEqual(state, "healthy")
            self.assertEqual(subpaths, len(ring[name]["arcs"]), name)  # one sector per arc of /ring
        names = sorted(self.details())
        self.assertEqual(sorted(browser.wait(ROWS, 10, "the table")), [[n, "healthy"] for n in names])

        # The dry run shows the share a new replica would get; nothing changes.
        browser.eval("document.getElementById('add-dry').click()")
        text = browser.wait("!document.getElementById('change-answer').hidden && "
                            "document.getElementById('change-answer').textContent.includes('would get') && "
                            "document.getElementById('change-answer').textContent", 10, "the dry run's answer")
        self.assertIn("(ring id 4) would get", text)
        self.assertEqual(sorted(self.details()), names)

        # A replica killed: its row, its arc and the transitions say dead (--heal off keeps it so).
        victim = "server2"
        os.kill(int(self.details()[victim]["id"]), signal.SIGKILL)
        browser.wait(f"document.querySelector('#replicas tr[data-name=\"{victim}\"] .state').textContent === 'dead'",
                     20, f"{victim} dead in the table")
        self.assertEqual(browser.eval(f"document.querySelector('#ring path.arc[data-name=\"{victim}\"]').dataset.state"),
                         "dead")
        transition = browser.wait(f"[...document.querySelectorAll('#transitions li[data-name=\"{victim}\"]')]"
                                  ".map(li => li.textContent).join('|')", 10, "the transition")
        self.assertIn("healthy → dead", transition)

        # The add form: a replica named web4 joins the table and the ring.
        browser.eval("document.getElementById('add-names').value = 'web4';"
                     "document.querySelector('#add-form button[type=submit]').click()")
        browser.wait("document.querySelectorAll('#ring path.arc').length === 4 && "
                     "document.querySelector('#replicas tr[data-name=\"web4\"] .state').textContent === 'healthy'",
                     30, "web4 healthy in the table and the ring")
        self.assertIn("web4", self.details())
        # Two more polls: the req/s column has figures from /metrics.
        polls = int(browser.eval("document.body.dataset.polls"))
        browser.wait(f"Number(document.body.dataset.polls) >= {polls + 2}", 10, "two more polls")
        rates = browser.eval("[...document.querySelectorAll('#replicas tbody td.rate')].map(td => td.textContent)")
        self.assertTrue(any(r not in ("–", "0.0") for r in rates), rates)
        # p99 from the per-replica duration histogram, when this build's /metrics has one.
        metrics = self.admin("GET", "/metrics").body.decode()
        p99 = browser.eval("[...document.querySelectorAll('#replicas tbody td.p99')].map(td => td.textContent)")
        if "request_duration_seconds_bucket{ring_id=" in metrics:
            self.assertTrue(any(v.endswith(" ms") for v in p99), p99)
        else:
            self.assertEqual(set(p99), {"–"})

        logs = os.path.join(harness.BUILD, "meson-logs")
        shot = os.path.join(logs, "dashboard.png")
        size = browser.screenshot(shot)
        print(f"\nscreenshot: {shot} ({size} bytes)")
        if os.environ.get("RINGLB_DASHBOARD_PNG"):
            browser.screenshot(os.environ["RINGLB_DASHBOARD_PNG"])
            print(f"screenshot: {os.environ['RINGLB_DASHBOARD_PNG']}")
        self.assertGreater(size, 10_000)

        # The p99 arithmetic on a known histogram (after the screenshot: it feeds the page's
        # /metrics digest two synthetic scrapes 1 s apart). Ring id 1: 50 slow requests before the
        # interval, then 100 in it, 98 within 10 ms and 99 within 50 ms: p99 = 50 ms over the
        # interval (over everything it would be 100 ms). Ring id 2: no request: null ("–").
        p99 = browser.eval("""(() => {
          const h = (id, a, b, c, inf) => [['0.01', a], ['0.05', b], ['0.1', c], ['+Inf', inf]].map(([le, v]) =>
            'ringlb_replica_request_duration_seconds_bucket{ring_id="' + id + '",le="' + le + '"} ' + v).join('\\n');
          digestMetrics(h(1, 0, 0, 50, 50) + '\\n' + h(2, 5, 5, 5, 5) +
                        '\\nringlb_replica_requests_total{ring_id="1"} 50', 1000);
          digestMetrics(h(1, 98, 99, 150, 150) + '\\n' + h(2, 5, 5, 5, 5) +
                        '\\nringlb_replica_requests_total{ring_id="1"} 150', 2000);
          return [p99s.get('id:1'), p99s.get('id:2'), rates.get('id:1')];
        })()""")
        self.assertEqual(p99, ["0.05", None, 100])
        code, _ = lb.stop(signal.SIGTERM, timeout=10)
        self.assertEqual(code, 0, lb.log())


if __name__ == "__main__":
    missing = [what for what, ok in (("chromium", CHROMIUM), ("python3-websocket", websocket)) if not ok]
    if missing:
        print(f"dashboard_test: {' and '.join(missing)} not installed (deps/install.sh test)")
        sys.exit(1 if os.environ.get("RINGLB_REQUIRE_BROWSER") == "1" else 77)
    unittest.main()
