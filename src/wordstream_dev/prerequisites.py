"""What the tooling needs from the machine besides Python packages: Java for Spark, Chromium for the UI test.

Both are Debian packages. When one is missing and this runs as root where ``apt-get`` exists, it is
installed (``make setup`` does so for Java, the UI test for Chromium); otherwise the error is one line
naming what to install. Only the standard library is used: ``make setup`` checks Java with the
system's Python, before the virtualenv exists::

    PYTHONPATH=src python3 -m wordstream_dev.prerequisites java       # Java 17+, installed if possible
    PYTHONPATH=src python3 -m wordstream_dev.prerequisites chromium
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

MIN_JAVA = 17
JAVA_PACKAGE = "openjdk-17-jre-headless"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_PACKAGE = "chromium"


class MissingPrerequisite(RuntimeError):
    """Something the machine lacks; the message is one line saying what to install."""


def java_major_version(env: Mapping[str, str] | None = None) -> int | None:
    """The major version of the ``java`` Spark will use (JAVA_HOME first, then PATH), or None."""
    env = os.environ if env is None else env
    java_home = env.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java", path=env.get("PATH"))
    if not java or not os.access(java, os.X_OK):
        return None
    try:
        output = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def java_problem(env: Mapping[str, str] | None = None) -> str | None:
    """Why Spark cannot run with this environment's Java (one line), or None when it can."""
    version = java_major_version(env)
    if version is None:
        return (f"Java {MIN_JAVA}+ is required for Spark and none was found (Debian: apt-get install "
                f"{JAVA_PACKAGE}; `make setup` does it as root)")
    if version < MIN_JAVA:
        return (f"Java {MIN_JAVA}+ is required for Spark 4; found Java {version} (set JAVA_HOME or put a "
                "newer java first on PATH)")
    return None


def require_java(env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`MissingPrerequisite` unless Spark can run with this environment's Java."""
    problem = java_problem(env)
    if problem:
        raise MissingPrerequisite(problem)


def ensure_java() -> None:
    """Java 17+ on PATH, installing Debian's JRE when it is missing and we may."""
    if java_problem() is None:
        return
    apt_install(JAVA_PACKAGE, "Spark needs Java 17+")
    require_java()


def ensure_chromium() -> Path:
    """Debian's Chromium, installed when it is absent and we may (the UI test's browser)."""
    if not CHROMIUM.exists():
        apt_install(CHROMIUM_PACKAGE, "the UI test drives it")
        if not CHROMIUM.exists():
            raise MissingPrerequisite(f"apt-get installed {CHROMIUM_PACKAGE} but {CHROMIUM} is still missing")
    return CHROMIUM


def apt_install(package: str, why: str, recommends: bool = True) -> None:
    """``apt-get update`` and ``apt-get install -y <package>``; one line when it cannot or fails."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingPrerequisite(f"{package} is missing ({why}) and apt-get cannot install it here "
                                  f"(needs root on Debian/Ubuntu): sudo apt-get install {package}")
    print(f"wordstream: installing {package} ({why})", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    options = [] if recommends else ["--no-install-recommends"]
    install = ["apt-get", "install", "-y", "-qq", *options, package]
    for command in (["apt-get", "update", "-qq"], install):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise MissingPrerequisite(f"`{' '.join(command)}` failed (exit {done.returncode}): {last}")


def main(argv: Sequence[str] | None = None) -> int:
    wanted = list(sys.argv[1:] if argv is None else argv)
    known: dict[str, Callable[[], object]] = {"java": ensure_java, "chromium": ensure_chromium}
    if not wanted or any(name not in known for name in wanted):
        print(f"usage: python -m wordstream_dev.prerequisites {{{','.join(known)}}} ...", file=sys.stderr)
        return 2
    try:
        for name in wanted:
            known[name]()
    except MissingPrerequisite as exc:
        print(f"wordstream: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
