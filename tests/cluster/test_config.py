"""The config is validated once, and bad config names the key before anything touches a node."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.config import ConfigError, defaults, load, validate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "invoke.yaml"


def site(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """The defaults merged with examples/invoke.yaml, keys fixed so file checks pass."""
    from invoke.config import merge_dicts

    data = merge_dicts(copy.deepcopy(defaults()), yaml.safe_load(EXAMPLE.read_text()))
    key = tmp_path / "key"
    key.write_text("not a real key")
    data["cluster"]["ssh"]["key"] = str(key)
    known = tmp_path / "known_hosts"
    known.write_text("")
    data["cluster"]["ssh"]["known_hosts"] = str(known)
    return data


def test_defaults_are_unconfigured_and_refuse_nodes() -> None:
    s = validate(defaults())
    assert not s.configured
    with pytest.raises(ConfigError, match=r"cluster.head.mgmt = '<head-node>'"):
        s.require_cluster()


def test_example_config_validates(tmp_path: Path) -> None:
    s = validate(site(tmp_path))
    assert s.configured
    assert [n.name for n in s.nodes] == ["spark1", "spark2", "spark3", "spark4"]
    assert s.model("qwen").image == "vllm-node-mimo" and s.model("qwen").master_port == 29510
    assert s.model("nemotron").weights_gib == 329
    assert s.image("vllm-node-mimo").expect.transformers_min == "5.0"
    assert [i.name for i in s.images.values() if i.live] == ["vllm-node", "vllm-node-mimo"]


def test_load_goes_through_invoke_hierarchy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "site.yaml"
    data = yaml.safe_load(EXAMPLE.read_text())
    data["cluster"]["ssh"]["key"] = None
    data["cluster"]["ssh"]["known_hosts"] = None
    data["models"] = {"tiny": {"hf_id": "org/tiny", "image": "vllm-node", "recipe": "r.yaml",
                               "master_port": 29530, "weights_gib": 1}}
    f.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("INVOKE_CLUSTER_API_PORT", "8001")
    s = load(f)
    assert s.head.mgmt == "192.0.2.10"
    assert s.api_port == 8001  # INVOKE_* env beats the file's absence of the key
    assert set(s.models) == {"qwen", "nemotron", "tiny"}  # adding a model is a config entry


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["cluster"]["workers"][1].update(mgmt="192.0.2.11"), r"workers\[1\].mgmt = '192.0.2.11' duplicates"),
        (lambda d: d["cluster"]["workers"][2].update(name="spark2"), r"workers\[2\].name = 'spark2' duplicates"),
        (lambda d: d["cluster"]["workers"][0].pop("fabric"), r"workers\[0\] \(spark2\) has no fabric address"),
        (lambda d: d["cluster"]["ssh"].update(key="/nonexistent/key"), r"cluster.ssh.key = '/nonexistent/key': no such file"),
        (lambda d: d["cluster"].update(api_port="eighty"), r"cluster.api_port must be a positive number"),
        (lambda d: d["models"]["qwen"].update(image="vllm-node-nope"), r"models.qwen.image = 'vllm-node-nope' is not in"),
        (lambda d: d["models"]["nemotron"].update(master_port=29510), r"master_port 29510 is also used by qwen"),
        (lambda d: d["cluster"].update(workers=[]), r"cluster.workers is empty"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, mutate: Any, message: str) -> None:
    data = site(tmp_path)
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        validate(data)


def test_placeholder_left_in_is_reported(tmp_path: Path) -> None:
    data = site(tmp_path)
    data["cluster"]["workers"][2]["fabric"] = "<worker-fabric-ip-3>"
    s = validate(data)
    with pytest.raises(ConfigError, match=r"cluster.workers\[2\].fabric = '<worker-fabric-ip-3>'"):
        s.require_cluster()


def test_unknown_model_and_node(tmp_path: Path) -> None:
    s = validate(site(tmp_path))
    with pytest.raises(ConfigError, match=r"unknown model 'llama': configured models are qwen, nemotron"):
        s.model("llama")
    with pytest.raises(ConfigError, match=r"unknown node 'spark9'"):
        s.select_nodes("spark1,spark9")


def test_launcher_keys_default_for_the_seed_and_bad_values_name_the_key(tmp_path: Path) -> None:
    s = validate(site(tmp_path))
    assert s.launcher.backend == "auto" and s.launcher.wheels == "auto" and s.launcher.pin_commit is None
    assert s.launcher.build_args == {"seed": (), "jan26": (), "current": ("--use-wheels",)}
    assert "{launcher_args}" in s.image("vllm-node").build  # the generation's flags go there
    data = site(tmp_path)
    data["launcher"] = {"pin_commit": "74C02C37", "build_args": {"seed": ["--force-download"]}, "wheels": "wheels"}
    s = validate(data)
    assert s.launcher.pin_commit == "74c02c37" and s.launcher.build_args["seed"] == ("--force-download",)
    for launcher, message in (
        ({"backend": "torch"}, r"launcher.backend = 'torch': use one of ray, no-ray, auto"),
        ({"wheels": "/opt/wheels"}, r"launcher.wheels = '/opt/wheels': use auto or a directory inside"),
        ({"wheels": "../wheels"}, r"launcher.wheels = '../wheels'"),
        ({"build_args": ["--use-wheels"]}, r"launcher.build_args must map a generation"),
        ({"build_args": {"may26": []}}, r"launcher.build_args.may26: unknown generation 'may26'"),
        ({"build_args": {"seed": "--use-wheels"}}, r"launcher.build_args.seed must be a list of flags"),
        ({"pin_commit": "main"}, r"launcher.pin_commit = 'main': give the launcher checkout's commit"),
    ):
        bad = site(tmp_path)
        bad["launcher"] = launcher
        with pytest.raises(ConfigError, match=message):
            validate(bad)
