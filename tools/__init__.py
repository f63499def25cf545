"""Command-line tools that run beside the Pulumi program: offline render and post-deploy verify.

They need the project's virtualenv (`make install`). Started from any other Python, they stop here with
one line that says so and a non-zero exit, not an ImportError traceback halfway into a render.
"""

import importlib.util
import sys

# One package per layer the tools stand on: the Pulumi SDKs, the config model, the stack file reader
# and the Kubernetes schemas.
REQUIRED = ("pulumi", "pulumi_aws", "pulumi_kubernetes", "pydantic", "ruamel.yaml", "kubernetes")


def _missing() -> list[str]:
    absent = []
    for name in REQUIRED:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a dotted name whose parent is absent
            found = False
        if not found:
            absent.append(name)
    return absent


if _missing():
    sys.stderr.write(
        f"{sys.executable} lacks {', '.join(_missing())}: run `make install`, then use venv/bin/python "
        "(or the make targets)\n"
    )
    raise SystemExit(1)
