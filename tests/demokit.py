"""The demo clean room as the tests use it: config/demo.yaml and policies/demo.yaml
pointed at generated data (tests/conftest.py generates it once per session, at
TEST_SCALE), with state of their own."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.servers import REPO

DEMO_CONFIG = REPO / "config" / "demo.yaml"
DEMO_POLICY = REPO / "policies" / "demo.yaml"
DEMO_DATA_IN_CONFIG = "../var/demo"  # where config/demo.yaml expects the generated data
TEST_SCALE = 0.05  # 10,000 households: enough for k=10 groups, small enough to keep tests fast


def write_demo_config(folder: Path, demo_data_dir: Path, policy_path: Path) -> Path:
    """config/demo.yaml in `folder` serving `policy_path` over the data in
    `demo_data_dir`, with its state in `folder`; both demo owners approve."""
    config = yaml.safe_load(DEMO_CONFIG.read_text())

    def relocate(value: str) -> str:
        if value.startswith(DEMO_DATA_IN_CONFIG):
            return str(demo_data_dir) + value[len(DEMO_DATA_IN_CONFIG) :]
        return value

    config["policies"] = [str(policy_path)]
    for source in config["sources"].values():
        if "path" in source:
            source["path"] = relocate(source["path"])
    config["engine"]["data_roots"] = [relocate(p) for p in config["engine"].get("data_roots", [])]
    config["state_dir"] = str(folder / "state")
    link_demo_models(folder)
    link_demo_models(Path(policy_path).parent)
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    from gateway.collab.demo import approve_demo

    approve_demo(path)  # as `cleanroom demo` does at start: both owners approve the demo template
    return path


def link_demo_models(folder: Path) -> None:
    """A copy of the demo policy names its model files relative to itself
    (models/purchase_propensity.onnx): link the shipped ones beside the copy."""
    link = Path(folder) / "models"
    if Path(folder).resolve() != DEMO_POLICY.parent.resolve() and not link.exists():
        link.symlink_to(DEMO_POLICY.parent / "models", target_is_directory=True)
