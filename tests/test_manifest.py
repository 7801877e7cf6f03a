"""Stage contract: atomic outputs, manifest last, fingerprint skip, tamper and escape detection."""

from __future__ import annotations

import json

import pytest

from mixweave.pipeline.config import parse_config
from mixweave.data.manifest import (
    MANIFEST_NAME,
    atomic_stage_dir,
    read_manifest,
    verify_stage,
    write_json_atomic,
)
from mixweave.errors import ManifestError
from mixweave.pipeline.runner import Stage, StageResult, run_stages


def test_failed_stage_leaves_nothing_and_keeps_the_previous_artifact(tmp_path):
    final = tmp_path / "stage"
    with atomic_stage_dir(final) as tmp:
        (tmp / "a.txt").write_text("v1")
        write_json_atomic(tmp / MANIFEST_NAME, {"stage": "s", "files": []})
    with pytest.raises(RuntimeError):
        with atomic_stage_dir(final) as tmp:
            (tmp / "a.txt").write_text("v2 partial")
            raise RuntimeError("crash mid-stage")
    assert (final / "a.txt").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]


def test_stage_without_manifest_is_not_published(tmp_path):
    with pytest.raises(RuntimeError, match="wrote no _manifest.json"):
        with atomic_stage_dir(tmp_path / "s") as tmp:
            (tmp / "x").write_text("data")
    assert not (tmp_path / "s").exists()


def _toy_stages(calls: list):
    def produce(ctx, tmp):
        calls.append(ctx.config.seed)
        (tmp / "part-00000.txt").write_text(f"seed={ctx.config.seed}")
        return StageResult(counts={"rows": 1})

    def consume(ctx, tmp):
        (tmp / "out.txt").write_text((ctx.artifact("produce") / "part-00000.txt").read_text().upper())
        return StageResult()

    return {
        "produce": Stage("produce", (), 1, lambda c: {"seed": c.seed}, produce),
        "consume": Stage("consume", ("produce",), 1, lambda c: {}, consume),
    }


def test_runner_skips_up_to_date_stages_and_reruns_on_change(tmp_path):
    calls: list = []
    config = parse_config({"out": str(tmp_path / "run"), "seed": 1})
    reports = run_stages(_toy_stages(calls), config)
    assert [r.status for r in reports] == ["ran", "ran"]
    manifest = read_manifest(tmp_path / "run" / "produce")
    assert manifest["files"][0]["path"] == "part-00000.txt" and manifest["counts"] == {"rows": 1}
    assert manifest["config"] == {"seed": 1} and len(manifest["fingerprint"]) == 64
    reports = run_stages(_toy_stages(calls), config)
    assert [r.status for r in reports] == ["skipped", "skipped"] and calls == [1]
    changed = parse_config({"out": str(tmp_path / "run"), "seed": 2})
    reports = run_stages(_toy_stages(calls), changed)
    assert [r.status for r in reports] == ["ran", "ran"]  # the consumer's input manifest changed too
    assert (tmp_path / "run" / "consume" / "out.txt").read_text() == "SEED=2"


def test_verify_detects_tampering_and_escaping_paths(tmp_path):
    config = parse_config({"out": str(tmp_path / "run")})
    run_stages(_toy_stages([]), config)
    artifact = tmp_path / "run" / "produce"
    assert verify_stage(artifact)["stage"] == "produce"
    (artifact / "part-00000.txt").write_text("seed=999")
    with pytest.raises(ManifestError, match="sha256 differs|bytes"):
        verify_stage(artifact)
    manifest = json.loads((artifact / MANIFEST_NAME).read_text())
    manifest["files"] = [{"path": "../../etc/passwd", "bytes": 1, "sha256": "0" * 64}]
    (artifact / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="escapes the artifact folder"):
        verify_stage(artifact)
    manifest["files"] = [{"path": "/etc/passwd", "bytes": 1, "sha256": "0" * 64}]
    (artifact / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="not a relative path"):
        verify_stage(artifact)
    (artifact / MANIFEST_NAME).write_text("{broken")
    with pytest.raises(ManifestError, match="not valid JSON"):
        verify_stage(artifact)
