"""Refresh the screenshots in docs/dashboard.md: ``python docs/screenshots.py``.

The pictures are the pages of the browser test that checks them (tests/e2e/test_browser_e2e.py,
``test_an_analysts_day``): this runs that test in headless Chromium (/usr/bin/chromium and
/usr/bin/chromedriver, selenium from ``pip install -e '.[test]'``) with
``SWITCHBOARD_SCREENSHOTS=docs/images``, so every picture is a page that passed its assertions.
Exits with pytest's status; a failed test leaves the previous pictures where it failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"


def main() -> int:
    IMAGES.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "SWITCHBOARD_SCREENSHOTS": str(IMAGES)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/e2e/test_browser_e2e.py::test_an_analysts_day"]
    status = subprocess.call(command, cwd=ROOT, env=environment)
    shots = sorted(IMAGES.glob("dashboard-*.png"))
    print(f"{len(shots)} screenshots in {IMAGES.relative_to(ROOT)}: {', '.join(p.name for p in shots)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
