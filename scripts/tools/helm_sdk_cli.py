"""The few `helm` commands this repository's checks need, over helm-python-sdk.

helm-python-sdk binds Helm's Go SDK (libhelm_c) and ships no executable, while
`helm lint`, `helm template` and checkov's helm framework expect one. This file gives them
the same command lines and output shape (`# Source:` headers, manifests in Helm's install
order), offline: no cluster, no repository, no dependency download.

Commands: version | lint [--strict] [-f values]... CHART |
template [NAME] CHART [-n NS] [-f values]... [--set k=v]... [--include-crds] |
dependency list CHART
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import helm_python as helm

# Helm's install order (pkg/release/util/kind_sorter.go), so output reads like helm's.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "ConfigMap", "StorageClass",
    "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
    "ClusterRoleBinding", "Role", "RoleBinding", "Service", "DaemonSet", "Pod",
    "ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler",
    "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
]
KIND = re.compile(r"^kind:\s*(\S+)", re.MULTILINE)
DOC_SEPARATOR = re.compile(r"^---\s*$", re.MULTILINE)


def load_values(files: list[str], sets: list[str], set_strings: list[str]) -> dict:
    values: dict = {}
    for path in files:
        merge(values, helm.values_from_yaml(Path(path).read_text()))
    for expression in sets:
        merge(values, helm.parse_set_string(expression))
    for expression in set_strings:
        merge(values, helm.parse_set_string_values(expression))
    return values


def merge(into: dict, other: dict) -> None:
    """Later values win, maps merge key by key: how helm layers -f and --set."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def order(kind: str | None) -> int:
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def template(args: argparse.Namespace) -> int:
    chart = helm.Chart.load(args.chart)
    if chart.dependencies:
        # Fetching dependencies needs the network; this chart has none by design.
        print(f"Error: {args.chart} has dependencies, which this offline helm cannot fetch",
              file=sys.stderr)
        return 1
    values = load_values(args.values, args.set, args.set_string)
    rendered = chart.render(values, name=args.name, namespace=args.namespace,
                            is_install=True)
    documents = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt") or Path(path).name.startswith("_"):
            continue
        for doc in DOC_SEPARATOR.split(text):
            if doc.strip() and not all(
                line.strip().startswith("#") or not line.strip() for line in doc.splitlines()
            ):
                match = KIND.search(doc)
                documents.append((order(match and match.group(1)), path, doc.strip("\n")))
    out = []
    if args.include_crds:
        for crd in chart.crds:
            out.append(f"---\n# Source: {chart.name}/{crd['name']}\n{crd['data'].strip()}\n")
    # Stable: equal kinds keep template file order, as helm does.
    for _, path, doc in sorted(documents, key=lambda d: (d[0], d[1])):
        out.append(f"---\n# Source: {path}\n{doc}\n")
    sys.stdout.write("".join(out))
    return 0


def lint(args: argparse.Namespace) -> int:
    values = load_values(args.values, args.set, [])
    report = helm.lint(args.chart, values or None, strict=args.strict)
    names = {1: "INFO", 2: "WARNING", 3: "ERROR"}
    print(f"==> Linting {args.chart}")
    failed = bool(report.get("errors"))
    for message in report.get("messages", []):
        severity = message.get("severity", 0)
        print(f"[{names.get(severity, 'UNKNOWN')}] {message.get('path')}: {message.get('error')}")
        failed |= severity >= 3 or (args.strict and severity >= 2)
    for error in report.get("errors", []):
        print(f"Error: {error}")
    print(f"\n1 chart(s) linted, {1 if failed else 0} chart(s) failed")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="helm")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("version")

    p = commands.add_parser("template")
    p.add_argument("positional", nargs="+", metavar="[NAME] CHART")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-f", "--values", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--set-string", action="append", default=[])
    p.add_argument("--include-crds", action="store_true")
    p.add_argument("--dependency-update", action="store_true",
                   help="accepted for checkov; charts with dependencies are refused")

    p = commands.add_parser("lint")
    p.add_argument("chart")
    p.add_argument("--strict", action="store_true")
    p.add_argument("-f", "--values", action="append", default=[])
    p.add_argument("--set", action="append", default=[])

    p = commands.add_parser("dependency")
    p.add_argument("action", choices=["list"])
    p.add_argument("chart")

    args = parser.parse_args()
    try:
        if args.command == "version":
            # checkov reads the version between `Version:"` and the first comma.
            print(f'version.BuildInfo{{Version:"{helm.helm_sdk_version()}", '
                  f'GitCommit:"", GitTreeState:"", GoVersion:"libhelm_c {helm.helm_c_version()}"}}')
            return 0
        if args.command == "template":
            if len(args.positional) > 2:
                parser.error("template takes [NAME] CHART")
            args.name, args.chart = (["release-name"] + args.positional)[-2:]
            return template(args)
        if args.command == "lint":
            return lint(args)
        # dependency list: the chart has none; print helm's header only.
        print("NAME\tVERSION\tREPOSITORY\tSTATUS")
        return 0
    except helm.HelmError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
