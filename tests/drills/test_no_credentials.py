"""No credential is committed: every tracked file is searched for secret literals and secret files.

A secret may be *named* anywhere (``POSTGRES_PASSWORD``, a ``password`` argument); it may never have
a literal value. Allowed values are references and placeholders: empty (``.env.example``),
``${VAR:?message}``, ``{expression}`` (f-strings), ``<placeholder>``, or a value computed at run time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A name that *ends* with one of these words holds a secret (PASSWORDS_FILE_NAME does not).
SECRET_NAME = r"[A-Za-z0-9_.-]*(?:password|passwd|secret|secret_key|token|api_key|apikey|private_key|" \
              r"fernet_key|access_key)"
QUOTED = re.compile(rf"""(?ix)(?<![A-Za-z0-9_])["']?(?P<name>{SECRET_NAME})["']?\s*[:=]\s*
                        (?P<q>["'])(?P<value>[^"'\n]*)(?P=q)""")
# KEY=value (env files, shell, Dockerfile) and key: value (YAML), unquoted
UNQUOTED = re.compile(rf"""(?imx)^\s*(?:export\s+|ENV\s+|-\s+)?(?P<name>{SECRET_NAME})\s*[:=][ \t]*
                          (?P<value>[^"'\s#][^\s#]*)""")
URL_CREDENTIALS = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:(?P<value>[^@\s'\"/]+)@")
KNOWN_FORMATS = {
    "AWS access key id": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "private key block": re.compile("-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE" + " KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
}
SECRET_FILES = re.compile(r"(?i)(^|/)(\.env|id_rsa|id_ed25519|.*\.pem|.*\.key|.*\.p12|.*\.pfx|"
                          r"simple_auth_manager_passwords\.json.*|airflow\.db|webserver_config\.py)$")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".json", ".sh", ".js",
                 ".html", ".css", ".example", ""}


def is_placeholder(value: str) -> bool:
    value = value.strip()
    return value == "" or value.startswith(("$", "<", "%(")) or "{" in value


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [name for name in listing.decode().split("\0") if name]


def secret_literals(text: str, python: bool = False) -> list[str]:
    """Every place in ``text`` that gives a secret a literal value.

    In Python only quoted values count (``token = body.get(...)`` is code); in configuration, shell
    and documentation an unquoted ``NAME=value`` or ``name: value`` counts too.
    """
    found = []
    for pattern in (QUOTED,) if python else (QUOTED, UNQUOTED):
        found += [f"{match['name']} = {match['value']!r}" for match in pattern.finditer(text)
                  if not is_placeholder(match["value"])]
    found += [f"credentials in a URL: {match[0]!r}" for match in URL_CREDENTIALS.finditer(text)
              if not is_placeholder(match["value"])]
    found += [name for name, pattern in KNOWN_FORMATS.items() if pattern.search(text)]
    return found


# Templates, so that this file itself holds no literal: "{}" is filled in at run time.
PLANTED = ['POSTGRES_PASSWORD = "{}"', "AIRFLOW__API__SECRET_KEY={}\n", '    api_token: "{}"\n',
           '{{"password": "{}"}}', "postgresql://airflow:{}@postgres/airflow", "AKIA{}"]


def test_the_detector_finds_what_it_must() -> None:
    for template in PLANTED:
        assert secret_literals(template.format("HUNTER2HUNTER2HU")), template
    for allowed in ("POSTGRES_PASSWORD=\n", "AIRFLOW_JWT_SECRET: ${AIRFLOW_JWT_SECRET:?set it}",
                    "TOKEN=$(curl -s -X POST http://127.0.0.1:8080/auth/token)",
                    '-d \'{"username":"admin","password":"<password>"}\''):
        assert secret_literals(allowed) == [], allowed
    for allowed in ('url = f"{scheme}://{self.user}:{self.password}@{self.host}"',
                    "token = body.get('access_token')",
                    'PASSWORDS_FILE_NAME = "simple_auth_manager_passwords.json.generated"',
                    "password: str = field(default_factory=lambda: secrets.token_urlsafe(18))"):
        assert secret_literals(allowed, python=True) == [], allowed


def test_no_credential_in_any_tracked_file() -> None:
    problems = []
    for name in tracked_files():
        path = REPO / name
        if SECRET_FILES.search(name) and not name.endswith(".example"):
            problems.append(f"{name}: a secret file is tracked")
        if path.suffix not in TEXT_SUFFIXES and path.name not in ("Dockerfile", "Makefile", "run"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        problems += [f"{name}: {problem}" for problem in secret_literals(text, python=path.suffix == ".py")]
    assert not problems, "\n".join(problems)


def test_env_example_leaves_every_secret_empty() -> None:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    secrets = [line for line in text.splitlines()
               if re.match(rf"(?i)^{SECRET_NAME}=", line)]
    assert secrets, "no secret is listed in .env.example"
    assert all(line.endswith("=") for line in secrets), secrets


def test_local_secrets_are_ignored_by_git() -> None:
    tracked_files()
    local = (".env", "airflow_home/airflow.db", "airflow_home/simple_auth_manager_passwords.json.generated")
    for name in local:
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"{name} is not git-ignored"
