"""k8s/Dockerfile, read (no Docker engine runs here): small, non-root, pinned base, multi-stage,
nothing to build with in the final stage, and the image's pins are requirements.txt's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "k8s" / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|build-essential|cmake|apt-get|apk|yum|dnf|pip install|curl|wget|git)\b")


def _stages() -> list[list[str]]:
    """The instructions of each stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_the_image_is_built_in_two_stages_from_a_pinned_base():
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        base = stage[0].split()[1]
        # an exact patch release and variant (or a digest), never a floating tag
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-[\w.-]+(@sha256:[0-9a-f]{64})?|[\w./-]+@sha256:[0-9a-f]{64}", base), base
        assert not base.endswith((":latest", ":3", ":3.11")), base


def test_the_final_stage_runs_as_non_root_without_build_tools():
    final = _stages()[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users  # numeric, so runAsNonRoot can verify it
    for line in final:
        assert not BUILD_TOOLS.search(line), line
    copies = [line for line in final if line.upper().startswith("COPY ")]
    assert copies and all("--from=build" in line for line in copies), copies  # only the built virtualenv
    assert any(line.upper().startswith("ENTRYPOINT") and "tritonrec" in line for line in final)


def test_the_image_installs_no_torch_and_the_pins_of_requirements_txt():
    def pins(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==")
                out[re.sub(r"\[.*\]", "", name).lower()] = version
        return out

    image, project = pins(ROOT / "k8s" / "image-requirements.txt"), pins(ROOT / "requirements.txt")
    assert "torch" not in image and "onnxruntime" not in image
    assert {name: version for name, version in image.items() if project.get(name) != version} == {}
    assert {"kubernetes", "typer", "tritonclient", "prometheus-client"} <= set(image)
