#!/usr/bin/env python3
"""One ratio table from a device run: `hst bench` results (results.jsonl) and the PyTorch anchor (anchor.jsonl).

Usage: ratios.py OUTDIR   (writes OUTDIR/ratios.md and prints it)

Rows: every (config, backend) of results.jsonl with train and infer img/s, train/infer (target >= 1/4 on a GPU),
the backend against CUDA on the same config (target: WGPU within 2x), and voc-small against the PyTorch anchor
on the same device (target: burn-cuda train >= 1.0x). Missing measurements print as "n/a" with the reason.
Standard library only (the device machine's python is enough).
"""
import json
import os
import sys


def load(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                print(f"ratios.py: {path} line {n}: not JSON ({e}); skipped", file=sys.stderr)
    return rows


def fmt(x, digits=2, suffix=""):
    return "n/a" if x is None else f"{x:.{digits}f}{suffix}"


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    results = [r for r in load(os.path.join(out, "results.jsonl")) if r.get("kind", "bench") == "bench"]
    anchors = load(os.path.join(out, "anchor.jsonl"))
    anchor = anchors[-1] if anchors else None

    by_key = {(r["config"], r["backend"]): r for r in results}
    lines = [
        "| config | backend | train img/s | infer img/s | train / infer (≥ 0.25) | train vs cuda | "
        "train vs PyTorch anchor | infer vs PyTorch anchor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        train = r.get("train_images_per_second")
        infer = r.get("infer_images_per_second")
        per_infer = train / infer if train and infer else None
        cuda = by_key.get((r["config"], "cuda"))
        vs_cuda = train / cuda["train_images_per_second"] if cuda and train and r["backend"] != "cuda" else None
        vs_anchor_train = vs_anchor_infer = None
        if anchor and r["config"] == anchor.get("config"):
            if train and anchor.get("train_images_per_second"):
                vs_anchor_train = train / anchor["train_images_per_second"]
            if infer and anchor.get("infer_images_per_second"):
                vs_anchor_infer = infer / anchor["infer_images_per_second"]
        lines.append(
            f"| {r['config']} | {r['backend']} | {fmt(train, 1)} | {fmt(infer, 1)} | {fmt(per_infer)} | "
            f"{fmt(vs_cuda, 2, 'x')} | {fmt(vs_anchor_train, 2, 'x')} | {fmt(vs_anchor_infer, 2, 'x')} |"
        )
    if anchor:
        lines.append(
            f"| {anchor.get('config')} | {anchor.get('backend')} (torch {anchor.get('torch')}, "
            f"{anchor.get('device')}) | {fmt(anchor.get('train_images_per_second'), 1)} | "
            f"{fmt(anchor.get('infer_images_per_second'), 1)} | "
            f"{fmt((anchor.get('train_images_per_second') or 0) / anchor['infer_images_per_second'] if anchor.get('infer_images_per_second') else None)} | "
            "— | 1.00x | 1.00x |"
        )
    else:
        lines.append("\nPyTorch anchor: not measured (no anchor.jsonl: torch missing or the run failed; see run.log).")
    if not results:
        lines.append("\nhst bench: no result (see status.tsv and run.log).")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "ratios.md"), "w") as f:
        f.write(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
