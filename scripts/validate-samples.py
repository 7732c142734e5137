"""Validates NatsCluster manifests against the openAPIV3Schema of the generated CRD.

The API server prunes or rejects what the schema does not allow, and `kubectl apply`
rejects unknown fields (strict field validation), so a sample that does not match the
schema would fail for users. The schema is OpenAPI v3 with Kubernetes extensions; as JSON
Schema it needs two adjustments: unknown fields are errors where the schema does not
preserve them, and `nullable: true` admits null.

usage: validate-samples.py CRD.yaml MANIFEST.yaml...
"""

from __future__ import annotations

import sys

import jsonschema
import yaml


def strict(schema: dict) -> dict:
    """The schema with Kubernetes' rules made explicit for a JSON Schema validator."""
    schema = dict(schema)
    if schema.get("nullable"):
        kind = schema.get("type")
        if isinstance(kind, str):
            schema["type"] = [kind, "null"]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    for key in ("properties", "patternProperties"):
        if key in schema:
            schema[key] = {k: strict(v) for k, v in schema[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(s) for s in schema[key]]
    return schema


def main(crd_path: str, manifests: list[str]) -> int:
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    validators = {}
    for version in crd["spec"]["versions"]:
        root = strict(version["schema"]["openAPIV3Schema"])
        # Every object has these; the API server, not the CRD schema, validates them.
        root["properties"] = {"apiVersion": {}, "kind": {}, "metadata": {}, **root["properties"]}
        validators[f"{group}/{version['name']}"] = jsonschema.Draft7Validator(root)
    failures = checked = 0
    for path in manifests:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != kind:
                    continue
                validator = validators.get(doc.get("apiVersion"))
                name = f"{path}: {kind} {doc.get('metadata', {}).get('name')}"
                if validator is None:
                    print(f"{name}: apiVersion {doc.get('apiVersion')} is not served by the CRD")
                    failures += 1
                    continue
                errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
                for error in errors:
                    print(f"{name}: {'.'.join(map(str, error.path)) or '<root>'}: {error.message}")
                failures += bool(errors)
                checked += 1
    if checked == 0:
        print("no NatsCluster found in the manifests")
        return 1
    print(f"validate-samples: {checked} NatsCluster manifests checked, {failures} invalid")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
