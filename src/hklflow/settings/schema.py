"""The config schema (``schemas/config.schema.yaml``; ``schemas/scans.schema.yaml`` for a row
of the scans table), the one source of defaults and documentation of every user setting:
read, validated with its defaults filled in, numbers in one form, the sub-schema and the
default of a config key.

Imported when the Snakefile is parsed and by every step (through
:mod:`hklflow.settings.params`): yaml and jsonschema are loaded only when a schema is read
or a value validated, which a job's process does not do.
"""
from __future__ import annotations

import copy
import functools
from importlib import resources


@functools.lru_cache(maxsize=4)
def schema(name: str = "config.schema.yaml") -> dict:
    import yaml  # (here: a step's process never reads the schema)

    return yaml.safe_load(resources.files("hklflow.settings.schemas").joinpath(name).read_text())


def schema_path(name: str = "config.schema.yaml") -> str:
    """Where the schema file is in this installation (the source tree's in an editable
    install, site-packages' from a wheel): what a user can open."""
    return str(resources.files("hklflow.settings.schemas").joinpath(name))


def validator_with_defaults(schema_: dict):
    """A Draft 2020-12 validator that also fills in `default` values (as Snakemake's
    validate(set_default=True) does)."""
    import jsonschema  # (here: slow to import, and a step's process validates nothing)

    base = jsonschema.Draft202012Validator
    validate_props = base.VALIDATORS["properties"]
    validate_items = base.VALIDATORS["items"]

    def set_defaults(validator, properties, instance, sub_schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, sub_schema)
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if prop in instance:
                    instance[prop] = canonical_number(instance[prop], sub)

    def canonical_items(validator, items, instance, sub_schema):
        yield from validate_items(validator, items, instance, sub_schema)
        if isinstance(instance, list) and isinstance(items, dict):
            instance[:] = [canonical_number(v, items) for v in instance]

    return jsonschema.validators.extend(
        base, {"properties": set_defaults, "items": canonical_items})(schema_)


def canonical_number(value, sub_schema: dict):
    """A number as its schema's type has it, so that one value has one form in the settings
    that reach the jobs (3 and 3.0 must not rerun anything): an integer where the schema says
    number becomes a float, a float with no fraction where it says integer an int, and a
    member of an enum the enum's own form."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    for member in sub_schema.get("enum", ()):  # (the enum's own form: 3 for 3.0)
        if isinstance(member, (int, float)) and not isinstance(member, bool) \
                and member == value:
            return member
    types = sub_schema.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if isinstance(value, int) and "number" in types and "integer" not in types:
        return float(value)
    if isinstance(value, float) and "integer" in types and "number" not in types \
            and value.is_integer():
        return int(value)
    return value


def schema_node(path: str, name: str = "config.schema.yaml") -> dict:
    """The sub-schema of a dotted config path (e.g. 'reduction.find_peaks.window'; of a
    scans-table column in the scans schema)."""
    node = schema(name)
    for part in path.split("."):
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            raise KeyError(f"no config key {path!r} in the schema")
    return node


def schema_problem(node: dict, value) -> str | None:
    """What the sub-schema `node` finds wrong with `value` (jsonschema's best match), or None."""
    import jsonschema  # (here: only settings typed by hand are checked in a step's process)

    found = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(node).iter_errors(value))
    return None if found is None else found.message


NO_DEFAULT = object()


def schema_default(path: str):
    """The schema's default of a config key (objects: their members' defaults filled in)."""
    node = schema_node(path)
    if "default" in node:
        value = copy.deepcopy(node["default"])
    elif node.get("type") == "object":
        value = {}
    else:
        return NO_DEFAULT
    if isinstance(value, dict) and node.get("type") == "object":
        value = copy.deepcopy(value)
        for _ in validator_with_defaults(node).iter_errors(value):
            pass  # only the defaults are wanted here
    return value


def config_value(cfg: dict, path: str):
    node = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node
