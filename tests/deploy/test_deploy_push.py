"""deploy/push/: N shards and the log agents pushing into one store whose ruler runs the KPI rules; every file
checked for what the program reading it needs (the end-to-end path itself runs in tests/push/test_shards.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from agent.config import values
from agent.config.agent import parse_config
from agent.config.yaml import load_text
from agent.kpi.render import render_prometheus
from tests.kpi.helpers import load_spec

ROOT = Path(__file__).parents[2]
PUSH = ROOT / "deploy" / "push"


def _objects() -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = {}
    for path in sorted(PUSH.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def _args(container: dict) -> dict[str, str]:
    return dict(arg.lstrip("-").split("=", 1) if "=" in arg else (arg.lstrip("-"), "")
                for arg in container["args"] if arg.startswith("-"))


def test_the_shards_push_to_one_store_and_keep_their_buffer_where_it_survives(tmp_path):
    objects = _objects()
    (kustomization,) = objects["Kustomization"]
    assert set(kustomization["resources"]) == {p.name for p in PUSH.glob("*.yaml")} - {"kustomization.yaml"}
    config_maps = {cm["metadata"]["name"]: cm["data"] for cm in objects["ConfigMap"]}
    (statefulset,) = objects["StatefulSet"]
    (daemonset,) = objects["DaemonSet"]
    (vmalert,) = [d for d in objects["Deployment"] if d["metadata"]["name"] == "vmalert"]
    shard = statefulset["spec"]["template"]["spec"]["containers"][0]
    args = _args(shard)
    assert "shard.index-from-hostname" in args and args["shard.count"] == str(statefulset["spec"]["replicas"])
    assert "shard.index" not in args
    stores = set()
    for workload, claims in ((statefulset, statefulset["spec"].get("volumeClaimTemplates", [])), (daemonset, [])):
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]} | {c["metadata"]["name"]: {"claim": c} for c in claims}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in spec["containers"][0]["volumeMounts"]}
        config_map = next(v["configMap"]["name"] for path, v in mounts.items() if path == "/etc/kpi-agent")
        text = config_maps[config_map]["agent.yaml"]
        config, report = parse_config(load_text(text, config_map), config_map)
        assert report.warnings == [] and report.errors == []
        assert config.remote_write and config.external_labels
        stores |= {endpoint.url for endpoint in config.remote_write}
        # the buffer lives on a volume that outlives the container: a PersistentVolume or the node's disk
        (buffer_volume,) = [v for path, v in mounts.items() if config.remote_write_buffer.startswith(path)]
        assert "claim" in buffer_volume or "hostPath" in buffer_volume
        claim = buffer_volume.get("claim")
        if claim:
            size = values.size(claim["spec"]["resources"]["requests"]["storage"].replace("Gi", "GiB"))
            assert size > max(endpoint.max_buffer_size for endpoint in config.remote_write)
    (store,) = stores
    vmalert_args = _args(vmalert["spec"]["template"]["spec"]["containers"][0])
    base = store.removesuffix("/api/v1/write")
    assert vmalert_args["datasource.url"] == base and vmalert_args["remoteWrite.url"] == base
    # the agents run as the files say: kpi-agent accepts the shard's arguments
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--help"], capture_output=True, text=True)
    assert all(f"--{name}" in result.stdout for name in args)


def test_the_ruler_gets_the_rules_generated_from_the_specs():
    (kustomization,) = _objects()["Kustomization"]
    (generator,) = kustomization["configMapGenerator"]
    for spec_file in sorted((ROOT / "rules").glob("*.yaml")):
        spec = load_spec(spec_file)
        name = f"rules/{spec.service}.rules.yml"
        assert name in generator["files"]
        assert (PUSH / name).read_text() == render_prometheus(spec, f"rules/{spec_file.name}"), \
            "run: kpi-agent rules generate rules/ --out deploy/push/rules/"
