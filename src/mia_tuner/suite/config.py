"""A suite: the matrix a study runs, read from YAML into typed dataclasses.

    name: offline
    models: [smollm2-135m-instruct, gemma-3-270m]
    datasets:                            # set names (mia_tuner.sets), paths or hub ids;
      - controlled:{model}:600           # {model} is the cell's model
      - {set: wikimia24:debiased, group_by: event, test_per_class: 100}
    methods: [all]                       # score-based methods, fused, blind (registry names)
    method_settings: {recall_shots: 10}  # MethodConfig fields
    seeds: [42]
    train_per_class: [80]                # ablation axis: training texts per class
    test_per_class: 100
    tuner:                               # MIA-Tuner variants: a tag, a preset, TunerConfig fields
      - {tag: default}
      - {tag: lora, peft: lora, learning_rate: 1.0e-4}
    safeguards:                          # DefenceConfig fields; `tag` names the row; `datasets`
      - {tag: scores, against: scores, datasets: ["controlled:{model}:600"]}  # (optional) limits

Every key is checked: an unknown one is an error naming the keys allowed, so a typo never
runs a different study silently. The nested settings are built into ``MethodConfig``,
``TunerConfig`` and ``DefenceConfig`` here, so a wrong value fails before any model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar
from importlib import resources
from pathlib import Path

from ..config import DEFAULT_SEED, MethodConfig, ModelConfig, SplitConfig, same_as
from ..errors import ConfigError

SHIPPED = ("offline", "paper", "smoke")  # suites in mia_tuner/suites/*.yaml


@dataclass
class DatasetEntry:
    """One dataset axis value with its split settings."""

    set: str = field(metadata={"help": "a set name (wikimia24:32, controlled:{model}:600, ...), path or hub id"})
    split: str | None = field(default=None, metadata={"help": "split of a hub set or save_to_disk folder"})
    # these four: unset (None), the named set's recipe (mia_tuner.data.registry) decides
    test_per_class: int | None = field(default=None, metadata={
        "help": "held-out texts per class (default: the set's recipe, else the suite's)"})
    group_by: str | None = field(default=None, metadata={
        "help": "'event': an event's texts stay on one side (default: the set's recipe)"})
    train_fraction: float | None = field(default=None, metadata={
        "help": "share of each class on the train side where a class is too small to fill both parts "
                "(default: the set's recipe)"})
    paper_split: bool | None = field(default=None, metadata={
        "help": "always cut at the train fraction, as the official code (default: the set's recipe; "
                "WikiMIA(-24) by length: yes)"})
    optional: bool = field(default=False, metadata={
        "help": "skip (and say so in the report) when the set cannot be had: no local copy, no hub"})

    def for_model(self, model: str) -> str:
        return self.set.replace("{model}", model)


@dataclass
class TunerVariant:
    """A MIA-Tuner variant of the suite: ``tag`` names its column (``mia-tuner`` for default)."""

    tag: str = field(default="default", metadata={"help": "names the column (mia-tuner:<tag>)"})
    preset: str = field(default="default", metadata={
        "help": "optimisation settings (learning rate, epochs, batch per class) unless given"})
    settings: dict = field(default_factory=dict, metadata={"help": "TunerConfig fields"})
    datasets: list[str] | None = field(default=None, metadata={
        "help": "the suite's datasets (`set` as written) it runs on; none: all"})

    def runs_on(self, dataset: DatasetEntry) -> bool:
        return self.datasets is None or dataset.set in self.datasets

    @property
    def column(self) -> str:
        return "mia-tuner" if self.tag == "default" else f"mia-tuner:{self.tag}"

    def config(self, train_per_class: int, seed: int):
        from ..tuner.config import TunerConfig

        return TunerConfig.from_preset(self.preset, **{**self.settings, "train_per_class": train_per_class,
                                                       "seed": seed})


@dataclass
class SafeguardEntry:
    """A safeguard of the suite (``DefenceConfig`` fields), measured before/after on every cell."""

    tag: str
    settings: dict = field(default_factory=dict)
    datasets: list[str] | None = None  # the suite's datasets (`set` as written) it runs on; None: all
    # the attacker's MIA-Tuner (TunerConfig fields; against mia-tuner); None: the defence's
    # attack_epochs and seed, every other setting at its default
    attack: dict | None = None

    def runs_on(self, dataset: DatasetEntry) -> bool:
        return self.datasets is None or dataset.set in self.datasets

    def config(self, seed: int):
        """Its DefenceConfig on a cell of seed ``seed`` (a command's entry may carry its own
        --defence-seed; a suite's cannot: `seeds` is its axis)."""
        from ..safeguards.config import DefenceConfig

        return DefenceConfig(**{"seed": seed, **self.settings})

    def attack_config(self, defence):
        """The attacker's TunerConfig against the DefenceConfig ``defence``."""
        from ..tuner.config import TunerConfig

        return TunerConfig(**{"epochs": defence.attack_epochs, "seed": defence.seed, **(self.attack or {})})


@dataclass
class SuiteConfig:
    """The matrix: models x datasets x (methods, MIA-Tuner variants, safeguards) x seeds x
    training texts per class."""

    CHOICES: ClassVar[dict] = ModelConfig.CHOICES  # the loading settings' (device, dtype, quantization)

    name: str = field(metadata={"help": "the suite's name (report title, default output folder)"})
    models: list[str] = field(metadata={"help": "offline short names, local folders or hub ids"})
    datasets: list[DatasetEntry] = field(metadata={"help": "sets to evaluate on"})
    methods: list[str] = field(default_factory=lambda: ["all"],
                               metadata={"help": "score-based methods, fused, blind (or all)"})
    method_settings: dict = field(default_factory=dict, metadata={"help": "MethodConfig fields"})
    reference: str | dict | None = field(default=None, metadata={
        "help": "reference model for `ref`, or {model: reference} (a controlled set brings its own: the "
                "model before injection)"})
    seeds: list[int] = field(default_factory=lambda: [DEFAULT_SEED], metadata={"help": "split and training seeds"})
    train_per_class: list[int] = same_as(SplitConfig, "max_train_per_class", as_list=True,
                                         help_text="training texts per class (an ablation axis)")
    test_per_class: int = same_as(SplitConfig, "max_test_per_class", help_text=(
        "held-out test texts per class, for the sets whose split recipe does not fix its own "
        "(controlled:<model>:<n> holds n // 3 per class out; a dataset entry's test_per_class wins)"))
    tuner: list[TunerVariant] = field(default_factory=list, metadata={"help": "MIA-Tuner variants"})
    safeguards: list[SafeguardEntry] = field(default_factory=list, metadata={"help": "safeguards"})
    # how every model is loaded: ModelConfig's fields, their defaults and help read from there
    device: str = same_as(ModelConfig, "device")
    dtype: str = same_as(ModelConfig, "dtype")
    device_map: str | None = same_as(ModelConfig, "device_map")
    quantization: str | None = same_as(ModelConfig, "quantization")

    def __post_init__(self) -> None:
        for name in ("models", "datasets", "seeds", "train_per_class"):
            if not getattr(self, name):
                raise ConfigError(f"suite {self.name!r}: `{name}` is empty")
        if self.test_per_class < 1 or min(self.train_per_class) < 1:
            raise ConfigError(f"suite {self.name!r}: texts per class must be positive")
        tags = [v.tag for v in self.tuner] + [s.tag for s in self.safeguards]
        if len(set(tags)) != len(tags):
            raise ConfigError(f"suite {self.name!r}: two variants share a tag ({tags})")
        from ..methods import build_methods

        for name, allowed in self.CHOICES.items():  # a field that may be unset (None) may stay so
            value = getattr(self, name)
            if value not in allowed and not (value is None and self.__dataclass_fields__[name].default is None):
                raise ConfigError(f"suite {self.name!r}: {name} {value!r}; choose one of "
                                  f"{', '.join(str(a) for a in allowed)}")
        build_methods(self.methods, self.method_config())  # unknown names and settings fail here
        for variant in self.tuner:
            variant.config(self.train_per_class[0], self.seeds[0])
        from ..safeguards.api import check_attack

        for guard in self.safeguards:
            check_attack(guard.attack_config(guard.config(self.seeds[0])))

    def method_config(self) -> MethodConfig:
        """The methods' settings (the reference is the cell's: ``reference_for``)."""
        _check_keys(self.method_settings, MethodConfig, "method_settings")
        if "reference" in self.method_settings:
            raise ConfigError("method_settings: set the reference with the suite's `reference` key")
        return MethodConfig(methods=list(self.methods), **self.method_settings)

    def reference_for(self, model: str) -> str | None:
        if isinstance(self.reference, dict):
            return self.reference.get(model)
        return self.reference


def _check_keys(values: dict, cls, where: str, extra=()) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    allowed = {f.name for f in dataclasses.fields(cls)} | set(extra)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")


def _dataset(entry) -> DatasetEntry:
    if isinstance(entry, str):
        return DatasetEntry(set=entry)
    _check_keys(entry, DatasetEntry, "datasets[]")
    if "set" not in entry:
        raise ConfigError("datasets[]: an entry needs `set`")
    return DatasetEntry(**entry)


def _tuner_variant(entry) -> TunerVariant:
    from ..tuner.config import TunerConfig

    entry = dict(entry or {})
    _check_keys(entry, TunerConfig, "tuner[]", extra=("tag", "preset", "datasets"))
    for fixed in ("train_per_class", "seed"):
        if fixed in entry:
            raise ConfigError(f"tuner[]: `{fixed}` is a suite axis (train_per_class, seeds), not a variant setting")
    return TunerVariant(tag=str(entry.pop("tag", "default")), preset=entry.pop("preset", "default"),
                        datasets=_restriction(entry.pop("datasets", None), "tuner[]"), settings=entry)


def _safeguard(entry) -> SafeguardEntry:
    from ..safeguards.config import DefenceConfig
    from ..tuner.config import TunerConfig

    entry = dict(entry or {})
    _check_keys(entry, DefenceConfig, "safeguards[]", extra=("tag", "datasets", "attack"))
    if "seed" in entry:
        raise ConfigError("safeguards[]: `seed` is a suite axis (seeds)")
    attack = entry.pop("attack", None)
    if attack is not None:
        _check_keys(attack, TunerConfig, "safeguards[].attack")
    tag = str(entry.pop("tag", entry.get("against", "scores")))
    return SafeguardEntry(tag=tag, datasets=_restriction(entry.pop("datasets", None), "safeguards[]"),
                          settings=entry, attack=dict(attack) if attack is not None else None)


def _restriction(datasets, where: str) -> list[str] | None:
    if datasets is None:
        return None
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, str) for d in datasets):
        raise ConfigError(f"{where}: `datasets` is a non-empty list of the suite's dataset names")
    return datasets


def _check_restrictions(values: dict, source: str) -> None:
    """A variant or safeguard limited to datasets the suite does not list is a typo, caught
    on the suite as written (a --datasets override may then leave it nothing to run on)."""
    listed = {d.get("set") if isinstance(d, dict) else d for d in values.get("datasets") or []}
    for key in ("tuner", "safeguards"):
        for entry in values.get(key) or []:
            limits = entry.get("datasets") if isinstance(entry, dict) else None
            unknown = [d for d in limits if d not in listed] if isinstance(limits, list) else []
            if unknown:
                raise ConfigError(f"{source}: {key}[] `datasets` names {unknown}, not among the suite's "
                                  f"datasets ({', '.join(sorted(map(str, listed)))})")


def suite_from_dict(values: dict, check_restrictions: bool = True) -> SuiteConfig:
    """A SuiteConfig from a parsed YAML mapping (every key checked)."""
    _check_keys(values, SuiteConfig, "suite")
    values = dict(values)
    if "name" not in values:
        raise ConfigError("suite: `name` is missing")
    if check_restrictions:
        _check_restrictions(values, "suite")
    for key in ("models", "datasets", "methods", "seeds", "train_per_class", "tuner", "safeguards"):
        if key in values and not isinstance(values[key], list):
            raise ConfigError(f"suite: `{key}` must be a list")
    values["datasets"] = [_dataset(d) for d in values.get("datasets", [])]
    values["tuner"] = [_tuner_variant(v) for v in values.get("tuner", [])]
    values["safeguards"] = [_safeguard(s) for s in values.get("safeguards", [])]
    try:
        return SuiteConfig(**values)
    except TypeError as exc:  # a missing required key
        raise ConfigError(f"suite: {exc}") from None


def suite_text(name_or_path: str) -> tuple[str, str]:
    """(YAML text, where it came from): a file path, or the name of a shipped suite."""
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    if name_or_path in SHIPPED:
        source = resources.files("mia_tuner.suites") / f"{name_or_path}.yaml"
        return source.read_text(encoding="utf-8"), f"mia_tuner/suites/{name_or_path}.yaml"
    raise ConfigError(f"no suite {name_or_path!r}: give a YAML file or one of {', '.join(SHIPPED)}")


def load_suite(name_or_path: str, overrides: dict | None = None) -> SuiteConfig:
    """Read a suite (file or shipped name); ``overrides`` replace top-level keys (the CLI's)."""
    import yaml

    text, source = suite_text(name_or_path)
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: a suite is a mapping of keys (name, models, datasets, ...)")
    _check_restrictions(values, source)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "datasets" in overrides:  # a name the suite lists keeps the suite's settings for it
        listed = {d["set"]: d for d in values.get("datasets", []) if isinstance(d, dict) and "set" in d}
        overrides["datasets"] = [listed.get(name, name) for name in overrides["datasets"]]
    values.update(overrides)
    return suite_from_dict(values, check_restrictions=False)
