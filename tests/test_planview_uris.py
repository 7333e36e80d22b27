"""--dry-run names OUT, --workdir and --rejected as the user gave them (URIs, never the local
staging folders a run mirrors them through), in the readable and the JSON plan, and masks secrets."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dcurate.cli.app import app
from dcurate.runner.planview import masked

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.jsonl").write_text(json.dumps({"id": "1", "text": "the words of one short document"}) + "\n")
    staging = tmp_path / "staging"
    monkeypatch.setenv("DCURATE_STAGING", str(staging))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # a dry run sends no request
    return inp, staging


@pytest.mark.parametrize("workdir", [None, "s3://b/work"])
def test_dry_run_shows_uris_not_staging_folders(env, tmp_path, workdir):
    inp, staging = env
    args = ["filter", str(inp), "s3://b/out", "--rejected", "s3://b/rej", "--workers", "1", "--dry-run"]
    if workdir:
        args += ["--workdir", workdir]
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    work = workdir or "s3://b/out/.dcurate/work"
    assert "output  s3://b/out " in text.output and "rejected documents  s3://b/rej" in text.output
    assert f"work folder  {work}\n" in text.output
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    assert (plan["output"], plan["workdir"], plan["rejected"]) == ("s3://b/out", work, "s3://b/rej")
    for out in (text.output, res.output):
        assert str(staging) not in out and "dcurate-staging" not in out
    assert not staging.exists()  # nothing staged either


def test_json_plan_masks_secrets_in_storage_options(env, tmp_path):
    inp, _ = env
    rec = tmp_path / "r.yaml"
    rec.write_text(f"input: {inp}\noutput: {tmp_path / 'out'}\nstages: [{{stage: filter}}]\n"
                   "storage_options: {region: eu-west-1, access_key: AKIA, secret_key: hush, hf: {token: hf_abc}}\n")
    res = runner.invoke(app, ["run", str(rec), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    so = json.loads(res.output)["options"]["storage_options"]
    assert so == {"region": "eu-west-1", "access_key": "***", "secret_key": "***", "hf": {"token": "***"}}
    assert "hush" not in res.output and "hf_abc" not in res.output
    assert masked({"part_size": 5, "gs": {"anonymous": True}}) == {"part_size": 5, "gs": {"anonymous": True}}


def test_manifest_does_not_record_secrets(env, tmp_path):
    inp, _ = env
    rec = tmp_path / "r.yaml"
    rec.write_text(f"input: {inp}\noutput: {tmp_path / 'out'}\nworkers: 1\nstages: [{{stage: filter}}]\n"
                   "storage_options: {secret_key: hush, session_token: tok}\n")
    res = runner.invoke(app, ["run", str(rec)])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "out/.dcurate/manifest.json").read_text()
    assert "hush" not in text and "tok\"" not in text
    assert json.loads(text)["options"]["storage_options"] == {"secret_key": "***", "session_token": "***"}
