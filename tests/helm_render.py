#!/usr/bin/env python3
"""Lint and render a Helm chart with the real Helm engine (PyPI helm-python-sdk, Helm v4's
library; no helm binary). Used by tests/tests/helm_chart.rs.

stdin:  {"chart": PATH, "values": {...}, "name": RELEASE, "namespace": NS}
stdout: {"lint": {...helm_python.lint report...},
         "manifests": {template path: rendered text},
         "crds": [{"name", "filename", "data"}]}
exit 3: helm_python cannot be imported (the test then skips, saying why);
exit 1: lint/render raised (message on stderr).
"""

import json
import sys


def main() -> int:
    try:
        import helm_python
    except Exception as e:  # noqa: BLE001 - any import failure means "no engine here"
        print(f"cannot import helm_python: {e!r}", file=sys.stderr)
        return 3
    req = json.load(sys.stdin)
    path = req["chart"]
    values = req.get("values") or {}
    try:
        lint = helm_python.lint(path, values, namespace=req.get("namespace"), strict=False)
        with helm_python.Chart.load(path) as chart:
            manifests = chart.render(
                values, name=req.get("name"), namespace=req.get("namespace"), is_install=True
            )
            crds = chart.crds
    except helm_python.HelmError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump({"lint": lint, "manifests": manifests, "crds": crds}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
