"""A minimal headless-Chromium driver over the DevTools protocol on pipes (no WebDriver, no extra package).

    with Browser() as b:
        b.open('file:///.../_docs/index.html')
        b.evaluate('document.title')
        b.screenshot('home.png')

`find_chromium()` looks for Debian's `chromium` (or chromium-browser / google-chrome) on PATH;
`install_chromium()` installs Debian's package with apt-get when it can (root, apt-get present).
Chromium is started with `--remote-debugging-pipe`: it reads DevTools commands from file descriptor 3 and writes
replies and events to descriptor 4, each message a JSON object followed by a NUL byte.
"""
from __future__ import annotations

import base64, json, os, shutil, subprocess, tempfile, time
from pathlib import Path

NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')


def find_chromium() -> str | None:
    "The path of a Chromium/Chrome executable on PATH, or None."
    return next((p for p in map(shutil.which, NAMES) if p), None)


def install_chromium(log=print) -> str | None:
    "Install Debian's `chromium` with apt-get when possible (root); returns the executable or None with the reason logged."
    if find_chromium(): return find_chromium()
    if not shutil.which('apt-get'): log("no chromium and no apt-get to install it"); return None
    if hasattr(os, 'geteuid') and os.geteuid() != 0: log("no chromium, and installing it with apt-get needs root"); return None
    env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
    for cmd in (['apt-get', 'update', '-qq'], ['apt-get', 'install', '-y', '-qq', 'chromium']):
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0: log(f"{' '.join(cmd)} failed: {p.stderr.strip()[-500:]}"); return None
    return find_chromium()


class BrowserError(RuntimeError):
    pass


class Browser:
    "Headless Chromium with one page; `open`, `evaluate`, `screenshot`. Use as a context manager."
    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 1000, timeout: float = 60):
        self.executable = executable or find_chromium()
        if not self.executable: raise BrowserError("no chromium executable found (apt-get install chromium)")
        self.width, self.height, self.timeout, self._id, self._buf = width, height, timeout, 0, b''
        self.events: list[dict] = []          # protocol events not yet waited for
        self.profile = tempfile.mkdtemp(prefix='chromium_profile_')
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def place_fds():                      # in the child: the protocol's descriptors 3 (commands) and 4 (replies)
            r, w = os.dup(to_child_r), os.dup(from_child_w)     # out of the way of 3 and 4 first
            os.dup2(r, 3); os.dup2(w, 4)

        args = [self.executable, '--headless', '--remote-debugging-pipe', '--no-sandbox', '--disable-gpu',
                '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check', '--hide-scrollbars',
                '--allow-file-access-from-files', f'--user-data-dir={self.profile}', f'--window-size={width},{height}',
                'about:blank']
        self.proc = subprocess.Popen(args, preexec_fn=place_fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r); os.close(from_child_w)
        target = self.send('Target.createTarget', url='about:blank')['targetId']
        self.session = self.send('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
        self.send('Page.enable', session=True); self.send('Runtime.enable', session=True)
        self.send('Emulation.setDeviceMetricsOverride', session=True, width=width, height=height, deviceScaleFactor=1, mobile=False)

    # -- protocol
    def _read_message(self, deadline: float) -> dict:
        while b'\0' not in self._buf:
            if time.monotonic() > deadline: raise BrowserError("chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk: raise BrowserError(f"chromium closed the DevTools pipe (exit code {self.proc.poll()})")
            self._buf += chunk
        msg, self._buf = self._buf.split(b'\0', 1)
        return json.loads(msg)

    def send(self, method: str, session: bool = False, **params) -> dict:
        "Send one DevTools command and return its result (events that arrive meanwhile are kept in `events`)."
        self._id += 1
        msg = {'id': self._id, 'method': method, 'params': params}
        if session: msg['sessionId'] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b'\0')
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get('id') == self._id:
                if 'error' in reply: raise BrowserError(f"{method}: {reply['error']}")
                return reply.get('result', {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get('method') == method: return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    # -- page
    def open(self, url: str) -> None:
        "Navigate and wait for the load event (images included), then for fonts."
        self.events = [e for e in self.events if e.get('method') != 'Page.loadEventFired']
        res = self.send('Page.navigate', session=True, url=url)
        if res.get('errorText'): raise BrowserError(f"cannot open {url}: {res['errorText']}")
        self.wait_event('Page.loadEventFired')
        self.evaluate('document.fonts.ready.then(() => true)')

    def evaluate(self, expression: str):
        "The value of a JavaScript expression in the page (promises are awaited)."
        r = self.send('Runtime.evaluate', session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in r: raise BrowserError(f"{expression[:80]}: {r['exceptionDetails'].get('text')}")
        return r['result'].get('value')

    def screenshot(self, path, full_page: bool = False) -> Path:
        "A PNG of the viewport (or the whole page, up to 6000 px high) written to `path`."
        params = {'format': 'png'}
        if full_page:
            h = min(int(self.evaluate('document.documentElement.scrollHeight')), 6000)
            params['clip'] = {'x': 0, 'y': 0, 'width': self.width, 'height': h, 'scale': 1}
            params['captureBeyondViewport'] = True
        data = self.send('Page.captureScreenshot', session=True, **params)['data']
        path = Path(path); path.parent.mkdir(parents=True, exist_ok=True); path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try: self.send('Browser.close')
        except (BrowserError, OSError): pass
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try: os.close(fd)
            except OSError: pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self): return self
    def __exit__(self, *exc): self.close()
