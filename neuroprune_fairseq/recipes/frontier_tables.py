"""The markdown tables of the head-budget frontier (:mod:`.plot_frontier` draws the figure): every row,
the references (dense, dense-ft), the matched table per K (BLEU per test set, sparsity, structured share,
FLOPs, train time, generation speed; mean then each seed), the efficient-frontier points per BLEU
tolerance and NeuroPrune next to the nearest DSP point."""

METRICS = [("BLEU", "bleu", "{:.2f}"), ("sparsity %", "sparsity", "{:.2f}"),
           ("structured share % (zeros in removed structures)", "structured_share", "{:.1f}"),
           ("FLOPs ratio", "flops_ratio", "{:.3f}"), ("train s", "train_wall_s", "{:.0f}"),
           ("gen sent/s", "gen_sentences_per_s", "{:.1f}")]
CONTROLS = ("dense", "dense-ft")  # rows without a head budget: the references
ORDER = ["dense", "dense-ft", "neuroprune", "l1", "dsp-joint", "dsp-pipelined", "michel"]


def methods_of(rows):
    return sorted({r["method"] for r in rows}, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))


def k_rows(rows):
    return [r for r in rows if r.get("K") is not None and r["method"] not in CONTROLS]

def cell(vals, fmt):
    """One value, or ``mean (v1 / v2 ...)`` over seeds (ordered by seed)."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return ""
    if len(vals) == 1:
        return fmt.format(vals[0])
    return fmt.format(sum(vals) / len(vals)) + " (" + " / ".join(fmt.format(v) for v in vals) + ")"
def k_table(rows, title, key, fmt):
    """K per row, method per column; several seeds: mean (seed 1 / seed 2 ...)."""
    rs = k_rows(rows)
    if not rs:
        return ""
    ms = methods_of(rs)
    out = [f"**{title}**", "", "| K | " + " | ".join(ms) + " |", "|---|" + "---|" * len(ms)]
    for k in sorted({r["K"] for r in rs}, reverse=True):
        cells = []
        for m in ms:
            pts = sorted((r for r in rs if r["K"] == k and r["method"] == m), key=lambda r: r.get("seed") or 0)
            cells.append(cell([r.get(key) for r in pts], fmt))
        out.append(f"| {k} | " + " | ".join(cells) + " |")
    seeds = sorted({r.get("seed") or 1 for r in rs})
    return "\n".join(out) + ("\n\n(seeds " + ", ".join(map(str, seeds)) + ": mean, then each seed in order)" if len(seeds) > 1 else "")
def set_names(rows):
    """The test sets of rows with ``bleu_sets``, in their first row's order."""
    names = []
    for r in rows:
        for n in r.get("bleu_sets") or {}:
            if n not in names:
                names.append(n)
    return names
def matched_k_table(rows):
    metrics = list(METRICS)
    names = set_names(rows)
    if names:  # BLEU per test set (the first is the test split, "bleu")
        metrics[0] = (f"BLEU {names[0]}", "bleu", "{:.2f}")
        metrics[1:1] = [(f"BLEU {n}", f"bleu:{n}", "{:.2f}") for n in names[1:]]
    return "\n\n".join(t for t in (k_table(rows, title, key, fmt) for title, key, fmt in metrics) if t)
def reference(rows):
    """(name, BLEU, [BLEU per seed]) of the reference: dense-ft (mean over seeds) if present, else dense."""
    for m in ("dense-ft", "dense"):
        pts = [r["bleu"] for r in rows if r["method"] == m]
        if pts:
            return m, sum(pts) / len(pts), pts
    return "best", max(r["bleu"] for r in rows), []
def control_table(rows):
    """The references, one line per seed, BLEU per test set."""
    names = set_names(rows)
    cs = sorted((r for r in rows if r["method"] in CONTROLS), key=lambda r: (r["method"], r.get("seed") or 0))
    if not cs:
        return ""
    head = ["method", "seed", "epochs"] + ([f"BLEU {n}" for n in names] if names else ["BLEU"]) + ["sparsity %", "heads"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in cs:
        b = [f"{r['bleu_sets'][n]:.2f}" if n in (r.get("bleu_sets") or {}) else "" for n in names] if names else [f"{r['bleu']:.2f}"]
        out.append("| " + " | ".join([r["method"], str(r.get("seed", "")), str(r.get("epochs", "")), *b,
                                      f"{r.get('sparsity') or 0:.2f}", str(r["heads_kept"])]) + " |")
    return "\n".join(out)
def frontier_points(rows, ref_bleu, tol):
    """Points within ``tol`` BLEU of ``ref_bleu`` with a sparsity: {method: [row, ...]}, by heads."""
    out = {}
    for r in rows:
        if r["bleu"] >= ref_bleu - tol and r.get("sparsity") is not None:
            out.setdefault(r["method"], []).append(r)
    return {m: sorted(v, key=lambda r: (r["heads_kept"], -r["sparsity"])) for m, v in out.items()}
def frontier_table(rows, ref_bleu, tol, ref_name="dense"):
    pts = frontier_points(rows, ref_bleu, tol)
    out = [f"**within {tol:g} BLEU of {ref_name} ({ref_bleu:.2f})**", "", "| method | K | seed | heads | sparsity % | BLEU | Pareto |",
           "|---|---|---|---|---|---|---|"]
    for m in methods_of([r for v in pts.values() for r in v]):
        front = set(upper_frontier([(r["heads_kept"], r["sparsity"]) for r in pts[m]]))
        for r in pts[m]:
            out.append(f"| {m} | {r.get('K', '')} | {r.get('seed', '')} | {r['heads_kept']} | {r['sparsity']:.2f} | "
                       f"{r['bleu']:.2f} | {'*' if (r['heads_kept'], r['sparsity']) in front else ''} |")
    if len(out) == 4:
        out.append("| (none) | | | | | | |")
    return "\n".join(out)
def upper_frontier(pts):
    """Points not dominated in (fewer-or-equal heads, higher-or-equal y), sorted by heads."""
    best = []
    for x, y in sorted(pts, key=lambda p: (p[0], -p[1])):
        if not best or y > best[-1][1]:
            best.append((x, y))
    return best
def table(rows):
    cols = ["method", "alpha", "beta", "theta", "K", "seed", "epochs", "bleu", "heads_kept", "sparsity", "flops_ratio", "params",
            "train_wall_s", "gen_sentences_per_s", "n_hyps", "n_refs"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r["method"] != "dense", r["method"], -(r.get("bleu") or 0))):
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                v = f"{v:.4g}" if c in ("alpha", "beta", "theta") else f"{v:.3f}" if c == "flops_ratio" else f"{v:.2f}"
            cells.append("" if v is None else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
def matched_table(rows, a="neuroprune", b=None):
    """Method ``a``'s points next to method ``b``'s point with the nearest head count (``b``:
    the first DSP variant present: dsp-joint, dsp, dsp-pipelined, dsp-pipelined-noft)."""
    if b is None:
        present = {r["method"] for r in rows}
        b = next((m for m in ("dsp-joint", "dsp", "dsp-pipelined", "dsp-pipelined-noft") if m in present), "dsp")
    ra = sorted((r for r in rows if r["method"] == a), key=lambda r: -r["heads_kept"])
    rb = [r for r in rows if r["method"] == b]
    if not ra or not rb:
        return ""
    paired = [("sparsity %", "sparsity"), ("train s", "train_wall_s"), ("gen sent/s", "gen_sentences_per_s")]
    head = [f"{a} heads", f"{a} BLEU", f"{b} BLEU", f"{b} heads"] + [f"{m} {label}" for label, _ in paired for m in (a, b)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(v):
        return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    for r in ra:
        m = min(rb, key=lambda x: (abs(x["heads_kept"] - r["heads_kept"]), -x["bleu"]))
        cells = [r["heads_kept"], r["bleu"], m["bleu"], m["heads_kept"]]
        for _, k in paired:
            cells += [r.get(k), m.get(k)]
        out.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(out)
