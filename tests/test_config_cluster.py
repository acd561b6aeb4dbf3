"""[cluster] and [[cluster.worker]]: documented in the example, local by default, mistakes named."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from bot.config import ClusterConfig, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
TWO_MODELS = '[[models]]\nname = "small"\nsource = "a/b"\n[[models]]\nname = "big"\nsource = "c/d"\n'
DEFAULT = '[generation]\ndefault_model = "small"\n'


def load(tmp_path: Path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(DEFAULT + TWO_MODELS + text)
    return load_config(path)


def test_the_example_documents_every_cluster_key_and_stays_local() -> None:
    text = (ROOT / "config.example.toml").read_text()
    documented = set(re.findall(r"^#?\s*(\w+)\s*=", text, re.MULTILINE))
    assert {f.name for f in fields(ClusterConfig)} - {"worker"} <= documented
    assert "# [[cluster.worker]]" in text
    assert load_config(ROOT / "config.example.toml").cluster == ClusterConfig()  # backend "local", as before


def test_workers_and_their_model_lists(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[cluster]\nbackend = "ray"\naddress = "auto"\nnum_gpus = 0.5\n'
        '[[cluster.worker]]\nmodels = ["small"]\n[[cluster.worker]]\nmodels = ["big", "small"]\n',
    )
    assert config.cluster.workers == 2  # one per table when `workers` is left out
    assert config.cluster.num_gpus == 0.5 and config.cluster.address == "auto"
    assert config.cluster.worker_models() == [frozenset({"small"}), frozenset({"big", "small"})]
    config = load(tmp_path, '[cluster]\nbackend = "ray"\nworkers = 3\n[[cluster.worker]]\nmodels = ["big"]\n')
    assert config.cluster.worker_models() == [frozenset({"big"}), None, None]  # untabled workers run every model


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[cluster]\nbackend = "slurm"\n', '[cluster] backend must be "local" or "ray", not \'slurm\''),
        ("[cluster]\nworkers = 0\n", "[cluster] workers must be a whole number of at least 1, not 0"),
        ("[cluster]\nnum_gpus = -1\n", "[cluster] num_gpus must be a number of at least 0, not -1"),
        ("[cluster]\nnodes = 2\n", "[cluster] has unknown key(s): nodes"),
        (
            '[cluster]\nworkers = 1\n[[cluster.worker]]\nmodels = ["small"]\n[[cluster.worker]]\nmodels = ["big"]\n',
            "[cluster] workers is 1, but there are 2 [[cluster.worker]] tables",
        ),
        (
            '[[cluster.worker]]\nmodels = ["huge"]\n',
            "[[cluster.worker]] #1 models: huge not under [[models]] (there: small, big)",
        ),
        ('[[cluster.worker]]\nmodels = "small"\n', "[[cluster.worker]] #1 models must be a list of model names"),
        (
            '[[cluster.worker]]\nmodels = ["small"]\n',
            "[[models]] big: no [[cluster.worker]] runs it; add it to a worker's models, or leave one worker's "
            "models empty (that worker runs every model)",
        ),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text)
    assert message in str(refused.value)
