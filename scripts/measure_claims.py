"""Measure how often each chapter's claims hold: several seeds x two CPU kernel settings.

Executes a notebook with papermill once per (seed variant, kernel setting), reads the claims
that its check section wrote into the summary file (``fts_core.chapters.claims.Claim`` records), and
writes ``results/claims/<notebook>.json``: per claim the runs in which it held, the runs
tried and the smallest margin. The notebooks' check cells print these hold rates next to the
margin of their own execution, and the prose quotes them.

    python scripts/measure_claims.py 03_layer_collapse            # its preset seeds, both settings
    python scripts/measure_claims.py 01_fisher_derivation --kernels default
    python scripts/measure_claims.py 03_layer_collapse --rebound-from notebooks/summaries/03_layer_collapse.json

``--rebound-from`` re-evaluates the values stored in the existing hold-rate file against the
bounds of the claims in a summary file (after a bound was tightened to what held), without
executing anything again.

Kernel settings: ``default`` (what the machine picks) and ``alt`` (the variables in
``tests/alt_kernels.env``: ATen's scalar kernels and oneDNN limited to SSE4.1, which changes
float32 results in the ninth digit on every x86-64 CPU with AVX2 or newer). Runs one execution
at a time (``--jobs N``: N at once, each on one thread); ``nice`` it when a sweep shares the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALT_ENV_FILE = ROOT / "tests" / "alt_kernels.env"

# notebook -> (description of the seeds, list of papermill parameter sets)
PRESETS: dict[str, tuple[str, list[dict]]] = {
    "01_fisher_derivation": ("seeds 0-14 in 3 executions of 5",
                             [{"seed": b, "seeds": list(range(b, b + 5))} for b in (0, 5, 10)]),
    "02_karakida_spectrum": ("seeds 0-14 in 5 executions of 3",
                             [{"seeds": list(range(b, b + 3))} for b in (0, 3, 6, 9, 12)]),
    "03_layer_collapse": ("seeds 0-4", [{"seed": s, "train_seeds": [s]} for s in range(5)]),
}


def alt_kernel_env() -> dict[str, str]:
    """The alternative kernel setting: ``NAME=value`` lines of tests/alt_kernels.env."""
    env = {}
    for line in ALT_ENV_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def run_once(notebook: str, params: dict, kernels: str, workdir: Path) -> dict:
    """One papermill execution; returns its claims (from the summary file) and how it ended."""
    summary = workdir / f"{notebook}-{abs(hash(json.dumps(params, sort_keys=True)))}-{kernels}.json"
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
    for key in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        env.pop(key, None)
    if kernels == "alt":
        env.update(alt_kernel_env())
    papermill = Path(sys.executable).with_name("papermill")
    path = ROOT / "notebooks" / f"{notebook}.ipynb"
    given = {**params, "interactive": False, "summary_json": str(summary)}
    if "runs_dir" in _declared(path):  # a notebook that keeps its training runs: none reused
        given["runs_dir"] = str(summary.with_suffix(".runs"))
    cmd = [str(papermill), str(path), str(summary.with_suffix(".ipynb")),
           "--cwd", str(ROOT / "notebooks"), "-k", "python3", "--no-progress-bar", "-y", json.dumps(given)]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - start
    if not summary.is_file():
        raise RuntimeError(f"{notebook} {params} ({kernels}) wrote no summary:\n{done.stderr[-3000:]}")
    claims = json.loads(summary.read_text()).get("claims")
    if not claims:
        raise RuntimeError(f"{notebook} wrote no claims into its summary file")
    return {"params": params, "kernels": kernels, "seconds": round(seconds, 1),
            "notebook_passed": done.returncode == 0, "claims": claims}


def _declared(path: Path) -> set[str]:
    """The parameters a notebook declares (its ``parameters`` cell)."""
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def aggregate(notebook: str, described: str, runs: list[dict], kernels: list[str]) -> dict:
    settings = {"default": "the machine's default kernels",
                "alt": " ".join(f"{k}={v}" for k, v in alt_kernel_env().items())}
    out = {"notebook": notebook,
           "runs_described": f"{described} x {len(kernels)} kernel setting{'s' if len(kernels) > 1 else ''}",
           "kernel_settings": {k: settings[k] for k in kernels},
           "claims": {}, "runs": runs}
    for run in runs:
        for c in run["claims"]:
            entry = out["claims"].setdefault(c["key"], {"text": c["text"], "bound": c["bound"],
                                                        "direction": c["direction"], "held": 0, "tried": 0,
                                                        "min_margin": None, "values": []})
            entry["tried"] += 1
            entry["held"] += int(c["holds"])
            entry["values"].append(c["value"])
            m = c["margin"]
            entry["min_margin"] = m if entry["min_margin"] is None else min(entry["min_margin"], m)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", choices=sorted(PRESETS))
    parser.add_argument("--kernels", default="default,alt", help="comma list of: default, alt")
    parser.add_argument("--jobs", type=int, default=1,
                        help="executions at a time (each notebook uses one thread); default 1")
    parser.add_argument("--out", default=None, help="default: results/claims/<notebook>.json")
    parser.add_argument("--rebound-from", default=None, metavar="SUMMARY",
                        help="re-evaluate the stored runs against the claims of this summary file; run nothing")
    args = parser.parse_args(argv)
    out = Path(args.out or ROOT / "results" / "claims" / f"{args.notebook}.json")
    if args.rebound_from:
        return _rebound(out, Path(args.rebound_from))
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    bad = [k for k in kernels if k not in ("default", "alt")]
    if bad:
        parser.error(f"unknown kernel setting(s) {bad}; allowed: default, alt")
    described, variants = PRESETS[args.notebook]
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: must be >= 1")
    tasks = [(params, k) for params in variants for k in kernels]
    with tempfile.TemporaryDirectory(prefix="fts_claims_") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_once, args.notebook, params, k, Path(tmp)) for params, k in tasks]
        for future in as_completed(futures):
            run = future.result()
            failed = [c["key"] for c in run["claims"] if not c["holds"]]
            print(f"{args.notebook} {run['params']} [{run['kernels']}] {run['seconds']} s: "
                  f"{len(run['claims']) - len(failed)}/{len(run['claims'])} claims hold"
                  + (f"; fail: {failed}" if failed else ""), flush=True)
        runs = [f.result() for f in futures]  # in the preset's order, whatever finished first
    result = aggregate(args.notebook, described, runs, kernels)
    _write(out, result)
    return 0


def _write(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp_out, out)
    for key, entry in result["claims"].items():
        print(f"{entry['held']:>3}/{entry['tried']:<3} min margin {entry['min_margin']:.4g}  {key}: {entry['text']}")


def _rebound(out: Path, summary: Path) -> int:
    """The stored runs' values against the bounds (and texts) of the claims in ``summary``."""
    from fts_core.chapters.claims import Claim

    old = json.loads(out.read_text())
    current = {c["key"]: c for c in json.loads(summary.read_text())["claims"]}
    missing = sorted(set(current) - {c["key"] for run in old["runs"] for c in run["claims"]})
    if missing:
        raise SystemExit(f"no stored values for claim(s) {missing}: measure them (run without --rebound-from)")
    for run in old["runs"]:
        run["claims"] = [Claim(**{**{k: current[c["key"]][k] for k in ("key", "text", "bound", "direction", "unit")},
                                  "value": c["value"]}).to_dict() for c in run["claims"] if c["key"] in current]
    kernels = list(old["kernel_settings"])
    described = old["runs_described"].rsplit(" x ", 1)[0]
    _write(out, aggregate(old["notebook"], described, old["runs"], kernels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
