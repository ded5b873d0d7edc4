"""A headless Chromium, for a PNG of the page (``availability timeline --png``) and the tests' rendered DOM."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from availability.timeline.model import TimelineError

__all__ = ["BROWSER_NAMES", "MAX_SCREENSHOT_HEIGHT", "find_browser", "screenshot", "dump_dom"]

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")



def find_browser(explicit: str | None = None) -> str | None:
    """A headless-capable Chromium: ``explicit`` (a path or a name on PATH), else the first of
    :data:`BROWSER_NAMES` on PATH, else ``None``."""
    if explicit:
        return shutil.which(explicit)
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--force-device-scale-factor=1", "--mute-audio",
)


def _run_browser(browser: str | None, args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    path = find_browser(browser)
    if path is None:
        wanted = browser or " / ".join(BROWSER_NAMES)
        raise TimelineError(f"browser: no headless Chromium found ({wanted} not on PATH; Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="availability-chromium-") as profile:
        cmd = [path, *_FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the browser and its helper processes
            proc.communicate()
            raise TimelineError(f"browser: {path} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        last = next((line for line in reversed(err.decode(errors="replace").splitlines()) if line.strip()), "")
        raise TimelineError(f"browser: {path} exited with status {proc.returncode}: {last.strip()}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


MAX_SCREENSHOT_HEIGHT = 16_000


def screenshot(html_path: str | os.PathLike[str], png_path: str | os.PathLike[str], *, width: int, height: int,
               browser: str | None = None, timeout: float = 120.0) -> Path:
    """Render ``html_path`` to ``png_path`` (``width`` x ``height`` CSS pixels,
    the height capped at :data:`MAX_SCREENSHOT_HEIGHT`) in a headless Chromium."""
    page = Path(html_path).resolve()
    png = Path(png_path).resolve()
    png.unlink(missing_ok=True)
    height = min(height, MAX_SCREENSHOT_HEIGHT)
    _run_browser(browser, [f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri()], timeout)
    if not png.exists() or png.stat().st_size == 0:
        raise TimelineError(f"browser: finished without writing {png}")
    return png


def dump_dom(html_path: str | os.PathLike[str], *, browser: str | None = None, timeout: float = 120.0) -> str:
    """The DOM of the page after a headless Chromium loaded and rendered it."""
    page = Path(html_path).resolve()
    return _run_browser(browser, ["--dump-dom", page.as_uri()], timeout).stdout.decode()
