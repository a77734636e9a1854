"""The Dockerfile's linux/arm64 build of the C++ core: the opt-in core-aarch64 stage cross-compiles
native/ and its GoogleTest suites with the project's AArch64 toolchain file and runs every suite
under qemu-aarch64 inside the build; here that stage is built and what it leaves in /out must be
AArch64 code, not x86 code. Minutes: opt in with BNN_E2E_COMPOSE=1 (scripts/test.sh sets it), as for
tests/e2e/compose_smoke.sh; like that script, with no engine running it starts one with
../shared/tools/docker-sandbox.sh (BNN_SHARED_DIR) and stops it again afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGE, BUILD_ARG = "core-aarch64", "BNN_CORE_AARCH64=1"
EM_AARCH64 = 183  # the ELF header's e_machine (x86-64 is 62)


def docker_env() -> dict[str, str]:
    env = dict(os.environ)
    # the sandbox's client configuration, as test_dockerfile.py and compose_smoke.sh set it
    env.setdefault("DOCKER_CONFIG", os.environ.get("DOCKER_SANDBOX_DIR", "/tmp/docker-sandbox") + "/config")
    return env


def engine_running(env: dict[str, str]) -> bool:
    return subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=60).returncode == 0


@pytest.fixture
def docker_engine() -> Iterator[dict[str, str]]:
    """The environment for the docker CLI, with an engine running: this machine's, or the sandbox's
    (started here, and stopped again at the end), or a skip saying what is missing."""
    if os.environ.get("BNN_E2E_COMPOSE") != "1":
        pytest.skip("set BNN_E2E_COMPOSE=1 to build the core-aarch64 image stage (minutes)")
    if shutil.which("docker") is None:
        pytest.skip("docker CLI not installed (bash ../shared/tools/docker-sandbox.sh up installs it)")
    env = docker_env()
    if engine_running(env):
        yield env
        return
    sandbox = Path(os.environ.get("BNN_SHARED_DIR", ROOT.parent / "shared")) / "tools" / "docker-sandbox.sh"
    if not sandbox.is_file():
        pytest.skip(f"no Docker engine running and no {sandbox} to start one (set BNN_SHARED_DIR)")
    up = subprocess.run(["bash", str(sandbox), "up"], env=env, capture_output=True, text=True, timeout=1800)
    assert up.returncode == 0 and engine_running(env), (up.stdout + up.stderr)[-4000:]
    try:
        yield env
    finally:
        subprocess.run(["bash", str(sandbox), "down"], env=env, capture_output=True, timeout=120)


def elf_machines(path: Path) -> set[int]:
    """The ELF machine of an executable, or of every object in a static library (an ar archive)."""
    data = path.read_bytes()
    if data.startswith(b"\x7fELF"):
        return {int.from_bytes(data[18:20], "little")}
    assert data.startswith(b"!<arch>\n"), f"{path.name}: neither ELF nor an ar archive"
    machines, offset = set(), 8
    while offset + 60 <= len(data):
        size = int(data[offset + 48:offset + 58])
        member = data[offset + 60:offset + 60 + size]
        if member.startswith(b"\x7fELF"):
            machines.add(int.from_bytes(member[18:20], "little"))
        offset += 60 + size + (size % 2)  # members are aligned to even offsets
    return machines


@pytest.mark.e2e
@pytest.mark.slow
def test_core_aarch64_stage_builds_arm64_code(docker_engine: dict[str, str], tmp_path: Path):
    tag = f"bnn-core-aarch64:test-{uuid.uuid4().hex[:8]}"

    def docker(*args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], cwd=ROOT, env=docker_engine, capture_output=True, text=True, timeout=timeout)

    build = docker("build", "--target", STAGE, "--build-arg", BUILD_ARG, "-t", tag, ".", timeout=2400)
    assert build.returncode == 0, (build.stdout + build.stderr)[-6000:]
    # The emulated run of the suites happens inside the build: its summary must be in the log.
    assert "[  PASSED  ]" in build.stdout and "[  FAILED  ]" not in build.stdout, build.stdout[-4000:]
    container = docker("create", tag).stdout.strip()
    try:
        assert container, "docker create gave no container id"
        copy = docker("cp", f"{container}:/out", str(tmp_path))
        assert copy.returncode == 0, copy.stderr
    finally:
        docker("rm", container)
        docker("rmi", tag)
    library, tests = tmp_path / "out" / "libbnn_core.a", tmp_path / "out" / "bnn_tests"
    assert elf_machines(library) == {EM_AARCH64}, f"libbnn_core.a holds machines {elf_machines(library)}"
    assert elf_machines(tests) == {EM_AARCH64}, f"bnn_tests is for machine {elf_machines(tests)}"
