"""The image: multi-stage, slim, non-root, a healthcheck that works without curl."""

from __future__ import annotations

import fnmatch
import http.server
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.deploy.helpers import (
    DOCKERFILE,
    DOCKERIGNORE,
    MONITOR_TOML,
    REPO,
    dockerfile_instructions,
    exec_form,
    final_stage,
    image_command,
    load_toml,
)


def resolve_args(text: str) -> str:
    defaults = {}
    for stage, instr, args in dockerfile_instructions():
        if stage == -1 and instr == "ARG" and "=" in args:
            k, v = args.split("=", 1)
            defaults[k] = v
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m.group(1) or m.group(2)], text)


def test_the_image_is_built_in_two_stages_on_python_311_slim() -> None:
    instrs = dockerfile_instructions()
    froms = [resolve_args(a) for _, i, a in instrs if i == "FROM"]
    assert len(froms) >= 2, "build stage + runtime stage"
    assert froms[-1].split()[0] == "python:3.11-slim"
    build = [a for s, i, a in instrs if s == 0 and i == "RUN"]
    assert any("pip wheel" in a for a in build), "the build stage builds wheels"
    runtime_runs = [a for i, a in final_stage(instrs) if i == "RUN"]
    install = [a for a in runtime_runs if "pip install" in a]
    assert install and "--no-index" in install[0] and "from=build" in install[0]


def test_the_daemon_runs_as_a_fixed_non_root_user() -> None:
    stage = final_stage(dockerfile_instructions())
    users = [a for i, a in stage if i == "USER"]
    assert users, "no USER: the container would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid not in {"0", "root"} and gid not in {"0", "root"}
    created = " ".join(a for i, a in stage if i == "RUN" and "useradd" in a)
    assert re.search(rf"groupadd [^&]*--gid {gid}\b", created), "the group has another gid"
    assert re.search(rf"useradd [^&]*--uid {uid}\b", created), "the user has another uid"


def test_the_default_command_is_monitor_run_with_the_baked_config() -> None:
    assert image_command() == ["monitor", "run", "--config", "/etc/monitor/monitor.toml"]
    copies = [a for i, a in final_stage(dockerfile_instructions()) if i == "COPY"]
    assert "deploy/monitor/monitor.toml /etc/monitor/monitor.toml" in copies


def test_state_volume_and_port_match_the_daemon_config() -> None:
    cfg = load_toml(MONITOR_TOML)
    stage = final_stage(dockerfile_instructions())
    assert [a for i, a in stage if i == "VOLUME"] == [cfg["state"]["dir"]] == ["/var/lib/monitor"]
    assert [a for i, a in stage if i == "EXPOSE"] == [str(cfg["http"]["port"])]
    runs = " ".join(a for i, a in stage if i == "RUN")
    assert f"chown -R monitor:monitor {cfg['state']['dir']}" in runs, (
        "the state dir must be writable"
    )


def test_instruments_file_of_the_config_is_in_the_image() -> None:
    cfg = load_toml(MONITOR_TOML)
    copies = dict(
        a.split()[-2:][::-1] for i, a in final_stage(dockerfile_instructions()) if i == "COPY"
    )
    source = copies.get(cfg["instruments"]["file"])
    assert source is not None, "nothing is copied to [instruments] file"
    assert (REPO / source).is_file()


def healthcheck_command() -> list[str]:
    checks = [a for i, a in final_stage(dockerfile_instructions()) if i == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, cmd = checks[0].partition("CMD ")
    for opt in shlex.split(options):
        assert re.fullmatch(r"--(interval|timeout|start-period|retries)=\w+", opt), opt
    return exec_form(cmd)


def test_healthcheck_asks_healthz_with_python_not_curl() -> None:
    cmd = healthcheck_command()
    port = load_toml(MONITOR_TOML)["http"]["port"]
    assert cmd[0] == "python" and cmd[1] == "-c"
    assert "urllib.request" in cmd[2]
    assert f"http://127.0.0.1:{port}/healthz" in cmd[2]
    assert "curl" not in " ".join(cmd) and "wget" not in " ".join(cmd)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve(status: int) -> Iterator[int]:
    handler = type("H", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(port: int) -> int:
    code = healthcheck_command()[2].replace(":9464/", f":{port}/")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode


def test_healthcheck_passes_on_200() -> None:
    with serve(200) as port:
        assert run_healthcheck(port) == 0


@pytest.mark.parametrize("status", [500, 503])
def test_healthcheck_fails_on_an_error_status(status: int) -> None:
    with serve(status) as port:
        assert run_healthcheck(port) != 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run_healthcheck(port) != 0


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or a parent wins."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        pat_any = pat.removeprefix("**/")
        for p in prefixes:
            if fnmatch.fnmatchcase(p, pat) or (
                pat != pat_any and fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], pat_any)
            ):
                excluded = not negate
                break
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [x.strip() for x in lines if x.strip() and not x.strip().startswith("#")]


def test_dockerignore_sends_what_the_build_copies_and_nothing_heavy() -> None:
    patterns = dockerignore_patterns()
    sources = []
    for _, instr, args in dockerfile_instructions():
        if instr == "COPY" and "--from" not in args:
            sources += args.split()[:-1]
    assert sources
    for src in sources:
        if "*" in src:  # optional files: may match nothing
            continue
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert not _ignored(src, patterns), f"COPY {src} is excluded by {DOCKERIGNORE.name}"
    for heavy in (".venv", ".git", "tests", "state", "dist", "monitor/__pycache__/x.pyc"):
        assert _ignored(heavy, patterns), f"{heavy} would be sent to the build"


def test_the_build_stage_copies_what_the_wheel_build_reads() -> None:
    project = load_toml(REPO / "pyproject.toml")["project"]
    copied = [
        src
        for stage, instr, args in dockerfile_instructions()
        if stage == 0 and instr == "COPY"
        for src in args.split()[:-1]
    ]
    assert "pyproject.toml" in copied
    assert "monitor" in copied
    readme = project.get("readme")
    if isinstance(readme, str):
        assert any(fnmatch.fnmatchcase(readme, src) for src in copied), f"{readme} not copied"
        assert not _ignored(readme, dockerignore_patterns())


def test_dockerignore_matcher_follows_last_match_wins() -> None:
    assert _ignored("a/b", ["*"])
    assert not _ignored("a/b", ["*", "!a"])
    assert _ignored("a/__pycache__", ["*", "!a", "**/__pycache__"])


def test_dockerfile_references_only_files_that_exist() -> None:
    assert DOCKERFILE.is_file()
    header = DOCKERFILE.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("# syntax=docker/dockerfile:1"), "RUN --mount needs BuildKit syntax 1"
