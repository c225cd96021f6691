"""Secrets never leave the environment: the Sentinel Hub fetcher runs against the loopback fake
(tests/fakes/sentinelhub_api.py) with known fake credentials, logging at DEBUG, through the command line and
through ``dvc repro``; then every file written (cube, cache, logs, params.yaml, dvc.lock, DVC's own files)
and everything printed is scanned for the client id, the client secret and every access token the fake
issued."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import yaml
from fakes.sentinelhub_api import FakeScene, FakeSentinelHub
from small_project import SMALL_SITES, make_dvc_project
from typer.testing import CliRunner

from pipeline.cli import app

CLIENT_ID = "cw-scan-id-5b0d9e"
CLIENT_SECRET = "cw-scan-secret-Q7vX2-do-not-write"
SITE = SMALL_SITES[0]
LOGGERS = ("", "pipeline", "sentinelhub", "requests_oauthlib", "oauthlib", "urllib3", "requests", "dvc")


def _scenes() -> list[FakeScene]:
    return [FakeScene(dt.date(2021, 5, 3), "S2A_MSIL2A_20210503T050000_N0300_R019_T45TVK", 5.0),
            FakeScene(dt.date(2021, 8, 9), "S2A_MSIL2A_20210809T050000_N0300_R019_T45TVK", 8.0),
            FakeScene(dt.date(2022, 5, 8), "S2B_MSIL2A_20220508T050000_N0400_R019_T45TVK", 9.0)]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.delenv("SH_PROFILE", raising=False)
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the loopback token URL is plain http
    with FakeSentinelHub(CLIENT_ID, CLIENT_SECRET, _scenes()) as fake:
        root = make_dvc_project(tmp_path / "proj", (SITE,))
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["fetch"]["source"] = "sentinelhub"
        params["sentinelhub"] = {"base_url": fake.url, "token_url": fake.token_url, "backoff": 0.0,
                                 "cache_dir": "data/cache/sentinelhub"}
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        monkeypatch.chdir(root)
        yield fake, root


def _debug_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s | %(args)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    return handler


def test_no_secret_in_any_file_log_or_output(project, tmp_path: Path) -> None:
    fake, root = project
    log = tmp_path / "debug.log"
    handler = _debug_log(log)
    texts: list[str] = []
    try:
        # 1. the CLI: a 429 with Retry-After, then the token revoked mid-run (refreshed), all logged at DEBUG
        fake.fail_next["process"] = [(429, {"Retry-After": "1"})]
        fake.revoke_tokens_after = 1
        res = CliRunner().invoke(app, ["fetch", SITE[0]])
        assert res.exit_code == 0, res.output
        texts += [res.output]
        # 2. a refused token under --debug: the exception, its causes and the traceback
        fake.revoke_tokens_after = None
        fake.fail_always["token"] = 401
        cache = root / "data" / "cache"
        os.rename(cache, tmp_path / "cache-kept")  # nothing cached: the fetcher must ask for a token
        res = CliRunner().invoke(app, ["--debug", "fetch", SITE[0]])
        assert res.exit_code == 1 and res.exception is not None
        texts += [res.output, "".join(traceback.format_exception(res.exception)), repr(res.exception)]
        os.rename(tmp_path / "cache-kept", cache)
        fake.fail_always["token"] = None
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()
    # 3. dvc repro of the fetch stage in a child process (dvc.lock records the parameters), logging at DEBUG
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    env["COMPOUNDWATCH_LOG"] = "DEBUG"
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "-v", f"fetch@{SITE[0]}"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    texts += [proc.stdout, proc.stderr]
    assert "pipeline.fetch.sentinelhub:" in proc.stdout + proc.stderr  # the stage process logged

    tokens = list(fake.tokens)
    assert len(tokens) >= 3  # first token, the refreshed one, the dvc run's
    assert any("Bearer " in r["headers"].get("Authorization", "") for r in fake.log)  # the secrets were used
    code = ("pipeline", "web")  # copies of the repository's own files
    files = [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] not in code] + [log]
    assert (root / "dvc.lock").is_file() and log.stat().st_size > 0
    assert any(p.suffix == ".npy" for p in files) and any(".zarr" in str(p) for p in files)
    blobs = [(str(p), p.read_bytes()) for p in files] + [(f"output {i}", t.encode()) for i, t in enumerate(texts)]
    for secret in (CLIENT_ID, CLIENT_SECRET, *tokens):
        leaks = [where for where, blob in blobs if secret.encode() in blob]
        assert not leaks, f"secret {secret[:6]}… found in {leaks}"
