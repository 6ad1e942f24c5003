"""Key Secrets that an in-cluster operator creates, seen through the resource that asks for them.

With keyfence's operator delivery modes the key Secret itself is never in the stack: a
``VaultStaticSecret`` (Vault Secrets Operator) or an ``ExternalSecret`` (External Secrets
Operator) tells the operator to create it, with the labels and annotations given there. The
pack reads those as the Secret's own, so a workload mounting it is judged exactly as one
mounting a Secret declared in the stack (key-bearing-ness, identity, subaccount, permissions).
"""

from __future__ import annotations

from .props import Node


def destination(props: Node, kind: str) -> tuple[str | None, Node]:
    """The name of the Secret a delivery resource writes and the node holding its metadata.

    VSO: ``spec.destination.{name,labels,annotations}``. ESO: ``spec.target.name`` (default: the
    ExternalSecret's own name) and ``spec.target.template.metadata.{labels,annotations}``.
    """
    spec = props.get("spec")
    if kind == "VaultStaticSecret":
        node = spec.get("destination")
        return node.get("name").text(), node
    target = spec.get("target")
    name = target.get("name").text()
    if name is None and target.get("name").absent:
        name = props.dig("metadata", "name").text()
    return name, target.dig("template", "metadata")
