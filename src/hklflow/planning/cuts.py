"""The cuts the config asks for (output.cuts): per sample, lines and planes made of one of
its volumes at every temperature (rule cut, `hklflow cut`), checked when the config is read,
and the command line each job runs.  Light: the standard library alone (the Snakefile
plans with it)."""
from __future__ import annotations

from ..base.errors import ConfigError

# the spec's keys -> hklflow cut's options (the directions are spelled apart)
_NUMBERS = {"length": "--length", "range": "--range", "range_u": "--range-u",
            "range_v": "--range-v", "step": "--step", "width": "--width"}


# cut names that would name an entry's files (results/S/T/cuts/mask.png: an entry 'cuts')
_ENTRY_FILES = frozenset({"scan", "peaks", "mask", "transform", "masked_transform"})


def default_volume(exp) -> str:
    """The volume a cut is made of when its spec names none: the symmetrised transform
    (the diffuse scattering with its Bragg peaks), or the nearest the config makes."""
    kinds = exp.reduction["transform"]["kinds"]
    kind = "transform" if "transform" in kinds else kinds[0]
    return f"{kind}_symmetrized" if exp.reduction["merge"]["symmetrize"] else kind


def cuts_of(exp) -> dict[str, list[dict]]:
    """sample -> its cuts (output.cuts), each with its volume resolved."""
    return {sample: [{**spec, "volume": spec.get("volume") or default_volume(exp)}
                     for spec in specs]
            for sample, specs in exp.raw["output"].get("cuts", {}).items()}


def cut_spec(exp, sample: str, name: str) -> dict:
    for spec in cuts_of(exp).get(sample, []):
        if spec["name"] == name:
            return spec
    raise KeyError(f"no cut {name!r} of sample {sample!r} in output.cuts")


def is_line(spec: dict) -> bool:
    return spec.get("line") is not None


def _vector(v) -> str:
    return " ".join(f"{float(x):g}" for x in v)


def cut_arguments(spec: dict) -> list[str]:
    """The options of `hklflow cut` that make the cut of a spec (its volume and files apart)."""
    if is_line(spec):
        args = ["--line", _vector(spec["line"])]
    elif spec.get("plane") is not None:
        args = ["--plane", *(_vector(d) for d in spec["plane"])]
    else:
        args = ["--normal", _vector(spec["normal"])]
    args += ["--origin", _vector(spec.get("origin") or (0, 0, 0))]
    for key, option in _NUMBERS.items():
        value = spec.get(key)
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        args += [option, *(f"{float(x):g}" for x in values)]
    return args


def check_cuts(exp, made: list[str]) -> None:
    """ConfigError naming the field of output.cuts that cannot make a cut: a sample not in
    the config, two cuts of one name or an entry file's, not exactly one of line, plane and
    normal, options of
    the other kind of cut, a zero direction, a volume the config does not make (`made`)."""
    where = " + ".join(exp.sources)
    for sample, specs in exp.raw["output"].get("cuts", {}).items():
        field = f"output.cuts.{sample}"
        if sample not in exp.samples:
            raise ConfigError(f"{where}: field '{field}': no sample {sample!r} in samples "
                              f"(expected one of {sorted(exp.samples)})")
        seen = set()
        for i, spec in enumerate(specs):
            at = f"{where}: field '{field}.{i}'"
            if spec["name"] in seen:
                raise ConfigError(f"{at}: a second cut named {spec['name']!r} (each cut of a "
                                  "sample needs a name of its own: its files are named by it)")
            seen.add(spec["name"])
            if spec["name"] in _ENTRY_FILES:
                raise ConfigError(f"{at}.name: {spec['name']!r} names a scan entry's file "
                                  f"(its files would be those of an entry 'cuts'): expected "
                                  f"another name than {sorted(_ENTRY_FILES)}")
            given = [k for k in ("line", "plane", "normal") if spec.get(k) is not None]
            if len(given) != 1:
                raise ConfigError(f"{at}: expected exactly one of line, plane and normal, got "
                                  f"{given or 'none'}")
            vectors = spec["plane"] if given == ["plane"] else [spec[given[0]]]
            if any(not any(float(x) for x in v) for v in vectors):
                raise ConfigError(f"{at}.{given[0]}: a direction is the zero vector")
            if is_line(spec):
                wrong = [k for k in ("range_u", "range_v") if spec.get(k) is not None]
                if spec.get("length") is not None and spec.get("range") is not None:
                    wrong = ["length and range (give one)"]
            else:
                wrong = [k for k in ("length", "range") if spec.get(k) is not None]
                if (spec.get("range_u") is None) != (spec.get("range_v") is None):
                    wrong = ["range_u without range_v, or range_v without range_u"]
            if wrong:
                raise ConfigError(f"{at}: {', '.join(wrong)} not for a "
                                  f"{'line' if is_line(spec) else 'plane'}: a line takes "
                                  "length or range, a plane range_u and range_v")
            directions = 1 if is_line(spec) else 2
            if spec.get("step") is not None and len(spec["step"]) not in (1, directions):
                raise ConfigError(f"{at}.step: one value, or one per direction ({directions})")
            volume = spec.get("volume") or default_volume(exp)
            if volume not in made:
                raise ConfigError(f"{at}.volume: {volume} is not made by this config "
                                  f"(expected one of {made})")
