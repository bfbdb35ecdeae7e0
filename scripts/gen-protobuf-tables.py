#!/usr/bin/env python3
"""Generate apiserver/src/protobuf/generated.rs: the protobuf field tables of the built-in
kinds the API server answers in protobuf (`application/vnd.kubernetes.protobuf`).

Field numbers and types come from the prost code of the `k8s-pb` crate (generated from
Kubernetes' own `generated.proto` files); each field's JSON name comes from `k8s-openapi`
(its serde field names), so the tables cannot drift from either. A protobuf field with no
JSON name in k8s-openapi is a Go struct embedded inline (`VolumeSource` in `Volume`,
`ProbeHandler` in `Probe`). Usage (after `cargo fetch` has both crates in the registry):

    python3 scripts/gen-protobuf-tables.py > apiserver/src/protobuf/generated.rs
"""
import glob
import os
import re
import sys

REG = os.path.expanduser("~/.cargo/registry/src")
PB = sorted(glob.glob(f"{REG}/*/k8s-pb-0.9.0/src"))[0]
OPENAPI = sorted(glob.glob(f"{REG}/*/k8s-openapi-0.29.0/src/v1_37"))[0]

# (module of k8s-pb, message, apiVersion, kind) answered in protobuf.
ROOTS = [
    ("api::core::v1", "Pod", "v1", "Pod"),
    ("api::core::v1", "Node", "v1", "Node"),
    ("api::core::v1", "ConfigMap", "v1", "ConfigMap"),
    ("api::core::v1", "Secret", "v1", "Secret"),
    ("api::core::v1", "Namespace", "v1", "Namespace"),
    ("api::core::v1", "Service", "v1", "Service"),
    ("api::core::v1", "ServiceAccount", "v1", "ServiceAccount"),
    ("api::core::v1", "Event", "v1", "Event"),
    ("api::core::v1", "Endpoints", "v1", "Endpoints"),
    ("api::core::v1", "PersistentVolumeClaim", "v1", "PersistentVolumeClaim"),
    ("api::core::v1", "PersistentVolume", "v1", "PersistentVolume"),
    ("api::core::v1", "ReplicationController", "v1", "ReplicationController"),
    ("api::coordination::v1", "Lease", "coordination.k8s.io/v1", "Lease"),
    ("api::apps::v1", "Deployment", "apps/v1", "Deployment"),
    ("api::apps::v1", "ReplicaSet", "apps/v1", "ReplicaSet"),
    ("api::apps::v1", "DaemonSet", "apps/v1", "DaemonSet"),
    ("api::apps::v1", "StatefulSet", "apps/v1", "StatefulSet"),
    ("api::batch::v1", "Job", "batch/v1", "Job"),
    ("api::batch::v1", "CronJob", "batch/v1", "CronJob"),
    ("api::discovery::v1", "EndpointSlice", "discovery.k8s.io/v1", "EndpointSlice"),
]

# Messages with a JSON form of their own.
SPECIAL = {
    ("apimachinery::pkg::apis::meta::v1", "Time"): "Ty::Time",
    ("apimachinery::pkg::apis::meta::v1", "MicroTime"): "Ty::MicroTime",
    ("apimachinery::pkg::api::resource", "Quantity"): "Ty::Quantity",
    ("apimachinery::pkg::util::intstr", "IntOrString"): "Ty::IntOrStr",
    ("apimachinery::pkg::apis::meta::v1", "FieldsV1"): "Ty::RawJson",
    ("apimachinery::pkg::runtime", "RawExtension"): "Ty::RawJson",
}

ATTR = re.compile(r'#\[prost\((.*)\)\]')
FIELD = re.compile(r'pub (r#)?(\w+): (.*),$')


def parse_pb():
    """{(module, struct): [(rust_name, kind, label, tag, type_text)]}"""
    out = {}
    for path in glob.glob(f"{PB}/**/mod.rs", recursive=True):
        module = os.path.relpath(os.path.dirname(path), PB).replace("/", "::")
        cur, attr, fields, pending = None, None, None, None
        for line in open(path):
            s = line.strip()
            if pending is not None:
                pending += " " + s
                if pending.endswith(",") and pending.count("<") == pending.count(">"):
                    s, pending = pending, None
                else:
                    continue
            m = re.match(r'pub struct (\w+) \{', s)
            if m:
                cur, fields = m.group(1), []
                if s.endswith("{}"):
                    out[(module, cur)], cur = fields, None
                continue
            if cur is None:
                continue
            if s == "}":
                out[(module, cur)] = fields
                cur = None
                continue
            m = ATTR.match(s)
            if m:
                attr = m.group(1)
                continue
            if attr and s.startswith("pub "):
                m = FIELD.match(s)
                if m is None or m.group(3).count("<") != m.group(3).count(">"):
                    pending = s
                    continue
                fields.append((m.group(2), attr, m.group(3), module))
                attr = None
    return out


def resolve(module, ty):
    """The (module, struct) a type path names, relative to `module`."""
    ty = ty.strip()
    for wrap in ("::core::option::Option<", "::prost::alloc::vec::Vec<"):
        if ty.startswith(wrap):
            ty = ty[len(wrap):-1]
    parts = ty.split("::")
    mod = module.split("::")
    while parts and parts[0] == "super":
        parts.pop(0)
        mod.pop()
    name = parts.pop()
    return ("::".join(mod + parts), name)


def norm(rust):
    """A Rust field name compared across the two crates' snake-casings (`target_ww_ns`,
    `target_wwns`; `type_`, `r#type`)."""
    return rust.replace("_", "").lower()


def openapi_names(module, struct):
    """{norm(rust field): json} from k8s-openapi's struct of that module and name."""
    want = struct.lower()
    for path in glob.glob(f"{OPENAPI}/{module.replace('::', '/')}/*.rs"):
        if os.path.basename(path).replace("_", "")[:-3] != want:
            continue
        text = open(path).read()
        pairs = re.findall(r'"([\w$-]+)" => Field::Key_(\w+),', text)
        if pairs:
            return {norm(rust): js for js, rust in pairs}
    return None


def main():
    pb = parse_pb()
    consts = {}
    order = []

    def const_name(module, name):
        short = module.replace("apimachinery::pkg::apis::", "").replace("api::", "")
        return ("M_" + short.replace("::", "_") + "_" + re.sub(r'(?<!^)(?=[A-Z])', '_', name)).upper()

    def emit(module, name, stack=(), names=None):
        key = (module, name)
        if key in consts:
            return consts[key]
        if key in stack:
            raise SystemExit(f"recursive message {key}")
        cname = const_name(module, name)
        consts[key] = cname
        fields = pb.get(key)
        if fields is None:
            raise SystemExit(f"no message {key}")
        names = names or openapi_names(module, name)
        if names is None:
            # a message of k8s-pb's Kubernetes that k8s-openapi's no longer has
            print(f"skipped: no k8s-openapi struct for {key}", file=sys.stderr)
            del consts[key]
            return None
        rows = []
        for rust, attr, ty, fmod in fields:
            tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
            repeated = ", repeated" in attr
            js = names.get(norm(rust))
            if attr.startswith("btree_map"):
                kv = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
                if kv == "string":
                    t = "Ty::MapStr"
                elif kv == "bytes":
                    t = "Ty::MapBytes"
                elif kv == "message":
                    val = re.search(r'BTreeMap<\s*::prost::alloc::string::String,\s*(.*)>', ty)
                    target = resolve(fmod, val.group(1).strip().rstrip(","))
                    if SPECIAL.get(target) != "Ty::Quantity":
                        raise SystemExit(f"map of {target} in {key}")
                    t = "Ty::MapQuantity"
                else:
                    raise SystemExit(f"map {attr} in {key}")
            else:
                scalar = attr.split(",")[0].strip()
                if scalar == "string":
                    t = "Ty::Str"
                elif scalar in ("int32", "int64", "uint32", "uint64"):
                    t = "Ty::Int"
                elif scalar == "bool":
                    t = "Ty::Bool"
                elif scalar == "bytes":
                    t = "Ty::Bytes"
                elif scalar == "double":
                    t = "Ty::Double"
                elif scalar == "message":
                    target = resolve(fmod, ty)
                    if target in SPECIAL:
                        t = SPECIAL[target]
                    else:
                        # embedded inline (no JSON name): its fields are the outer struct's
                        sub = emit(target[0], target[1], stack + (key,), None if js else names)
                        if sub is None:
                            continue
                        t = f"Ty::Opt({sub})" if js is not None else f"Ty::Inline({sub})"
                else:
                    raise SystemExit(f"type {attr} in {key}")
            if js is None:
                if not t.startswith("Ty::Inline"):
                    print(f"skipped: {key}.{rust}, not in k8s-openapi", file=sys.stderr)
                    continue
                js = ""
            fn = "rep" if repeated else "f"
            rows.append(f'    {fn}({tag}, "{js}", {t}),')
        if not rows:
            # an "inline" message none of whose fields the outer struct has: a field of
            # k8s-pb's Kubernetes that k8s-openapi's does not know
            print(f"skipped: {key}, no field known to k8s-openapi", file=sys.stderr)
            del consts[key]
            return None
        order.append((cname, rows))
        return cname

    roots = []
    for module, name, api_version, kind in ROOTS:
        roots.append((api_version, kind, emit(module, name)))
    print("//! Generated by `scripts/gen-protobuf-tables.py` from the `k8s-pb` 0.9.0 (field numbers and")
    print("//! types) and `k8s-openapi` 0.29.0 (JSON names) crates. Do not edit; regenerate.")
    print()
    print("use super::{F, Ty, f, rep};")
    print()
    print("/// The message of each kind answered in protobuf: (apiVersion, kind, fields).")
    print("pub(super) const KINDS: &[(&str, &str, &[F])] = &[")
    for api_version, kind, cname in roots:
        print(f'    ("{api_version}", "{kind}", {cname}),')
    print("];")
    for cname, rows in order:
        print()
        print(f"const {cname}: &[F] = &[")
        for r in rows:
            print(r)
        print("];")


main()
