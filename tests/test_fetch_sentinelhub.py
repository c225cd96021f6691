"""Sentinel Hub fetcher: the real sentinelhub-py / requests-oauthlib clients against a loopback fake
(tests/fakes/sentinelhub_api.py). No internet; the retry backoff is set to 0 and Retry-After to 150 ms."""

from __future__ import annotations

import datetime as dt
import json
import logging

import numpy as np
import pytest
from fakes.sentinelhub_api import CATALOG_PATH, PROCESS_PATH, TOKEN_PATH, FakeScene, FakeSentinelHub, dn

from pipeline.config import SentinelHubSettings
from pipeline.errors import FetchError
from pipeline.fetch import FetchRequest
from pipeline.fetch.harmonise_meta import boa_add_offset, processing_baseline
from pipeline.fetch.retry import RetryPolicy, parse_retry_after
from pipeline.fetch.sentinelhub import SentinelHubFetcher, estimate_pu
from pipeline.grid import GridSpec

CLIENT_ID = "cw-test-client-7f3a"
CLIENT_SECRET = "s3cr3t-Zq9-never-log-me"
GRID = GridSpec(32645, (10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0), (32, 40))
BANDS = ("B02", "B04", "B08")


def scenes() -> list[FakeScene]:
    d = dt.date
    return [
        FakeScene(d(2021, 12, 10), "S2A_MSIL2A_20211210T050000_N0301_R019_T45TVK", 3.0,
                  properties={"s2:processing_baseline": "03.01"}),
        FakeScene(d(2022, 1, 15), "S2B_MSIL2A_20220115T050000_N0301_R019_T45TVK", 40.0, cloudy=True,
                  properties={"s2:processing_baseline": "03.01"}),
        FakeScene(d(2022, 2, 4), "S2A_MSIL2A_20220204T050000_N0400_R019_T45TVK", 12.0,
                  properties={"s2:processing_baseline": "04.00"}),
        FakeScene(d(2022, 2, 4), "S2A_MSIL2A_20220204T050000_N0400_R019_T45TVL", 2.0,
                  properties={"s2:processing_baseline": "04.00"}),
        FakeScene(d(2022, 2, 20), "S2B_MSIL2A_20220220T050000_N0400_R019_T45TVK", 95.0,
                  properties={"s2:processing_baseline": "04.00"}),
        FakeScene(d(2022, 3, 1), "S2B_MSIL2A_20220301T050000_N0400_R019_T45TVK", 7.0,
                  properties={"s2:processing_baseline": "04.00"}),
    ]


def req(end: dt.date = dt.date(2022, 2, 28), bands: tuple[str, ...] = BANDS) -> FetchRequest:
    return FetchRequest("dbc-test", GRID, dt.date(2021, 12, 1), end, bands)


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.delenv("SH_PROFILE", raising=False)
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the loopback token URL is plain http


@pytest.fixture
def fake(creds: None):
    with FakeSentinelHub(CLIENT_ID, CLIENT_SECRET, scenes(), page_size=2) as server:
        yield server


def fetcher_for(fake: FakeSentinelHub, tmp_path, **kw) -> SentinelHubFetcher:
    s = SentinelHubSettings(
        base_url=fake.url, token_url=fake.token_url, backoff=0.0, max_retries=3,
        cache_dir=tmp_path / "cache", max_cloud_cover=50, **kw,
    )
    return SentinelHubFetcher(s)


def test_happy_path_cube_contract(fake: FakeSentinelHub, tmp_path) -> None:
    ds = fetcher_for(fake, tmp_path).fetch(req())

    # catalog: 4 features in range under 50 % cloud, pages of 2 -> 2 requests; 3 dates -> 3 process requests
    assert len(fake.requests_to(CATALOG_PATH)) == 2
    assert len(fake.requests_to(TOKEN_PATH)) == 1
    assert len(fake.requests_to(PROCESS_PATH)) == 3
    # the cloudy date is skipped with a provenance note, the 95 % date never requested
    assert [str(t)[:10] for t in ds.time.values] == ["2021-12-10", "2022-02-04"]
    assert len(ds.attrs["skipped"]) == 1 and ds.attrs["skipped"][0].startswith("2022-01-15 S2B_MSIL2A_20220115")
    # contract: dtypes, dims, grid, CRS, coords
    assert ds["reflectance"].dtype == np.uint16 and ds["reflectance"].dims == ("time", "band", "y", "x")
    assert ds["scl"].dtype == np.uint8 and ds["scl"].dims == ("time", "y", "x")
    assert ds.sizes == {"time": 2, "band": 3, "y": 32, "x": 40}
    assert ds.rio.crs.to_epsg() == 32645
    assert tuple(ds.rio.transform())[:6] == GRID.transform
    assert list(ds.band.values) == list(BANDS)
    # least-cloudy tile of 2022-02-04 names the scene; baseline 04.00 -> offset -1000
    assert list(ds.scene_id.values) == [
        "S2A_MSIL2A_20211210T050000_N0301_R019_T45TVK", "S2A_MSIL2A_20220204T050000_N0400_R019_T45TVL"]
    assert list(ds.boa_add_offset.values) == [0, -1000]
    # values: raw DNs (harmonizeValues false) keep the +1000 offset; adding boa_add_offset harmonises them
    for t, day in enumerate((dt.date(2021, 12, 10), dt.date(2022, 2, 4))):
        for b, band in enumerate(BANDS):
            col = ds["reflectance"].values[t, b, :, 0].astype(int)
            assert col[0] + int(ds.boa_add_offset.values[t]) == dn(band, day)
            assert list(col[:6] - col[0]) == [0, 1, 2, 3, 4, 0]
    assert (ds["scl"].values == 4).all()
    # the Process request: site grid bbox/size in its UTM EPSG, DN bands + SCL, no harmonisation
    body = fake.process_bodies[0]
    assert body["input"]["bounds"]["bbox"] == list(GRID.bounds)
    assert body["input"]["bounds"]["properties"]["crs"].endswith("/32645")
    assert (body["output"]["width"], body["output"]["height"]) == (40, 32)
    assert body["input"]["data"][0]["processing"]["harmonizeValues"] is False
    assert '"SCL"' in body["evalscript"] and '"DN"' in body["evalscript"]


def test_cache_resume_new_band_and_new_dates(fake: FakeSentinelHub, tmp_path) -> None:
    f = fetcher_for(fake, tmp_path)
    assert f.plan(req()).n_process_requests == 3
    first = f.fetch(req())
    n0 = len(fake.requests_to(PROCESS_PATH))
    # same request again: everything (including the skipped date) comes from the cache
    again = f.fetch(req())
    assert len(fake.requests_to(PROCESS_PATH)) == n0
    np.testing.assert_array_equal(again["reflectance"].values, first["reflectance"].values)
    assert again.attrs["skipped"] == first.attrs["skipped"]
    # one more band: only that band of the two clear dates, no SCL again
    plan = f.plan(req(bands=(*BANDS, "B11")))
    assert (plan.n_process_requests, plan.n_cached) == (2, 1)
    wider = f.fetch(req(bands=(*BANDS, "B11")))
    new_bodies = fake.process_bodies[n0:]
    assert len(new_bodies) == 2
    assert all('["B11", "dataMask"]' in b["evalscript"] for b in new_bodies)
    assert wider.sizes["band"] == 4
    assert int(wider["reflectance"].sel(band="B11").values[0, 0, 0]) == dn("B11", dt.date(2021, 12, 10))
    # a longer date range: only the new date
    n1 = len(fake.requests_to(PROCESS_PATH))
    longer = f.fetch(req(end=dt.date(2022, 3, 31), bands=(*BANDS, "B11")))
    assert len(fake.requests_to(PROCESS_PATH)) == n1 + 1
    assert str(longer.time.values[-1])[:10] == "2022-03-01"


def test_interrupted_fetch_resumes(fake: FakeSentinelHub, tmp_path) -> None:
    f = fetcher_for(fake, tmp_path)
    fake.fail_next["process"] = [(200, {})] * 0
    fake.revoke_tokens_after = None
    # first date succeeds, then the service goes down
    orig = fake._process
    calls = {"n": 0}

    def flaky(headers, body):
        calls["n"] += 1
        if calls["n"] > 1:
            return 503, {"Content-Type": "application/json"}, b'{"error": {"message": "down"}}'
        return orig(headers, body)

    fake._process = flaky
    with pytest.raises(FetchError):
        f.fetch(req())
    fake._process = orig
    before = len(fake.process_bodies)
    ds = f.fetch(req())
    # the first date was cached; the second run asks for the two others only
    assert before == 1 and len(fake.process_bodies) == 3
    assert ds.sizes["time"] == 2


def test_429_twice_then_success_honours_retry_after(fake: FakeSentinelHub, tmp_path) -> None:
    fake.fail_next["process"] = [(429, {"Retry-After": "150"}), (429, {"Retry-After": "150"})]
    ds = fetcher_for(fake, tmp_path).fetch(req())
    assert ds.sizes["time"] == 2
    times = [r["t"] for r in fake.requests_to(PROCESS_PATH)]
    assert len(times) == 5  # 2 rejected + 3 scenes
    # Sentinel Hub's Retry-After is in milliseconds: 150 ms between the attempts, although backoff is 0
    assert times[1] - times[0] >= 0.14 and times[2] - times[1] >= 0.14


def test_token_expiry_mid_run_is_refreshed(fake: FakeSentinelHub, tmp_path) -> None:
    fake.revoke_tokens_after = 1  # every token issued so far dies after the first scene
    ds = fetcher_for(fake, tmp_path).fetch(req())
    assert ds.sizes["time"] == 2
    assert len(fake.requests_to(TOKEN_PATH)) == 2
    statuses = [r["headers"].get("Authorization", "")[:7] for r in fake.requests_to(PROCESS_PATH)]
    assert len(statuses) == 4  # one request answered 401, repeated with the new token


def test_persistent_500_gives_one_clear_error(fake: FakeSentinelHub, tmp_path) -> None:
    fake.fail_always["process"] = 500
    with pytest.raises(FetchError) as err:
        fetcher_for(fake, tmp_path).fetch(req())
    msg = str(err.value)
    assert "Sentinel Hub Process API" in msg and "HTTP 500" in msg and "4 attempt" in msg
    assert len(fake.requests_to(PROCESS_PATH)) == 4  # 1 + max_retries, then stop


def test_client_error_fails_at_once(fake: FakeSentinelHub, tmp_path) -> None:
    fake.fail_next["catalog"] = [(400, {})]
    with pytest.raises(FetchError, match="Catalog API answered HTTP 400"):
        fetcher_for(fake, tmp_path).fetch(req())
    assert len(fake.requests_to(CATALOG_PATH)) == 1


def test_secrets_never_logged_or_shown(fake: FakeSentinelHub, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("requests_oauthlib", "oauthlib", "urllib3", "sentinelhub", "pipeline"):
        caplog.set_level(logging.DEBUG, logger=name)
    fake.fail_next["process"] = [(429, {"Retry-After": "1"})]
    fake.revoke_tokens_after = 1
    f = fetcher_for(fake, tmp_path)
    ds = f.fetch(req())
    tokens = list(fake.tokens)
    assert len(tokens) == 2 and caplog.records  # debug records were captured (incl. OAuth ones)
    texts = [caplog.text, repr(f), str(f.client.config), repr(f.client.config), json.dumps(ds.attrs, default=str)]
    texts += [p.read_bytes().decode("latin-1") for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    for secret in (CLIENT_SECRET, CLIENT_ID, *tokens):
        assert not any(secret in t for t in texts), f"a secret leaked: {secret[:4]}…"
    # a refused token: the error names the endpoint, never the secret
    fake.fail_always["token"] = 401
    f2 = fetcher_for(fake, tmp_path / "other")
    with pytest.raises(FetchError) as err:
        f2.fetch(req())
    assert "token endpoint" in str(err.value) and CLIENT_SECRET not in str(err.value)


def test_missing_credentials(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("SH_CLIENT_ID", raising=False)
    monkeypatch.delenv("SH_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("SH_PROFILE", "cw-no-such-profile")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    f = SentinelHubFetcher(SentinelHubSettings(base_url="http://127.0.0.1:9", cache_dir=tmp_path))
    with pytest.raises(FetchError, match="SH_CLIENT_ID"):
        f.fetch(req())


def test_l1c_uses_cloud_mask_as_scl_like_codes(fake: FakeSentinelHub, tmp_path) -> None:
    ds = fetcher_for(fake, tmp_path, collection="l1c").fetch(req())
    assert '"CLM"' in fake.process_bodies[0]["evalscript"]
    assert ds.attrs["collection"] == "l1c" and (ds["scl"].values == 7).all()
    assert len(ds.attrs["skipped"]) == 1


def test_dry_run_plan_processing_units(fake: FakeSentinelHub, tmp_path) -> None:
    plan = fetcher_for(fake, tmp_path).plan(req())
    assert (plan.n_scenes, plan.n_cached, plan.n_process_requests) == (3, 0, 3)
    assert plan.processing_units == pytest.approx(0.03)  # 40x32 px is below the 0.01 PU minimum
    assert "3 process request(s)" in plan.summary()
    assert not fake.requests_to(PROCESS_PATH)  # planning downloads nothing
    assert estimate_pu(512, 512, 3) == pytest.approx(1.0)
    assert estimate_pu(1024, 1024, 6, n_dates=2) == pytest.approx(16.0)
    assert estimate_pu(10, 10, 1) == pytest.approx(0.01)


def test_retry_after_parsing_and_backoff() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("1500", millis=True) == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0  # a past date: now
    p = RetryPolicy(backoff_s=1.0, factor=2.0, jitter=0.25)
    assert 0.75 <= p.delay(0) <= 1.25 and 3.0 <= p.delay(2) <= 5.0
    assert p.delay(0, "30") >= 30.0


def test_boa_add_offset_from_metadata() -> None:
    day = dt.date(2022, 6, 1)
    assert boa_add_offset({"BOA_ADD_OFFSET": "-1000"}) == -1000
    assert boa_add_offset({"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True}, day) == 0
    assert boa_add_offset({"s2:processing_baseline": "03.01"}, day) == 0
    assert boa_add_offset({}, day, scene_id="S2A_MSIL2A_20220601T050701_N0400_R019_T45TVK_X") == -1000
    assert boa_add_offset({}, dt.date(2021, 6, 1)) == 0 and boa_add_offset({}, day) == -1000
    assert boa_add_offset({}, day, assets={"red": {"raster:bands": [{"offset": -0.1, "scale": 0.0001}]}}) == -1000
    assert processing_baseline({"s2:processing_baseline": "05.09"}) == pytest.approx(5.09)
