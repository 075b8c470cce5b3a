"""The page at GET / and the engine events it reads, against real servers.

Plain HTTP: GET / and its files (content types, ETag and 304, Cache-Control, gzip, public even with
an API key), GET /v1/cast/events (one JSON object with ?once=1, Server-Sent Events otherwise, the
key required when configured, the stream ended at once by a drain), both under the CORS setting.

In headless Chromium (Debian `chromium` and `chromium-driver`, PyPI `selenium`; skipped when they
are missing): a message sent with Enter streams a reply that fills in its figures; the engine view
updates while a second client (the openai SDK) streams; with an API key configured a wrong key shows
an error and the right one works; against a server of two models, the model picker lists both with
their states, a chat goes to the picked model (loading it), and the engine view follows the pick.
Every wait is bounded; none is a sleep.

Screenshots of both views go to $CASTSERVE_WEB_SCREENSHOTS when set (docs/ holds the README's:
`CASTSERVE_WEB_SCREENSHOTS=docs python3 -m unittest tests.test_web`).
"""

import gzip
import http.client
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import unittest

from castserve_harness import MODEL_ID, ROOT, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = os.environ.get("CASTSERVE_WEB_SCREENSHOTS")
PAGE_FILES = {"/": "text/html", "/app.js": "text/javascript", "/app.css": "text/css", "/favicon.svg": "image/svg+xml"}
SLOTS = 4  # every server here: one step-cost calibration serves them all
WAIT = 60  # seconds: the longest any one browser condition may take on a loaded machine

server = None  # no API key
keyed = None   # --api-key secret


def setUpModule():
    global server, keyed
    # One after the other, with the same slots: the first measures the step-cost model (once per
    # test run, in the harness's cache directory), the others load it from there.
    try:
        server = Server(slots=SLOTS).start()
        keyed = Server(slots=SLOTS, args=["--api-key", "secret"],
                       env={"CASTSERVE_CORS_ALLOWED_ORIGIN": "https://app.example"}).start()
    except BaseException:
        tearDownModule()  # unittest skips it when setUpModule fails: stop what started
        raise


def tearDownModule():
    for s in (server, keyed):
        if s is not None:
            s.stop()


def raw_get(srv, path, headers=None, timeout=30):
    """GET with exactly `headers` (no implicit Accept-Encoding); the body as sent."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def read_events(response, count, timeout=30):
    """The first `count` SSE events of a streaming response, as (event, data) pairs."""
    deadline = time.monotonic() + timeout
    events, event, data = [], None, []
    while len(events) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(events)} events in {timeout} s")
        line = response.readline()
        if not line:
            break
        line = line.decode().rstrip("\r\n")
        if line == "":
            if data:
                events.append((event, "\n".join(data)))
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    return events


# MARK: - Plain HTTP


class PageHTTPTest(unittest.TestCase):
    def test_page_files_have_content_types_and_validators(self):
        for path, kind in PAGE_FILES.items():
            with self.subTest(path=path):
                status, h, body = raw_get(server, path)
                self.assertEqual(status, 200)
                self.assertTrue(h["content-type"].startswith(kind), h["content-type"])
                self.assertTrue(h["etag"].startswith('W/"'), h["etag"])
                self.assertEqual(h["cache-control"], "no-cache")
                self.assertEqual(int(h["content-length"]), len(body))
        _, h, body = raw_get(server, "/")
        self.assertIn(b'<script src="app.js"', body)
        self.assertNotIn(b"http://", body.replace(b"http://www.w3.org", b""), "the page loads nothing from elsewhere")
        self.assertIn("default-src 'self'", h["content-security-policy"])

    def test_etag_revalidation_answers_304(self):
        _, h, _ = raw_get(server, "/app.js")
        status, h2, body = raw_get(server, "/app.js", {"If-None-Match": h["etag"]})
        self.assertEqual(status, 304)
        self.assertEqual(body, b"")
        self.assertEqual(h2["etag"], h["etag"])
        status, _, _ = raw_get(server, "/app.js", {"If-None-Match": 'W/"other", ' + h["etag"].removeprefix("W/")})
        self.assertEqual(status, 304, "weak comparison: a listed strong form of the tag matches too")
        status, _, body = raw_get(server, "/app.js", {"If-None-Match": 'W/"other"'})
        self.assertEqual(status, 200)
        self.assertGreater(len(body), 0)

    def test_gzip_when_accepted(self):
        _, _, plain = raw_get(server, "/app.js")
        status, h, body = raw_get(server, "/app.js", {"Accept-Encoding": "gzip"})
        self.assertEqual(status, 200)
        self.assertEqual(h.get("content-encoding"), "gzip")
        self.assertIn("Accept-Encoding", h.get("vary", ""))
        self.assertLess(len(body), len(plain))
        self.assertEqual(gzip.decompress(body), plain)

    def test_head_and_methods(self):
        status, h, body = server.request("HEAD", "/")
        self.assertEqual((status, body), (200, b""))
        self.assertTrue(h["content-type"].startswith("text/html"))
        status, _, _ = server.request("POST", "/", body={})
        self.assertEqual(status, 405)


class EventsHTTPTest(unittest.TestCase):
    def test_once_gives_the_engine_figures(self):
        status, body = server.json("GET", "/v1/cast/events?once=1")
        self.assertEqual(status, 200)
        self.assertEqual(body["object"], "cast.engine")
        for key in ["running", "waiting", "slots", "tokens_per_second", "steps_total", "rows_total", "kv_blocks",
                    "drafted_tokens", "accepted_tokens", "steps"]:
            self.assertIn(key, body)
        self.assertEqual(set(body["kv_blocks"]), {"total", "used", "cached"})
        if body["speculation"]:
            curve = body["cost_curve"]
            self.assertGreater(len(curve), 1)
            self.assertEqual(sorted(p["rows"] for p in curve), [p["rows"] for p in curve])
            self.assertTrue(all(p["ms"] > 0 for p in curve))

    def test_stream_sends_engine_events_with_new_steps(self):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("GET", "/v1/cast/events?interval_ms=100")
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader("Content-Type"), "text/event-stream")
            first = read_events(r, 1)
            self.assertEqual(first[0][0], "engine")
            before = json.loads(first[0][1])["steps_total"]
            status, _ = server.json("POST", "/v1/chat/completions", {
                "model": MODEL_ID, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8})
            self.assertEqual(status, 200)
            # The steps of that request arrive in the next events (bounded: 100 events, 10 s at most).
            seen = []
            for _ in range(100):
                event = json.loads(read_events(r, 1, timeout=10)[0][1])
                seen += event["steps"]
                if event["steps_total"] > before and seen:
                    break
            self.assertGreater(event["steps_total"], before)
            step = seen[-1]
            for key in ["n", "rows", "tree_rows", "tree_rows_per_sequence", "accepted_per_sequence", "duration_ms"]:
                self.assertIn(key, step)
            numbers = [s["n"] for s in seen]
            self.assertEqual(numbers, sorted(set(numbers)), "each step is sent once, in order")
        finally:
            conn.close()

    def test_bad_interval_is_400(self):
        status, body = server.json("GET", "/v1/cast/events?interval_ms=5")
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["param"], "interval_ms")

    def test_drain_ends_the_stream_at_once(self):
        own = Server(slots=SLOTS).start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", own.port, timeout=30)
            conn.request("GET", "/v1/cast/events?interval_ms=10000")
            r = conn.getresponse()
            self.assertEqual(len(read_events(r, 1)), 1)
            start = time.monotonic()
            own.proc.send_signal(signal.SIGTERM)
            rest = r.read()  # the stream's end (bounded by the connection's 30 s timeout)
            self.assertLess(time.monotonic() - start, 10, "the events stream held up the drain")
            self.assertIsInstance(rest, bytes)
            own.proc.wait(timeout=20)
            self.assertEqual(own.proc.returncode, 0)
            conn.close()
        finally:
            own.stop()


class KeyHTTPTest(unittest.TestCase):
    def setUp(self):
        self.server = keyed

    def test_page_is_public_and_the_api_is_not(self):
        for path in PAGE_FILES:
            status, _, _ = self.server.request("GET", path)
            self.assertEqual(status, 200, path)
        status, _, _ = self.server.request("GET", "/v1/cast/events?once=1")
        self.assertEqual(status, 401)
        status, _, _ = self.server.request("GET", "/v1/cast/events?once=1", headers={"Authorization": "Bearer wrong"})
        self.assertEqual(status, 401)
        status, _, _ = self.server.request("GET", "/v1/cast/events?once=1", headers={"Authorization": "Bearer secret"})
        self.assertEqual(status, 200)

    def test_cors_settings_apply_to_the_page_and_the_events(self):
        # A preflight for the events with the key's header is answered without the key.
        status, h, _ = self.server.request("OPTIONS", "/v1/cast/events", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        self.assertLess(status, 300)
        self.assertEqual(h.get("access-control-allow-origin"), "https://app.example")
        self.assertIn("authorization", h.get("access-control-allow-headers", "").lower())
        for path, headers in [("/", {}), ("/v1/cast/events?once=1", {"Authorization": "Bearer secret"})]:
            status, h, _ = self.server.request("GET", path, headers=dict(headers, Origin="https://app.example"))
            self.assertEqual(status, 200, path)
            self.assertEqual(h.get("access-control-allow-origin"), "https://app.example", path)


# MARK: - Browser


def browser(width, height):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise unittest.SkipTest("selenium is not installed (make test installs it)")
    if not CHROMIUM or not CHROMEDRIVER:
        raise unittest.SkipTest("chromium and chromium-driver are not installed (make test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions",
                "--no-first-run", "--disable-background-networking", f"--window-size={width},{height}"]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait(driver, condition, timeout=WAIT, message=""):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def set_max_tokens(driver, n):
    """Opens the Settings disclosure (if closed) and sets Max tokens."""
    from selenium.webdriver.common.by import By
    settings = driver.find_element(By.CSS_SELECTOR, "details.settings")
    if settings.get_attribute("open") is None:
        settings.find_element(By.TAG_NAME, "summary").click()
    field = driver.find_element(By.ID, "max-tokens")
    field.clear()
    field.send_keys(str(n))


def screenshot(driver, name):
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        driver.save_screenshot(os.path.join(SCREENSHOTS, name))


class BrowserTest(unittest.TestCase):
    """The page in headless Chromium against the shared server (no key)."""

    @classmethod
    def setUpClass(cls):
        cls.driver = browser(412, 860)  # a phone's width

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()

    def setUp(self):
        from selenium.webdriver.common.by import By
        self.By = By
        self.driver.set_window_size(412, 860)
        self.driver.get(server.base_url + "/")
        wait(self.driver, lambda d: MODEL_ID in d.find_element(By.ID, "model").text, message="the model name never showed")

    def find(self, id_):
        return self.driver.find_element(self.By.ID, id_)

    def test_chat_streams_a_reply_with_its_figures(self):
        from selenium.webdriver.common.keys import Keys
        By = self.By
        set_max_tokens(self.driver, 48)
        prompt = self.find("prompt")
        prompt.click()
        # Shift+Enter adds a line and sends nothing; Enter sends.
        prompt.send_keys("What is the capital of France?", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "Answer briefly.")
        self.assertIn("\n", prompt.get_attribute("value"))
        self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, ".message"), [])
        prompt.send_keys(Keys.ENTER)
        reply = wait(self.driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant"))[0]
        wait(self.driver, lambda d: reply.find_elements(By.CSS_SELECTOR, ".figures .usage"), message="the reply never finished")
        self.assertEqual(prompt.get_attribute("value"), "", "the prompt is cleared once sent")
        text = reply.find_element(By.CSS_SELECTOR, ".text").text
        self.assertTrue(text.strip(), "the reply is empty")
        self.assertGreater(int(reply.get_attribute("data-chunks") or 0), 1, "the reply arrived in one piece, not streamed")
        figures = {cls: reply.find_element(By.CSS_SELECTOR, ".figures ." + cls).text for cls in ["ttft", "tps", "usage", "spec"]}
        self.assertRegex(figures["ttft"], r"first token \d+ ms")
        self.assertRegex(figures["tps"], r"[\d.]+ tokens/s")
        self.assertRegex(figures["usage"], r"\d+ prompt \+ \d+ completion tokens")
        self.assertRegex(figures["spec"], r"drafted \d+, accepted \d+ \(\d+%\), [\d.]+ tokens/step|no speculation")
        self.assertEqual(self.find("send").is_enabled(), True)
        self.assertEqual(self.find("stop").is_enabled(), False)
        screenshot(self.driver, "screenshot-chat.png")
        # A new conversation empties the list.
        self.find("new").click()
        self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, ".message"), [])

    def test_stop_ends_a_reply(self):
        from selenium.webdriver.common.keys import Keys
        By = self.By
        set_max_tokens(self.driver, 2000)
        self.find("prompt").send_keys("Write a very long story about a lighthouse keeper.", Keys.ENTER)
        reply = wait(self.driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant"))[0]
        wait(self.driver, lambda d: self.find("stop").is_enabled() or reply.find_elements(By.CSS_SELECTOR, ".figures span"))
        if self.find("stop").is_enabled():
            self.find("stop").click()
        wait(self.driver, lambda d: reply.get_attribute("aria-busy") is None, message="the reply never ended")
        self.assertTrue(self.find("send").is_enabled())

    def test_engine_view_updates_while_another_client_streams(self):
        from selenium.webdriver.common.keys import Keys
        self.driver.set_window_size(1000, 1250)  # a laptop's width, tall enough for every chart
        # Keyboard alone: arrow keys move between the tabs.
        self.find("tab-chat").send_keys(Keys.ARROW_RIGHT)
        wait(self.driver, lambda d: self.find("view-engine").is_displayed())
        self.assertEqual(self.find("tab-engine").get_attribute("aria-selected"), "true")
        updates = lambda: int(self.find("view-engine").get_attribute("data-updates") or 0)
        wait(self.driver, lambda d: updates() >= 1, message="no engine event arrived")
        steps_before = int(self.find("stat-steps").text)
        first = updates()

        # Two streams at once: one that copies its prompt (the drafters find drafts: trees in the view).
        text = "The quick brown fox jumps over the lazy dog near the river bank. " * 3
        prompts = ["Repeat the following text exactly: " + text, "Tell me about the history of Paris."]
        errors = []
        workers = []

        def stream(content):
            try:
                client = server.openai()
                for _ in client.chat.completions.create(model=MODEL_ID, stream=True, max_tokens=100, temperature=0,
                                                        messages=[{"role": "user", "content": content}]):
                    pass
            except Exception as e:  # reported below
                errors.append(e)

        for content in prompts:
            workers.append(threading.Thread(target=stream, args=(content,), daemon=True))
            workers[-1].start()
        finished = lambda: not any(w.is_alive() for w in workers)
        # The view shows a running request, or (on a slow machine) the streams ended between two events.
        wait(self.driver, lambda d: finished() or not self.find("stat-running").text.startswith("0 "))
        for w in workers:
            w.join(timeout=WAIT)
        self.assertFalse(errors, errors)
        wait(self.driver, lambda d: int(self.find("stat-steps").text) > steps_before and updates() > first + 1,
             message="the engine view did not update after the second client's steps")
        wait(self.driver, lambda d: float(self.find("stat-tps").text) > 0, message="tokens/s stayed 0")
        # Charts were drawn: the rows chart has bars, the KV chart its bar.
        By = self.By
        self.assertGreater(len(self.driver.find_elements(By.CSS_SELECTOR, "#chart-rows rect")), 2)
        self.assertGreater(len(self.driver.find_elements(By.CSS_SELECTOR, "#chart-kv rect")), 0)
        screenshot(self.driver, "screenshot-engine.png")


GEMMA = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
GEMMA_ID = "gemma-3-270m-q4_k_m"


@unittest.skipUnless(os.path.exists(GEMMA), "the Gemma 3 model is missing (make gemma3-model)")
class BrowserModelPickerTest(unittest.TestCase):
    """The page against a server of SmolLM2 (the default) and Gemma 3 (from --models-dir)."""

    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.mkdtemp(prefix="castserve-web-models-")
        os.symlink(GEMMA, os.path.join(cls.directory, GEMMA_ID + ".gguf"))
        cls.server = Server(slots=SLOTS, args=["--models-dir", cls.directory]).start()
        try:
            cls.driver = browser(1000, 1250)
        except BaseException:
            cls.server.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.server.stop()
        shutil.rmtree(cls.directory, ignore_errors=True)

    def test_picker_routes_the_chat_and_the_engine_view_follows(self):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import Select
        d = self.driver
        d.get(self.server.base_url + "/")
        picker = d.find_element(By.ID, "model-picker")
        wait(d, lambda _: picker.is_displayed() and len(Select(picker).options) == 2, message="the picker never listed both models")
        options = [o.text for o in Select(picker).options]
        self.assertEqual(options, [MODEL_ID, GEMMA_ID + " (unloaded)"])
        self.assertEqual(Select(picker).first_selected_option.get_attribute("value"), MODEL_ID)
        self.assertIn(MODEL_ID, d.find_element(By.ID, "model").text)

        # Gemma picked: a chat goes to it, which loads it; the picker then shows it loaded.
        Select(picker).select_by_value(GEMMA_ID)
        wait(d, lambda _: GEMMA_ID in d.find_element(By.ID, "model").text, message="the picked model was not shown")
        set_max_tokens(d, 8)
        d.find_element(By.ID, "prompt").send_keys("Hi!", Keys.ENTER)
        reply = wait(d, lambda _: d.find_elements(By.CSS_SELECTOR, ".message.assistant"))[0]
        wait(d, lambda _: reply.find_elements(By.CSS_SELECTOR, ".figures .usage"), message="no reply from the picked model")
        wait(d, lambda _: [o.text for o in Select(picker).options] == [MODEL_ID, GEMMA_ID], message="the picker never showed Gemma loaded")
        _, listed = self.server.json("GET", "/v1/models")
        self.assertEqual({m["id"]: m["state"] for m in listed["data"]}, {MODEL_ID: "loaded", GEMMA_ID: "loaded"})

        # The engine view shows the picked model's engine, and follows a new pick.
        d.find_element(By.ID, "tab-engine").click()
        status = d.find_element(By.ID, "engine-status")
        wait(d, lambda _: status.text.startswith(GEMMA_ID), message="the engine view did not show Gemma's engine")
        self.assertGreater(int(d.find_element(By.ID, "stat-steps").text), 0)
        Select(picker).select_by_value(MODEL_ID)
        wait(d, lambda _: status.text.startswith(MODEL_ID), message="the engine view did not follow the pick")
        screenshot(d, "screenshot-models.png")


class BrowserKeyTest(unittest.TestCase):
    """The page against a server with an API key: it asks for one; a wrong key is an error."""

    @classmethod
    def setUpClass(cls):
        cls.driver = browser(412, 860)
        cls.server = keyed

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()

    def test_wrong_key_shows_an_error_and_the_right_one_works(self):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        d = self.driver
        d.get(self.server.base_url + "/")
        form = d.find_element(By.ID, "key-form")
        wait(d, lambda _: form.is_displayed(), message="the page did not ask for a key")
        key = d.find_element(By.ID, "key-input")
        key.send_keys("wrong", Keys.ENTER)
        error = d.find_element(By.ID, "key-error")
        wait(d, lambda _: error.text.strip(), message="a wrong key showed no error")
        self.assertTrue(form.is_displayed())
        self.assertEqual(d.find_element(By.ID, "model").text, "")
        key.clear()
        key.send_keys("secret", Keys.ENTER)
        wait(d, lambda _: not form.is_displayed(), message="the right key was not accepted")
        self.assertIn(MODEL_ID, d.find_element(By.ID, "model").text)
        # The key works for a chat...
        set_max_tokens(d, 8)
        d.find_element(By.ID, "prompt").send_keys("Hi!", Keys.ENTER)
        reply = wait(d, lambda _: d.find_elements(By.CSS_SELECTOR, ".message.assistant"))[0]
        wait(d, lambda _: reply.find_elements(By.CSS_SELECTOR, ".figures .usage"), message="no reply with the right key")
        self.assertNotIn("error", reply.get_attribute("class"))
        # ...and for the engine view, and lives in memory only.
        d.find_element(By.ID, "tab-engine").click()
        wait(d, lambda _: int(d.find_element(By.ID, "view-engine").get_attribute("data-updates") or 0) >= 1)
        stored = d.execute_script("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie")
        self.assertNotIn("secret", stored)


if __name__ == "__main__":
    unittest.main()
