"""Tiny sites and parameters shared by test_stages.py and test_dvc.py (a helper module, not a test file).

Sites are 1.2 km × 1.2 km (about 120 × 120 px at 10 m) and the series is shortened to ~2.3 years, so one
site runs through every stage in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

#: (site_id, scenario, control, lon0, lat0); each site is a 0.0149° × 0.0108° box (≈ 1.2 km × 1.2 km there).
SMALL_SITES = (
    ("small-expanding", "arid", False, 88.30, 43.36),
    ("small-control", "control", True, 87.52, 44.02),
)


def write_sites(path: Path, sites: tuple[tuple[str, str, bool, float, float], ...] = SMALL_SITES) -> Path:
    """Write a WGS84 sites FeatureCollection with the given small sites."""
    feats = []
    for site_id, scenario, control, lon, lat in sites:
        east, north = lon + 0.0149, lat + 0.0108
        ring = [[lon, lat], [east, lat], [east, north], [lon, north], [lon, lat]]
        feats.append(
            {
                "type": "Feature",
                "properties": {"site_id": site_id, "scenario": scenario, "control": control},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def small_params(base: Path, sites_file: str, site_ids: list[str]) -> dict[str, Any]:
    """The repository's params.yaml, made small: given sites, 2020-06 … 2022-09, 64 px tiles."""
    params = yaml.safe_load(base.read_text())
    params["sites"] = site_ids
    params["sites_file"] = sites_file
    params["fetch"]["start"] = "2020-06-01"
    params["fetch"]["end"] = "2022-09-30"
    params["tile"]["tile_size_px"] = 64
    return params


def make_dvc_project(root: Path, sites: tuple[tuple[str, str, bool, float, float], ...] = SMALL_SITES) -> Path:
    """A copy of the project's pipeline under ``root`` (dvc.yaml, .dvc/config without SCM, pipeline/, the
    frozen stages' outputs and deps, web assets) with the given small sites; returns ``root``."""
    import shutil
    import subprocess
    import sys

    from pipeline.publish.mappage import install_web_assets

    repo = Path(__file__).resolve().parents[1]
    root.mkdir(parents=True)
    shutil.copy(repo / "dvc.yaml", root)
    shutil.copy(repo / ".dvcignore", root)
    shutil.copytree(repo / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    # the frozen stages' outputs, in git (evaluate_oscd, evaluate_cases), and their deps outside pipeline/,
    # which DVC checks exist even for a frozen stage (evaluate_cases: the Dabancheng configuration)
    for name in ("oscd_metrics.json", "oscd_f1.png", "dabancheng_metrics.json", "taizhou_metrics.json",
                 "configs/dabancheng.yaml", "configs/dabancheng_sites.geojson",
                 "configs/dabancheng_footprints.geojson"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, root / name)
    (root / "web").mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(repo / "web" / name, root / "web" / name)
    install_web_assets(repo / "web")  # the map page copies MapLibre from web/node_modules
    (root / "web" / "node_modules").symlink_to(repo / "web" / "node_modules", target_is_directory=True)
    write_sites(root / "configs" / "sites.geojson", sites)
    params = small_params(repo / "params.yaml", "configs/sites.geojson", [s[0] for s in sites])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init = subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    config = (repo / ".dvc" / "config").read_text()
    (root / ".dvc" / "config").write_text(config + "\n[core]\n    no_scm = True\n" if "[core]" not in config
                                          else config.replace("[core]", "[core]\n    no_scm = True", 1))
    return root
