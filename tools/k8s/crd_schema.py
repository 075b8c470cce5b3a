"""Extracts the OpenAPI v3 schema of one version of a CustomResourceDefinition as JSON, without its
descriptions (they are most of the bytes and validate nothing), for tests/test_gateway.py.

    python3 tools/k8s/crd_schema.py CRD.yaml VERSION > tests/fixtures/crds/KIND-VERSION.schema.json

The committed schemas, their upstream release and file are listed in tests/fixtures/crds/README.md.
"""

from __future__ import annotations

import json
import sys

import yaml


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def main(path: str, version: str) -> None:
    with open(path) as f:
        crd = yaml.safe_load(f)
    if crd.get("kind") != "CustomResourceDefinition":
        sys.exit(f"{path}: not a CustomResourceDefinition (kind {crd.get('kind')!r})")
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    if version not in versions:
        sys.exit(f"{path}: no version {version!r}; it has {', '.join(versions)}")
    out = {
        "group": crd["spec"]["group"],
        "kind": crd["spec"]["names"]["kind"],
        "version": version,
        "bundle_version": crd["metadata"].get("annotations", {}).get("gateway.networking.k8s.io/bundle-version")
        or crd["metadata"].get("annotations", {}).get("inference.networking.k8s.io/bundle-version"),
        "schema": strip_descriptions(versions[version]["schema"]["openAPIV3Schema"]),
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
