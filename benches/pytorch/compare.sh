#!/usr/bin/env bash
# Rust `hst bench --config voc-small` against the PyTorch anchor (hst_anchor.py), alternately, N rounds each,
# then one table: both rows per round, the Rust/PyTorch ratios per round and of the medians.
#
#   bash benches/pytorch/compare.sh [--rounds N] [--steps N] [--warmup N] [--threads N] [--backend B]
#                                   [--data] [--out DIR] [-- ARGS FOR hst_anchor.py]
#
#   --rounds N    rounds (default 2); each round runs the Rust bench, then the anchor
#   --steps N     timed steps of both (default: their own, 5)
#   --warmup N    warm-up steps of both (default: their own, 2)
#   --threads N   threads of both: RAYON_NUM_THREADS for hst, torch.set_num_threads for the anchor
#                 (default: every core, both sides)
#   --backend B   hst's --backend (default flex)
#   --data        let hst also measure data preparation (off by default: it is not part of train img/s and
#                 the anchor has no data pipeline)
#   --out DIR     where the raw results go (default target/pytorch-compare/<date-time>)
#
# Environment: HST_BIN (default target/release/hst; build it with `cargo build --release` first),
# HST_TORCH_VENV (default target/pytorch-venv; created by setup.sh on first use).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/benches/pytorch"
HST_BIN="${HST_BIN:-$ROOT/target/release/hst}"
VENV="${HST_TORCH_VENV:-$ROOT/target/pytorch-venv}"

rounds=2 steps="" warmup="" threads="" backend=flex data=0 out=""
anchor_extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --backend) backend="$2"; shift 2 ;;
        --data) data=1; shift ;;
        --out) out="$2"; shift 2 ;;
        --) shift; anchor_extra=("$@"); break ;;
        -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "compare: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "compare: --rounds must be a positive integer" >&2; exit 2; }

if [ ! -x "$HST_BIN" ]; then
    echo "compare: no hst binary at $HST_BIN (build it with 'cargo build --release', or set HST_BIN)" >&2
    exit 1
fi
bash "$HERE/setup.sh"
PY="$VENV/bin/python"

out="${out:-$ROOT/target/pytorch-compare/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
rust_jsonl="$out/rust.jsonl" torch_jsonl="$out/pytorch.jsonl"
: >"$rust_jsonl"
: >"$torch_jsonl"

# hst bench's machine-readable output is `--json FILE` (appends one JSON line per configuration). A binary
# without it still prints its Markdown row on stdout; the table script then parses that row instead.
rust_args=(--backend "$backend" bench --config voc-small)
has_json=0
if "$HST_BIN" bench --help 2>/dev/null | grep -q -- '--json'; then has_json=1; fi
[ -n "$steps" ] && rust_args+=(--steps "$steps")
[ -n "$warmup" ] && rust_args+=(--warmup "$warmup")
if [ "$data" = 0 ] && "$HST_BIN" bench --help 2>/dev/null | grep -q -- '--no-data'; then rust_args+=(--no-data); fi

anchor_args=(--json)
[ -n "$steps" ] && anchor_args+=(--steps "$steps")
[ -n "$warmup" ] && anchor_args+=(--warmup "$warmup")
[ -n "$threads" ] && anchor_args+=(--threads "$threads")
anchor_args+=("${anchor_extra[@]}")

load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
echo "compare: $rounds round(s), results in $out; load average now $load" >&2
case "$load" in
    0.[0-4]*|'?') ;;
    *) echo "compare: warning: the machine is busy (load $load): both sides slow down, the ratio drifts" >&2 ;;
esac

for ((r = 1; r <= rounds; r++)); do
    echo "compare: round $r/$rounds: hst ${rust_args[*]}" >&2
    rust_md="$out/rust-round$r.md"
    if [ "$has_json" = 1 ]; then
        round_json="$out/rust-round$r.jsonl"
        : >"$round_json"
        env ${threads:+RAYON_NUM_THREADS=$threads} "$HST_BIN" "${rust_args[@]}" --json "$round_json" | tee "$rust_md" >&2
        if [ -s "$round_json" ]; then
            tail -n 1 "$round_json" >>"$rust_jsonl"
        else
            echo "{\"markdown_file\": \"$rust_md\"}" >>"$rust_jsonl"
        fi
    else
        env ${threads:+RAYON_NUM_THREADS=$threads} "$HST_BIN" "${rust_args[@]}" | tee "$rust_md" >&2
        echo "{\"markdown_file\": \"$rust_md\"}" >>"$rust_jsonl"
    fi
    echo "compare: round $r/$rounds: hst_anchor.py ${anchor_args[*]}" >&2
    "$PY" "$HERE/hst_anchor.py" "${anchor_args[@]}" >>"$torch_jsonl"
done

python3 - "$rust_jsonl" "$torch_jsonl" "$out/table.md" <<'PY'
import json, re, statistics, sys

rust_path, torch_path, table_path = sys.argv[1:4]

def parse_bytes(text):
    m = re.match(r"\s*([\d.]+)\s*(GiB|MiB)", text or "")
    if not m:
        return None
    return float(m.group(1)) * (1 << (30 if m.group(2) == "GiB" else 20))

def from_markdown(path):
    """The last data row of `hst bench`'s Markdown table (the columns of BenchResult::markdown_row)."""
    rows = [l for l in open(path) if l.startswith("| ") and not l.startswith("| config") and "---" not in l]
    cells = [c.strip() for c in rows[-1].strip().strip("|").split("|")]
    num = lambda s: float(s) if re.match(r"^[\d.]+$", s) else None
    return {"backend": cells[1], "train_images_per_second": num(cells[7]), "infer_images_per_second": num(cells[8]),
            "phases": {"forward": num(cells[10]), "loss": num(cells[11]), "backward": num(cells[12]),
                       "optimizer": num(cells[13])},
            "host_peak_rss_bytes": parse_bytes(cells[15]), "machine": {}}

def load(path):
    out = []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        obj = json.loads(line)
        out.append(from_markdown(obj["markdown_file"]) if "markdown_file" in obj else obj)
    return out

rust, torch = load(rust_path), load(torch_path)

def fmt(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}"

def rss(v):
    if v is None:
        return "—"
    return f"{v / (1 << 30):.2f} GiB" if v >= (1 << 30) else f"{v / (1 << 20):.0f} MiB"

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

def side(r, name):
    label = name
    if name == "pytorch":
        label = f"pytorch {r.get('torch', '')} ({r.get('threads', '?')} threads)".replace("  ", " ")
    else:
        label = f"rust {r.get('backend', '')}".strip()
    load = (r.get("machine") or {}).get("load_average")
    return label + (f", load {load:.1f}" if load is not None else "")

lines = ["| round | side | train img/s | infer img/s | forward s | loss s | backward s | optim s | host peak RSS |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
ratios = []
for i, (a, b) in enumerate(zip(rust, torch), 1):
    for r, name in ((a, "rust"), (b, "pytorch")):
        p = r.get("phases", {})
        lines.append(f"| {i} | {side(r, name)} | {fmt(r.get('train_images_per_second'))} | "
                     f"{fmt(r.get('infer_images_per_second'))} | {fmt(p.get('forward'), 3)} | {fmt(p.get('loss'), 3)} | "
                     f"{fmt(p.get('backward'), 3)} | {fmt(p.get('optimizer'), 3)} | {rss(r.get('host_peak_rss_bytes'))}"
                     + (f" (start {rss(r['host_rss_start_bytes'])})" if r.get("host_rss_start_bytes") else "") + " |")
    tr = ratio(a.get("train_images_per_second"), b.get("train_images_per_second"))
    inf = ratio(a.get("infer_images_per_second"), b.get("infer_images_per_second"))
    ratios.append((tr, inf))
    lines.append(f"| {i} | **rust / pytorch** | **{fmt(tr)}×** | **{fmt(inf)}×** | "
                 f"{fmt(ratio(b['phases'].get('forward'), a['phases'].get('forward')))}× | "
                 f"{fmt(ratio(b['phases'].get('loss'), a['phases'].get('loss')))}× | "
                 f"{fmt(ratio(b['phases'].get('backward'), a['phases'].get('backward')))}× | "
                 f"{fmt(ratio(b['phases'].get('optimizer'), a['phases'].get('optimizer')))}× | |")

def med(rows, key, sub=None):
    vals = [(r.get(key) or {}).get(sub) if sub else r.get(key) for r in rows]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

mr = {k: med(rust, k) for k in ("train_images_per_second", "infer_images_per_second", "host_peak_rss_bytes")}
mt = {k: med(torch, k) for k in ("train_images_per_second", "infer_images_per_second", "host_peak_rss_bytes")}
phase_r = {k: med(rust, "phases", k) for k in ("forward", "loss", "backward", "optimizer")}
phase_t = {k: med(torch, "phases", k) for k in ("forward", "loss", "backward", "optimizer")}
for name, m, ph in (("rust", mr, phase_r), ("pytorch", mt, phase_t)):
    lines.append(f"| median | {name} | {fmt(m['train_images_per_second'])} | {fmt(m['infer_images_per_second'])} | "
                 f"{fmt(ph['forward'], 3)} | {fmt(ph['loss'], 3)} | {fmt(ph['backward'], 3)} | "
                 f"{fmt(ph['optimizer'], 3)} | {rss(m['host_peak_rss_bytes'])} |")
lines.append(f"| median | **rust / pytorch** | **{fmt(ratio(mr['train_images_per_second'], mt['train_images_per_second']))}×** | "
             f"**{fmt(ratio(mr['infer_images_per_second'], mt['infer_images_per_second']))}×** | "
             + " | ".join(f"{fmt(ratio(phase_t[k], phase_r[k]))}×" for k in ("forward", "loss", "backward", "optimizer"))
             + " | |")
per_round = ", ".join(f"{fmt(t)}×/{fmt(i)}×" for t, i in ratios)
lines.append("")
lines.append(f"Ratios > 1: Rust faster (img/s ratio rust/pytorch; phase columns pytorch s / rust s). "
             f"Per round train/infer: {per_round}. RSS 'start': resident before the model was built (torch's "
             f"libraries).")
text = "\n".join(lines)
open(table_path, "w").write(text + "\n")
print(text)
PY
