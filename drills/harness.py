"""What the drills share: a real `yinyom serve` on loopback (SQLite in a
fresh directory unless a database URL is given), a keep-alive JSON client,
and the one-line verdict every drill ends with.

Standard library only, so a drill runs wherever Python 3 does.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "yy_drill_owner_0123456789abcdef0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary():
    b = os.environ.get("YINYOM_BIN") or os.path.join(REPO, "target", "debug", "yinyom")
    if not os.path.exists(b):
        subprocess.run(["cargo", "build", "--locked", "--quiet"], cwd=REPO, check=True)
    return b


class Server:
    """A `yinyom serve` process; `restart()` keeps its data directory."""

    def __init__(self, env=None, data_dir=None, log_dir=None):
        self.dir = data_dir or tempfile.mkdtemp(prefix="yinyom-drill-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update({
            "YINYOM_BOOTSTRAP_API_KEY": KEY,
            "YINYOM_DATA_DIR": self.dir,
            "YINYOM_LISTEN": f"127.0.0.1:{self.port}",
            "YINYOM_PUBLIC_URL": self.url,
            "YINYOM_LOG": "warn",
        })
        self.env.update(env or {})
        self.proc = None
        # The log lives apart from the data (a drill may fill the data's disk).
        self.log_path = os.path.join(log_dir or tempfile.mkdtemp(prefix="yinyom-drill-log-"), "server.log")
        self.log = open(self.log_path, "ab")
        self.start()

    def start(self, wait=30):
        self.proc = subprocess.Popen([binary(), "serve"], env=self.env,
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + wait
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"yinyom serve exited with {self.proc.returncode}; see {self.log_path}")
            try:
                c = Client(self.url, timeout=1)
                if c.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("yinyom serve did not become ready")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def restart(self):
        self.stop()
        self.start()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cleanup(self):
        self.stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if os.path.dirname(self.log_path) != self.dir:
            shutil.rmtree(os.path.dirname(self.log_path), ignore_errors=True)


class Client:
    """One keep-alive HTTP/1.1 connection speaking JSON."""

    def __init__(self, url, key=KEY, timeout=10):
        host, port = url.split("//")[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self.key = key

    def request(self, method, path, body=None, headers=None):
        h = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        try:
            self.conn.request(method, path, body=data, headers=h)
            r = self.conn.getresponse()
            raw = r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            raise
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return r.status, parsed

    def ok(self, method, path, body=None, want=(200, 201, 204)):
        status, b = self.request(method, path, body)
        if status not in want:
            raise RuntimeError(f"{method} {path}: {status} {b}")
        return b


def email_marketing(c):
    """The registry most drills write against: `marketing.email` (consent,
    on email) and the notice `main` v1 asking for it."""
    c.ok("POST", "/v1/purposes", {"key": "marketing.email", "names": {"en": "Email"}, "basis": "consent",
                                  "channels": ["email"], "retention_days": 365}, want=(201, 409))
    c.ok("POST", "/v1/notices", {"key": "main", "texts": {"en": {"title": "Notice", "body": "…"}},
                                 "purposes": ["marketing.email"]})


def grant(subject):
    """A consent request granting `marketing.email` on email."""
    return {"subject": subject, "source": "web", "notice": {"key": "main", "version": 1},
            "actions": [{"purpose": "marketing.email", "channel": "email", "action": "grant"}]}


def verdict(name, ok, summary):
    """The line a drill ends with; the exit code follows it."""
    print(f"{name}: {'PASS' if ok else 'FAIL'} — {summary}", flush=True)
    sys.exit(0 if ok else 1)
