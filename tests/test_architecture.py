"""The house rules, checked from the code: no import circles, every module of `methods/`
imported, and a new method is one new file that every table picks up by its capabilities."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest
from helpers import labelled_rows, write_jsonl

import mia_tuner
from mia_tuner import methods
from mia_tuner.cli import main
from mia_tuner.methods.base import METHODS

SRC = Path(mia_tuner.__file__).parent
ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every import between the package's modules, those inside functions included."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    graph[name].add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names)
        graph[name] = {t for t in graph[name] if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 50 and graph["mia_tuner.run"]  # the graph was read
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]  # the check can fail


def test_every_module_of_methods_is_imported():
    for module in pkgutil.iter_modules(methods.__path__):
        assert f"mia_tuner.methods.{module.name}" in sys.modules, module.name


@pytest.fixture
def dummy_method(tmp_path, monkeypatch):
    """A method defined in a module of its own, outside the package, as a user would add one."""
    (tmp_path / "my_attack.py").write_text('''
import numpy as np
from mia_tuner.methods.reference_free import StatsMethod
from mia_tuner.methods.base import register


@register
class MaxLogProb(StatsMethod):
    """The text's highest token log-probability: a new attack in one file."""
    name = "max-logprob"
    higher_is_member = True

    def statistic(self, stats, text):
        return float(np.max(stats.logprobs))
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))  # the module is forgotten afterwards
    monkeypatch.setattr("mia_tuner.methods.base.METHODS", dict(METHODS))
    importlib.import_module("my_attack")
    yield "max-logprob"


def test_a_new_method_is_one_file_seen_by_all_the_suite_and_the_benchmark_tables(
        dummy_method, tiny_model_dir, tmp_path, capsys):
    from mia_tuner.methods.base import METHODS as registry
    from mia_tuner.suite import benchmark, suite_from_dict

    assert main(["methods"]) == 0 and dummy_method in capsys.readouterr().out.split()
    data = write_jsonl(tmp_path / "set.jsonl", labelled_rows(12))
    assert main(["scores", "--model", str(tiny_model_dir), "--data", str(data), "--device", "cpu",
                 "--methods", "all", "--train-per-class", "8", "--test-per-class", "4",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]) == 0
    assert dummy_method in (tmp_path / "run" / "table.md").read_text()
    # a suite's table: a column of its own, among the reference-free methods (its capabilities)
    suite = suite_from_dict({"name": "dummy", "models": [str(tiny_model_dir)], "methods": ["loss", dummy_method],
                             "datasets": [{"set": str(data), "test_per_class": 4}], "train_per_class": [8]})
    run, paths = benchmark(suite, tmp_path / "suite", cache_dir=tmp_path / "cache")
    header = next(line for line in paths["markdown"].read_text().splitlines() if line.startswith("| mode"))
    assert [cell.strip() for cell in header.strip("|").split("|")][2:4] == ["loss", dummy_method]
    assert dummy_method in registry
    # the benchmark table of detection.json rows
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from detection import markdown, rows_of
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert f"| {dummy_method} |" in markdown(rows_of(run.records))


def test_every_setting_has_its_help_text():
    """Every field of the configuration dataclasses says what it does (the CLI's help, the
    suites' documentation): a default is written once, beside its help."""
    import dataclasses

    from mia_tuner.config import DataConfig, MethodConfig, ModelConfig, RunConfig, SplitConfig
    from mia_tuner.safeguards.config import DefenceConfig
    from mia_tuner.suite.config import DatasetEntry, SuiteConfig
    from mia_tuner.training.controlled import ControlledConfig
    from mia_tuner.training.injection_config import InjectionConfig
    from mia_tuner.tuner.config import TunerConfig

    for cls in (ModelConfig, DataConfig, SplitConfig, MethodConfig, RunConfig, TunerConfig, DefenceConfig,
                InjectionConfig, ControlledConfig, SuiteConfig, DatasetEntry):
        missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
        assert not missing, f"{cls.__name__}: {missing} have no help"


def test_generated_options_show_the_dataclass_defaults(capsys):
    """The options generated from a dataclass default to its fields' values, and their help
    says so: e.g. `scores --help` and MethodConfig."""
    import dataclasses

    from mia_tuner.cli import build_parser
    from mia_tuner.cli.options import METHOD_PREFIX
    from mia_tuner.config import MethodConfig

    parser = build_parser()
    scores = parser._subparsers._group_actions[0].choices["scores"]
    actions = {a.dest: a for a in scores._actions}
    for field in dataclasses.fields(MethodConfig):
        action = actions[METHOD_PREFIX + field.name]
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert action.default == default, field.name
        assert field.metadata["help"].replace("%", "%%") in action.help


def _options(parser, path=()):
    """(command path, action) of every option of every (sub)command."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif action.option_strings and action.dest != "help":
            yield " ".join(path), action


def test_every_option_of_every_command_has_help():
    from mia_tuner.cli import build_parser

    missing = [f"{command} {action.option_strings[-1]}" for command, action in _options(build_parser())
               if not action.help]
    assert not missing, f"options without help: {missing}"


def test_hand_written_options_take_their_default_from_the_dataclass():
    """Options written by hand (not generated) that stand for a configuration field: the same
    default, read from the field, never typed twice."""
    import inspect

    from mia_tuner.cli import build_parser
    from mia_tuner.config import MethodConfig, ModelConfig, OutputFolders, RunConfig
    from mia_tuner.data.wiki import OnlinePages, WikiBuildConfig
    from mia_tuner.safeguards.config import TEST_PER_CLASS
    from mia_tuner.suite.config import TunerVariant

    online = inspect.signature(OnlinePages).parameters
    expected = {
        ("scores", "--out"): RunConfig.out,
        ("train", "--out"): OutputFolders.train,
        ("defend", "--out"): OutputFolders.defend,
        ("demo", "--out"): OutputFolders.demo,
        ("train", "--preset"): TunerVariant.preset,
        ("defend", "--test-per-class"): TEST_PER_CLASS,
        ("train", "--methods"): ",".join(MethodConfig().methods),
        ("defend", "--methods"): ",".join(MethodConfig().methods),
        ("train", "--reference"): MethodConfig.reference,
        ("defend", "--reference"): MethodConfig.reference,
        ("demo", "--device"): ModelConfig.device,
        ("data build-wiki", "--depth"): WikiBuildConfig.depth,
        ("data build-wiki", "--lengths"): WikiBuildConfig.lengths,
        ("data build-wiki", "--seed"): WikiBuildConfig.seed,
        ("data build-wiki", "--language"): online["language"].default,
        ("data build-wiki", "--min-interval"): online["min_interval"].default,
        ("data build-wiki", "--user-agent"): online["user_agent"].default,
    }
    found = {(command, action.option_strings[-1]): action.default for command, action in _options(build_parser())
             if (command, action.option_strings[-1]) in expected}
    assert found == expected


def test_a_runs_configuration_is_put_together_in_one_place():
    """RunConfig is built by RunConfig.compose only: every entry point composes it alike."""
    from mia_tuner.config import RunConfig

    builders = [f"{path.relative_to(SRC)}:{node.lineno}" for path in SRC.rglob("*.py")
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RunConfig"]
    assert builders == []
    assert RunConfig.compose(RunConfig().model, reference="ref").methods.reference == "ref"


def test_every_seed_defaults_to_the_one_default_seed():
    import dataclasses

    from mia_tuner.config import DEFAULT_SEED, SplitConfig
    from mia_tuner.data.wiki import WikiBuildConfig
    from mia_tuner.methods.base import ScoringContext
    from mia_tuner.safeguards.config import DefenceConfig
    from mia_tuner.suite.config import SuiteConfig
    from mia_tuner.training.controlled import ControlledConfig
    from mia_tuner.training.injection_config import InjectionConfig
    from mia_tuner.training.trainer import TrainerConfig
    from mia_tuner.tuner.config import TunerConfig

    for config in (SplitConfig, WikiBuildConfig, ScoringContext, DefenceConfig, ControlledConfig, InjectionConfig,
                   TrainerConfig, TunerConfig):
        assert {f.name: f.default for f in dataclasses.fields(config)}["seed"] == DEFAULT_SEED, config
    assert {f.name: f for f in dataclasses.fields(SuiteConfig)}["seeds"].default_factory() == [DEFAULT_SEED]


def test_a_suites_model_and_split_settings_are_the_dataclasses_own():
    """SuiteConfig's fields that stand for ModelConfig's and SplitConfig's: the same default
    and help, read from there."""
    import dataclasses

    from mia_tuner.config import ModelConfig, SplitConfig
    from mia_tuner.suite.config import SuiteConfig

    suite = {f.name: f for f in dataclasses.fields(SuiteConfig)}
    for name, (cls, field_name) in {"device": (ModelConfig, "device"), "dtype": (ModelConfig, "dtype"),
                                    "device_map": (ModelConfig, "device_map"),
                                    "quantization": (ModelConfig, "quantization")}.items():
        source = cls.__dataclass_fields__[field_name]
        assert (suite[name].default, suite[name].metadata["help"]) == (source.default, source.metadata["help"])
    assert suite["train_per_class"].default_factory() == [SplitConfig.max_train_per_class]
    assert suite["test_per_class"].default == SplitConfig.max_test_per_class


def test_the_values_a_field_accepts_are_declared_on_its_dataclass():
    """CHOICES and VALUES name real fields and known kinds of value; the command line reads
    them from there (no call site repeats them)."""
    import dataclasses

    from mia_tuner.cli.fields import value_types
    from mia_tuner.config import MethodConfig, ModelConfig, SplitConfig
    from mia_tuner.safeguards.config import DefenceConfig
    from mia_tuner.suite.config import SuiteConfig
    from mia_tuner.training.controlled import ControlledConfig
    from mia_tuner.training.injection_config import InjectionConfig
    from mia_tuner.tuner.config import TunerConfig

    for cls in (ModelConfig, SplitConfig, MethodConfig, TunerConfig, DefenceConfig, ControlledConfig,
                InjectionConfig, SuiteConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        declared = {**getattr(cls, "CHOICES", {}), **getattr(cls, "VALUES", {})}
        assert declared and set(declared) <= names, cls
        assert set(getattr(cls, "VALUES", {}).values()) <= set(value_types()), cls
        for name, allowed in getattr(cls, "CHOICES", {}).items():
            default = cls.__dataclass_fields__[name].default
            assert default is None or default in allowed, (cls, name)
    cli_sources = "\n".join(p.read_text(encoding="utf-8") for p in (SRC / "cli").glob("*.py"))
    assert "types=" not in cli_sources
