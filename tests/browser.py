"""A real browser for the web UI tests: Debian's chromium, headless, driven by
selenium through Debian's chromedriver, inside a testbed box.

The browser must run in the box's network namespace (the daemon's API
listens on the box's loopback), and so must chromedriver and the selenium
client that talks to it. So ``Browser`` starts this module as a program in
the box (``python -m tests.browser``) and speaks JSON lines with it: one
command a line on stdin, one answer a line on stdout.

Commands: ``{"get": url}``, ``{"js": "return ..."}`` (a script's value),
``{"screenshot": path}``. Answers: ``{"ok": value}`` or ``{"error": text}``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.netns import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)
ANSWER_WAIT = 60.0  # seconds a command may take (the first page load starts chromium)


def available() -> str | None:
    """None if the browser test can run here, else what is missing."""
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not os.access(tool, os.X_OK):
            return f"{tool} (Debian packages chromium, chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium (pip install -e '.[test]')"
    return None


class Browser:
    """Headless chromium in a box, driven from outside (see the module docstring)."""

    def __init__(self, box_cmd: Callable[..., list[str]], box: str, workdir: Path) -> None:
        argv = box_cmd(box, "env", f"HOME={workdir}", f"PYTHONPATH={REPO_ROOT}")
        argv += [sys.executable, "-m", "tests.browser", str(workdir)]
        self._stderr = (workdir / "browser.stderr").open("wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )

    def command(self, **command: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the browser worker ended; see browser.stderr")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["ok"]

    def get(self, url: str) -> None:
        self.command(get=url)

    def js(self, script: str) -> Any:
        return self.command(js=script)

    def screenshot(self, path: Path) -> Path:
        self.command(screenshot=str(path))
        return path

    def wait_js(self, script: str, predicate: Callable[[Any], bool], timeout: float) -> Any:
        """Poll ``script`` until ``predicate(value)``; AssertionError with the last value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.js(script)
            if predicate(value):
                return value
            time.sleep(0.05)
        raise AssertionError(f"not within {timeout} s; last: {value!r}")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the worker, in the box ----------------------------------------------------------


def _driver(profile: str, flags: Sequence[str]) -> Any:
    os.environ["SE_OFFLINE"] = "true"  # both paths are given: nothing to look up or fetch
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def main(workdir: str) -> int:
    profile = tempfile.mkdtemp(prefix="chromium-", dir=workdir)
    driver = _driver(profile, FLAGS)
    try:
        for line in sys.stdin:
            command = json.loads(line)
            try:
                if "get" in command:
                    driver.get(command["get"])
                    value: Any = None
                elif "js" in command:
                    value = driver.execute_script(command["js"])
                elif "screenshot" in command:
                    value = driver.save_screenshot(command["screenshot"])
                else:
                    raise ValueError(f"unknown command {command!r}")
                answer = {"ok": value}
            except Exception as exc:  # the test reads it
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
