"""Render the kustomize manifests of deploy/ and the values table of docs/helm.md from the Helm
chart (`make manifests`).

charts/audit-webhook is the one source: each deploy/overlays/<mode>/ holds `helm template` of it
with that folder's values.yaml, one file per chart template, for `kubectl apply -k`; deploy/monitoring/
holds the chart's monitoring objects (ServiceMonitor, PrometheusRule, dashboard) with its values.yaml,
to apply after an overlay; deploy/crds/ holds the chart's crds/; docs/helm.md lists every value of
values.schema.json with its default.
tests/e2e/test_helm.py fails when these files and the chart disagree.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts/audit-webhook"
DEPLOY = ROOT / "deploy"
# Only the chart's monitoring template: the rest of the chart is an overlay's.
MONITORING = DEPLOY / "monitoring"
MONITORING_TEMPLATES = frozenset({"monitoring.yaml"})
HELM = ROOT / ".e2e-bin/helm"
RELEASE = "audit-webhook"
NAMESPACE = "audit-webhook"
HEADER = ("# Rendered from charts/audit-webhook by deploy/render.py (`make manifests`) with values.yaml\n"
          "# beside this file: change those, never this file.\n")
DOCS = ROOT / "docs/helm.md"
TABLE_BEGIN = "<!-- values table: rendered by deploy/render.py from values.schema.json and values.yaml -->\n"
TABLE_END = "<!-- end of values table -->\n"
_SOURCE = re.compile(r"^# Source: [^/\n]+/templates/(?P<file>[^\n]+)\n", re.MULTILINE)


def split_by_template(rendered: str) -> dict[str, list[str]]:
    """`helm template` output as {template file: its documents, in output order}, without Helm's
    `# Source:` lines; templates that rendered nothing are absent."""
    files: dict[str, list[str]] = {}
    for document in re.split(r"^---\n", rendered, flags=re.MULTILINE):
        source = _SOURCE.search(document)
        body = _SOURCE.sub("", document).strip("\n")
        if source and body and not all(line.startswith("#") for line in body.splitlines()):
            files.setdefault(source["file"], []).append(body + "\n")
    return files


def overlay_files(rendered: str, only: frozenset[str] | None = None) -> dict[str, str]:
    """The files of one overlay folder, kustomization.yaml included, from `helm template` output
    (of the templates `only` names, if given)."""
    files = {name: HEADER + "---\n".join(docs) for name, docs in sorted(split_by_template(rendered).items())
             if only is None or name in only}
    resources = "".join(f"  - {name}\n" for name in files)
    files["kustomization.yaml"] = (HEADER + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                                   f"resources:\n{resources}")
    return files


def values_rows(schema: dict[str, Any], defaults: Any, path: str = "") -> list[str]:
    """One Markdown table row per value: an object whose every property is described is walked,
    any other object (resources, an issuerRef, a map) is one value."""
    properties = schema.get("properties") or {}
    if properties and all("description" in sub for sub in properties.values()):
        return [row for key, sub in schema["properties"].items() if key != "global"
                for row in values_rows(sub, (defaults or {}).get(key), f"{path}.{key}" if path else key)]
    kind = schema.get("type") or "/".join(sorted({s.get("type", "?") for s in schema.get("anyOf", [])}))
    allowed = " ".join(f"`{v}`" if v else '`""`' for v in schema.get("enum", []))
    default = f"`{json.dumps(defaults, separators=(', ', ': '))}`" if defaults is not None else ""
    text = schema.get("description", "").replace("<", "&lt;") + (f" (one of {allowed})" if allowed else "")
    return [f"| `{path}` | {kind} | {default} | {text} |"]


def values_table() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return "| value | type | default | meaning |\n|---|---|---|---|\n" + "".join(
        row + "\n" for row in values_rows(schema, defaults))


def with_values_table(doc: str) -> str:
    """docs/helm.md with its values table rendered anew (between the two markers)."""
    start, end = doc.index(TABLE_BEGIN) + len(TABLE_BEGIN), doc.index(TABLE_END)
    return doc[:start] + values_table() + doc[end:]


def helm_template(values: Path, helm: Path = HELM) -> str:
    result = subprocess.run([str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(values)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"helm template -f {values.relative_to(ROOT)} failed:\n{result.stderr}")
    return result.stdout


def _generated_folders() -> list[tuple[Path, frozenset[str] | None]]:
    """Each folder rendered from the chart with its values.yaml, and the templates it keeps (None: all)."""
    return [*((values.parent, None) for values in sorted((DEPLOY / "overlays").glob("*/values.yaml"))),
            (MONITORING, MONITORING_TEMPLATES)]


def expected(helm: Path = HELM) -> dict[Path, str]:
    """Every generated file and its content (each folder's values.yaml is its input)."""
    out: dict[Path, str] = {}
    for folder, only in _generated_folders():
        for name, text in overlay_files(helm_template(folder / "values.yaml", helm), only).items():
            out[folder / name] = text
    for crd in sorted((CHART / "crds").glob("*.yaml")):
        out[DEPLOY / "crds" / crd.name] = crd.read_text()
    out[DOCS] = with_values_table(DOCS.read_text())
    return out


def stale(files: dict[Path, str]) -> list[Path]:
    """Generated files on disk that are missing, differ, or are no longer rendered."""
    wrong = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    present = {p for folder, _ in _generated_folders() for p in folder.iterdir() if p.name != "values.yaml"}
    return sorted(wrong + [p for p in present if p not in files])


def main() -> int:
    files = expected()
    for path in stale(files):
        if path in files:
            path.write_text(files[path])
        else:
            path.unlink()
        print(f"wrote {path.relative_to(ROOT)}" if path in files else f"removed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
