"""cluster.yaml passes the Ray cluster launcher's own validation, in its AWS form and its commented on-prem form."""

from pathlib import Path

import pytest
import yaml

util = pytest.importorskip("ray.autoscaler._private.util")

CLUSTER_YAML = Path(__file__).parent.parent / "cluster.yaml"


def launcher_check(config: dict) -> None:
    """What `ray up` does before touching a provider: fill in defaults, then validate against Ray's schema."""
    util.validate_config(util.prepare_config(config))


def on_prem_variant(text: str, config: dict) -> dict:
    block = text.split("# On-premises alternative")[1].split("\n", 2)[2]
    overrides = yaml.safe_load("\n".join(line[2:] for line in block.splitlines() if line.startswith("#")))
    deleted = ("available_node_types", "head_node_type")  # as the comment says
    return {k: v for k, v in {**config, **overrides}.items() if k not in deleted}


def test_cluster_yaml_is_valid_for_the_ray_launcher():
    text = CLUSTER_YAML.read_text()
    config = yaml.safe_load(text)
    launcher_check(config)
    assert config["provider"]["type"] == "aws"
    assert any("pip install" in c and "raybt" in c for c in config["setup_commands"])
    assert all("RAY_AUTH_MODE=token" in c for c in config["head_start_ray_commands"][1:])
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"][1:])
    local = on_prem_variant(text, config)
    launcher_check(local)
    assert local["provider"]["type"] == "local"


def test_the_check_rejects_a_broken_config():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    config["max_workers"] = "four"
    with pytest.raises(Exception, match="four|max_workers"):
        launcher_check(config)
