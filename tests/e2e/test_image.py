"""The image, without a container engine: the Dockerfile's own install steps, entrypoint and user.

No container engine runs on the machines that run this suite, so the test does what the image
does, step by step, read from the Dockerfile itself (a change there is tested here):

- the build stage's `RUN` lines run in a fresh virtualenv, over a folder holding only what the
  Dockerfile `COPY`s (so a file the wheel needs but the build does not copy fails here);
- the final stage's `RUN` lines install those wheels into another fresh virtualenv, offline;
- `ENTRYPOINT` + `CMD` start, as the Dockerfile's `USER`, with its `ENV`, in a mount namespace
  where every filesystem is read-only except an in-memory certificate folder, as the Deployment
  mounts it (`readOnlyRootFilesystem: true`, an emptyDir at /certs).

What is simulated: the base image (the host's Python stands in for the pinned one) and the
container's filesystem (the host's, made read-only). `unshare`, `mount` and `setpriv` need root.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import ROOT, free_port

REVISION = "0123abc"


@dataclass
class Stage:
    base: str
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    copies: list[list[str]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    user: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    workdir: str = "/"


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, rest) for each instruction, continuation lines joined, comments dropped."""
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not logical:
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        if logical.strip():
            word, _, rest = logical.strip().partition(" ")
            yield word.upper(), rest.strip()
        logical = ""


def stages(text: str) -> list[Stage]:
    found: list[Stage] = []
    for word, rest in instructions(text):
        if word == "FROM":
            found.append(Stage(base=rest.split()[0]))
            continue
        stage = found[-1]
        if word == "ARG":
            name, _, default = rest.partition("=")
            stage.args[name] = REVISION if name == "REVISION" else default
        elif word == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                args = stage.args
                stage.env[name] = re.sub(r"\$\{(\w+)\}", lambda m, args=args: args.get(m.group(1), ""), value)
        elif word == "COPY":
            stage.copies.append(rest.split())
        elif word == "RUN":
            stage.runs.append(rest)
        elif word == "USER":
            stage.user = rest
        elif word == "WORKDIR":
            stage.workdir = rest
        elif word in ("ENTRYPOINT", "CMD"):
            setattr(stage, word.lower(), json.loads(rest))
    return found


DOCKERFILE = stages((ROOT / "Dockerfile").read_text())


def deployments() -> list[dict[str, Any]]:
    docs = yaml.safe_load_all((ROOT / "deploy/overlays/kkp/deployment.yaml").read_text())
    return [d for d in docs if d and d.get("kind") == "Deployment"]


def test_the_dockerfile_pins_its_bases_by_digest_and_runs_as_the_deployments_user():
    assert len(DOCKERFILE) == 2
    for stage in DOCKERFILE:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", stage.base), stage.base
    uid, _, gid = DOCKERFILE[-1].user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0
    for deployment in deployments():
        pod = deployment["spec"]["template"]["spec"]
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_image_installs_exactly_the_pinned_dependencies():
    """`constraints.txt` pins every runtime dependency the wheel pulls in, so two builds hold the same code."""
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    wanted = {"aiohttp", "kubernetes", "pydantic", "cryptography", "pyyaml", "prometheus-client"}
    assert wanted <= pinned
    assert "--constraint constraints.txt" in DOCKERFILE[0].runs[0]


def _run_stage(stage: Stage, venv: Path, paths: dict[str, Path], cwd: Path) -> None:
    for command in stage.runs:
        for image_path, host_path in paths.items():
            command = command.replace(image_path, str(host_path))
        command = re.sub(r"(^|&& )pip ", rf"\g<1>{venv}/bin/pip ", command)
        subprocess.run(["sh", "-c", command], cwd=cwd, check=True, capture_output=True, timeout=900,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


@pytest.fixture(scope="module")
def image() -> Iterator[dict[str, Path]]:
    """The image's filesystem, laid out on the host: the installed virtualenv and /app."""
    assert os.geteuid() == 0, "the image test needs root for unshare, mount and setpriv"
    top = Path(tempfile.mkdtemp(prefix="audit-webhook-image-"))
    top.chmod(0o755)  # the image's user must read the virtualenv
    try:
        build, final = DOCKERFILE
        src = top / "src"
        src.mkdir()
        for *sources, dest in build.copies:
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, src / dest, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / source, src / dest)
        paths = {"/wheels": top / "wheels", "/src": src, "/certs": top / "certs"}
        for name in ("build-venv", "venv"):
            subprocess.run([sys.executable, "-m", "venv", str(top / name)], check=True)
        _run_stage(build, top / "build-venv", paths, src)
        app = top / "app"
        for *sources, dest in final.copies:
            if sources[0].startswith("--from"):
                continue
            shutil.copytree(ROOT / sources[0], app / Path(dest).relative_to(final.workdir))
        _run_stage(final, top / "venv", paths, top)
        assert not (top / "wheels").exists(), "the final stage removes its wheels"
        shutil.rmtree(top / "build-venv")
        yield {"top": top, "venv": top / "venv", "app": app}
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _sandboxed(image: dict[str, Path], certs: Path, argv: list[str]) -> list[str]:
    """`argv` as the image runs it: its USER and ENV, every filesystem read-only but `certs` (tmpfs).

    The interpreter may live under a folder the image's user cannot enter (pyenv under /root):
    that folder is replaced, in the namespace only, by a readable one holding the interpreter's tree.
    """
    final = DOCKERFILE[-1]
    uid, _, gid = final.user.partition(":")
    prefix = Path(sys.base_prefix).resolve()
    blocked = next((p for p in reversed(prefix.parents) if p != Path("/") and not os.stat(p).st_mode & 0o001), None)
    script = ["set -e", "mount --make-rprivate /"]
    if blocked is not None:
        child = blocked / prefix.relative_to(blocked).parts[0]
        keep = image["top"] / "keep"
        keep.mkdir(exist_ok=True)
        script += [f"mount --bind {child} {keep}", f"mount -t tmpfs -o mode=755 tmpfs {blocked}",
                   f"mkdir -p {child}", f"mount --bind {keep} {child}"]
    script += [
        "for m in $(findmnt -rno TARGET | sort -u); do case $m in /proc*|/sys*|/dev*) ;; "
        "*) mount -o remount,bind,ro \"$m\" 2>/dev/null || true ;; esac; done",
        f"mount -t tmpfs -o size=1m,mode=700,uid={uid},gid={gid} tmpfs {certs}",
        f"cd {image['app']}",
    ]
    env = {"PATH": f"{image['venv']}/bin:/usr/bin:/bin", **DOCKERFILE[-1].env}
    run = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "env", "-i",
           *(f"{k}={v}" for k, v in env.items()), *argv]
    script.append("exec " + shlex.join(run))
    return ["unshare", "-m", "sh", "-c", "\n".join(script)]


def _image_argv(image: dict[str, Path], certs: Path) -> list[str]:
    final = DOCKERFILE[-1]
    mapped = {"/certs": str(certs), final.workdir: str(image["app"])}
    argv = [*final.entrypoint, *final.cmd]
    return [next((v + a[len(k):] for k, v in mapped.items() if a == k or a.startswith(k + "/")), a) for a in argv]


def _get(url: str, ca: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, context=ca, timeout=5) as response:
        return response.status, response.read()


def test_the_image_starts_as_its_user_on_a_read_only_root(image):
    certs = image["top"] / "certs"
    # The image makes /certs its user's, so the default command runs without a volume there too.
    uid, _, gid = DOCKERFILE[-1].user.partition(":")
    assert (certs.stat().st_uid, certs.stat().st_gid, certs.stat().st_mode & 0o777) == (int(uid), int(gid), 0o700)
    port, metrics_port = free_port(), free_port()
    argv = [*_image_argv(image, certs), "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port)]
    assert argv[:2] == ["audit-webhook", "serve"]
    proc = subprocess.Popen(_sandboxed(image, certs, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # the CA lives on the namespace's tmpfs; the cert's contents are not under test
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                status, _ = _get(f"https://127.0.0.1:{port}/readyz", insecure)
                break
            except OSError:
                assert time.monotonic() < deadline, "the image did not become ready"
                time.sleep(0.3)
        assert status == 200
        review = json.loads((image["app"] / "examples/reviews/mutate-apiserver.json").read_text())
        request = urllib.request.Request(f"https://127.0.0.1:{port}/mutate", data=json.dumps(review).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=insecure, timeout=10) as response:
            answer = json.loads(response.read())["response"]
        assert answer["allowed"] is True and answer["patchType"] == "JSONPatch"

        # unshare, sh, setpriv and env each exec the next: the pid is the webhook's.
        status_file = Path(f"/proc/{proc.pid}/status").read_text()
        uid = DOCKERFILE[-1].user.partition(":")[0]
        assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status_file, re.M)

        _, metrics = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        (image["top"] / "scratch").mkdir()
        version = subprocess.run(_sandboxed(image, image["top"] / "scratch", ["audit-webhook", "version", "-o", "json"]),
                                 capture_output=True, text=True, check=True, timeout=60)
        info = json.loads(version.stdout)
        assert info["revision"] == REVISION
        (line,) = [m for m in metrics.decode().splitlines() if m.startswith("audit_webhook_build_info{")]
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        assert labels == {**info, "component": "webhook"} and line.endswith(" 1.0")
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out
    assert "Read-only file system" not in out and "Traceback" not in out, out

