"""Render a kustomization the way ``kustomize build`` does, for the subset of kustomize that deploy/k8s uses.

CI has no kubectl or kustomize, so the tests render the overlays with this and validate what comes out. It is an
honest subset, not a reimplementation: a kustomization field it does not know is an error, never silently ignored.

Supported:

* ``resources``: YAML files (several documents each) and directories holding a ``kustomization.yaml``, in order;
* ``patches`` (and the older ``patchesStrategicMerge``): strategic-merge patches from ``path`` (or inline
  ``patch``), applied to the object of the patch's kind and name (or ``target: {kind, name}``). Maps merge
  recursively, ``key: null`` deletes a key, lists of maps merge by the Kubernetes merge key of their field
  (containers, initContainers, volumes, env, imagePullSecrets by ``name``; volumeMounts by ``mountPath``; ports by
  ``containerPort``, or ``port`` in a Service), an element with ``$patch: delete`` removes its match, any other
  list is replaced;
* ``namespace``: set on every object (kustomize sets it on namespaced objects; all of ours are);
* ``images``: ``name`` -> ``newName`` / ``newTag`` / ``digest`` in containers and initContainers.

Not supported (an error): ``namePrefix``/``nameSuffix`` (they rename references too), ``commonLabels``/``labels``
(they rewrite selectors), generators, JSON 6902 patches, replacements, components, helm charts.

    python deploy/render.py deploy/k8s/overlays/cpu > cpu.yaml      # same objects as `kustomize build`
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "patches", "patchesStrategicMerge", "namespace", "images"}
# Kubernetes' patchMergeKey of the list fields these manifests use.
MERGE_KEYS = {
    "containers": ("name",),
    "initContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "ports": ("containerPort", "port"),
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "APIService"}


class RenderError(ValueError):
    """The kustomization uses something this renderer does not support, or a patch matches nothing."""


Obj = dict[str, Any]


def load_documents(path: Path) -> list[Obj]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise RenderError(f"{path}: every document must be a Kubernetes object (apiVersion, kind)")
    return docs


def _merge_key(field: str, items: list[Any]) -> str | None:
    for key in MERGE_KEYS.get(field, ()):
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge of ``patch`` into ``base`` (both left untouched); see the module docstring."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value, key)
            else:
                out[key] = _strip(copy.deepcopy(value))
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = _merge_key(field, [*base, *patch])
        if key is None:
            return _strip(copy.deepcopy(patch))
        out_list = copy.deepcopy(base)
        for item in patch:
            index = next((i for i, b in enumerate(out_list) if b.get(key) == item.get(key)), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    del out_list[index]
            elif index is None:
                out_list.append(_strip(copy.deepcopy(item)))
            else:
                out_list[index] = merge(out_list[index], item, field)
        return out_list
    return _strip(copy.deepcopy(patch))


def _strip(value: Any) -> Any:
    """Drop patch directives from values that are added rather than merged."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "$patch"}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def _same(obj: Obj, kind: str, name: str) -> bool:
    return bool(obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name)


def _apply_patch(objects: list[Obj], patch: Obj, target: dict[str, str] | None, where: str) -> None:
    kind = (target or {}).get("kind") or patch.get("kind")
    name = (target or {}).get("name") or patch.get("metadata", {}).get("name")
    if not kind or not name:
        raise RenderError(f"{where}: a patch needs a kind and a name (in the patch or its target)")
    hits = [i for i, o in enumerate(objects) if _same(o, kind, name)]
    if not hits:
        raise RenderError(f"{where}: the patch matches no object ({kind}/{name})")
    for i in hits:
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
        objects[i] = merge(objects[i], body)


def _set_images(objects: list[Obj], images: Sequence[dict[str, str]]) -> None:
    def retag(image: str, rule: dict[str, str]) -> str | None:
        name, sep, tag = image.partition("@") if "@" in image else image.rpartition(":")
        if not sep or "/" in tag:  # "host:5000/name" has no tag
            name, tag = image, ""
        if name != rule["name"]:
            return None
        new = rule.get("newName", name)
        if rule.get("digest"):
            return f"{new}@{rule['digest']}"
        new_tag = rule.get("newTag", tag)
        return f"{new}:{new_tag}" if new_tag else new

    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for field in ("initContainers", "containers"):
            for container in pod.get(field, []):
                for rule in images:
                    changed = retag(container.get("image", ""), rule)
                    if changed is not None:
                        container["image"] = changed


def render(directory: str | Path) -> list[Obj]:
    """The objects of the kustomization in ``directory`` (its ``kustomization.yaml``), patched, in order."""
    directory = Path(directory)
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise RenderError(f"{directory} has no kustomization.yaml")
    with open(path) as f:
        kust = yaml.safe_load(f) or {}
    unknown = set(kust) - SUPPORTED
    if unknown:
        raise RenderError(f"{path}: unsupported kustomization fields {sorted(unknown)} (see deploy/render.py)")
    objects: list[Obj] = []
    for entry in kust.get("resources", []):
        res = (directory / entry).resolve()
        objects += render(res) if res.is_dir() else load_documents(res)
    patches = [{"path": p} for p in kust.get("patchesStrategicMerge", [])] + list(kust.get("patches", []))
    for p in patches:
        if "path" in p:
            where = str(directory / p["path"])
            bodies = load_documents(directory / p["path"])
        elif "patch" in p:
            where, bodies = f"{path} (inline patch)", [yaml.safe_load(p["patch"])]
        else:
            raise RenderError(f"{path}: a patch needs a path or an inline patch")
        if set(p.get("target", {})) - {"kind", "name"}:
            raise RenderError(f"{where}: only kind and name targets are supported")
        for body in bodies:
            if "op" in body or isinstance(body, list):
                raise RenderError(f"{where}: JSON 6902 patches are not supported")
            _apply_patch(objects, body, p.get("target"), where)
    if "namespace" in kust:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = kust["namespace"]
    if "images" in kust:
        _set_images(objects, kust["images"])
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        ident = (obj["kind"], obj.get("metadata", {}).get("namespace", ""), obj.get("metadata", {}).get("name", ""))
        if ident in seen:
            raise RenderError(f"{path}: {ident} is defined twice")
        seen.add(ident)
    return objects


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    try:
        objects = render(args[0])
    except RenderError as e:
        print(f"render: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
