"""The real offline SmolLM2-135M-Instruct on a few texts: finite scores, Loss equal to the model's
own loss, batching that changes nothing, and a whole `run_scores` run.

Reads the prepared model from the default cache (`mia-tuner models fetch`); the texts are
passages of the Python documentation that every interpreter carries (labels alternate: these
tests check mechanics, not detection). One extra test reads WikiMIA-24 from ../shared/data and
skips where a clone has none (marker `shared_data`). Writes only to tmp. Deselect with
`-m "not integration"`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mia_tuner.config import DataConfig, MethodConfig, ModelConfig, RunConfig, SplitConfig
from mia_tuner.models import offline

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
SHARED_WIKIMIA24 = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikimia24"
SPLIT = "WikiMIA_length32"
N_PER_CLASS = 4
REFERENCE_FREE = ["loss", "zlib", "lowercase", "min-k%", "min-k%++", "neighbor"]

if offline.status(MODEL)["state"] != "ready":
    pytest.skip(f"the offline {MODEL} is not prepared: run `mia-tuner models fetch`",
                allow_module_level=True)


@pytest.fixture(scope="module")
def local_set(tmp_path_factory) -> Path:
    """A JSONL membership file of 16 + 16 short documentation passages (made, not shipped)."""
    from mia_tuner.data.corpus import python_docs_corpus

    passages = python_docs_corpus(n_words=32)[:4 * N_PER_CLASS * 2]
    path = tmp_path_factory.mktemp("data") / "docs.jsonl"
    path.write_text("".join(json.dumps({"input": text, "label": i % 2}) + "\n"
                            for i, text in enumerate(passages)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def texts(local_set):
    """4 "members" and 4 "non-members", interleaved."""
    rows = [json.loads(line) for line in local_set.read_text(encoding="utf-8").splitlines()]
    return [row["input"] for row in rows[:2 * N_PER_CLASS]]


@pytest.fixture(scope="module")
def smollm():
    from mia_tuner.config import default_cache_dir
    from mia_tuner.models import load_model

    return load_model(ModelConfig(name=MODEL, device="cpu"), cache_dir=default_cache_dir())


def reference_free_scores(loaded, texts, batch_size):
    from mia_tuner.methods import ScoringContext, StatsProvider, build_methods
    from mia_tuner.methods.neighbor import NEIGHBOR_TOPK

    settings = MethodConfig(num_neighbors=2, batch_size=batch_size)
    provider = StatsProvider(loaded, batch_size=batch_size, topk=NEIGHBOR_TOPK)
    ctx = ScoringContext(target=provider, settings=settings)
    return {m.label: m.score(texts, ctx) for m in build_methods(REFERENCE_FREE, settings)}, provider


@pytest.fixture(scope="module")
def batched(smollm, texts):
    return reference_free_scores(smollm, texts, batch_size=8)


def test_reference_free_scores_are_finite(batched, texts):
    scores, provider = batched
    assert set(scores) == set(REFERENCE_FREE)
    for name, values in scores.items():
        assert values.shape == (len(texts),) and np.isfinite(values).all(), name
        assert np.ptp(values) > 0, f"{name} gives every text the same score"
    # One pass over the texts, then the lowercased variants and the neighbours (2 per text).
    assert provider.n_forward_texts <= 4 * len(texts)


def test_loss_is_minus_the_models_own_mean_token_loss(smollm, batched, texts):
    import torch

    text = texts[0]
    ids = torch.tensor([smollm.tokenizer(text, add_special_tokens=True)["input_ids"]])
    with torch.no_grad():
        nll = smollm.model(input_ids=ids, labels=ids).loss.item()
    assert batched[0]["loss"][0] == pytest.approx(-nll, abs=1e-4)


def test_batch_size_does_not_change_scores(smollm, batched, texts):
    one, _ = reference_free_scores(smollm, texts, batch_size=1)
    many, _ = batched
    for name in REFERENCE_FREE:
        np.testing.assert_allclose(one[name], many[name], atol=1e-4, rtol=0, err_msg=name)


def test_run_scores_writes_a_run_directory(smollm, local_set, tmp_path):
    from mia_tuner.suite import run_scores

    methods = ["loss", "zlib", "min-k%", "min-k%++", "lowercase", "blind"]
    config = RunConfig(model=ModelConfig(name=MODEL, device="cpu"),
                       data=DataConfig(path=str(local_set)),
                       split=SplitConfig(max_train_per_class=8, max_test_per_class=N_PER_CLASS),
                       methods=MethodConfig(methods=methods),
                       out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    result = run_scores(config, loaded=smollm)  # the loaded model: no fetch into tmp
    out = result.out_dir
    for name in ("config.json", "scores.csv", "metrics.json", "table.md", "roc.png"):
        assert (out / name).is_file(), name
    assert len(list(out.glob("hist_*.png"))) == len(methods)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["methods"]) == set(methods)
    assert metrics["n_texts"] == len(result.test) == 2 * N_PER_CLASS
    assert metrics["extra"]["model"]["fingerprint"] == smollm.fingerprint
    assert metrics["extra"]["data"]["name"] == f"{local_set.parent.name}/docs"
    assert not set(result.test.texts) & set(result.train.texts)
    assert all(np.isfinite(s).all() for s in result.scores.values())
    assert (tmp_path / "cache" / "scores.sqlite").is_file()


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED_WIKIMIA24 / "dataset_dict.json").is_file(),
                    reason=f"WikiMIA-24 not found at {SHARED_WIKIMIA24} (no ../shared/data in this clone)")
def test_run_scores_on_wikimia24_from_disk(smollm, tmp_path):
    """The benchmark as users load it (a `save_to_disk` folder and a split): every row read,
    named after the set and split, scored finitely."""
    from mia_tuner.suite import run_scores

    config = RunConfig(model=ModelConfig(name=MODEL, device="cpu"),
                       data=DataConfig(path=str(SHARED_WIKIMIA24), split=SPLIT),
                       split=SplitConfig(max_train_per_class=4, max_test_per_class=N_PER_CLASS),
                       methods=MethodConfig(methods=["loss", "min-k%++"]),
                       out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    result = run_scores(config, loaded=smollm)
    metrics = json.loads((result.out_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["extra"]["data"]["name"] == f"wikimia24/{SPLIT}"
    assert len(result.test) == 2 * N_PER_CLASS
    assert all(np.isfinite(s).all() for s in result.scores.values())


def test_mia_tuner_training_lowers_the_loss_on_smollm2(smollm, texts):
    """A few aligned-pipeline steps on the real model: the hybrid loss falls, and every step
    has a recorded duration."""
    import copy

    from mia_tuner.data.types import MembershipSet
    from mia_tuner.training.trainer import Trainer, TrainerConfig
    from mia_tuner.tuner.config import TunerConfig
    from mia_tuner.tuner.peft_setup import wrap_model
    from mia_tuner.tuner.pipelines import make_pipeline

    train = MembershipSet(texts=texts, labels=[1, 0] * N_PER_CLASS, name="few")
    config = TunerConfig(mode="aligned", num_virtual_tokens=10)
    pipeline = make_pipeline(smollm, config)
    model = wrap_model(copy.deepcopy(smollm.model), smollm.tokenizer, config)  # keep the fixture clean
    # one step per epoch holds all 8 texts, so the steps' losses compare like with like
    trainer = Trainer(model, pipeline.loss, pipeline.encode,
                      TrainerConfig(learning_rate=3e-2, epochs=4, batch_per_class=N_PER_CLASS))
    history = trainer.fit(train)
    totals = [s["total"] for s in history.steps]
    assert len(totals) == 4 and totals[-1] < totals[0], totals
    assert all(s["seconds"] > 0 for s in history.steps)
