"""Pictures of a clearing month for a monthly briefing: a province × province heat map of fund flows
and a bar chart of net positions (PNG, Chinese province names).

Chinese needs a CJK font: the Noto Sans CJK collection (Debian package
``fonts-noto-cjk``, installed by ``make setup``).  It is registered with
matplotlib explicitly from its file and used as the only family, so a
missing glyph is a warning (an error in the tests), never a silent box.
``YIDI_CJK_FONT`` may name another file of the collection.
"""
from __future__ import annotations

import os

CJK_FONT_FILES = (
    os.environ.get("YIDI_CJK_FONT", ""),
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",   # Debian fonts-noto-cjk
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",        # other distributions
)
CJK_FAMILY = "Noto Sans CJK SC"   # the simplified-Chinese face of the collection
YUAN_PER_WAN = 10_000             # charts show 万元 (10,000 yuan)


def cjk_font() -> str:
    """The CJK font file, registered with matplotlib; SystemExit saying how to install it if there is none."""
    from matplotlib import font_manager

    for path in CJK_FONT_FILES:
        if path and os.path.exists(path):
            font_manager.fontManager.addfont(path)
            return path
    raise SystemExit("no CJK font for Chinese province names: install the Debian package fonts-noto-cjk "
                     "(make setup does), or set YIDI_CJK_FONT to a Noto Sans CJK .ttc/.otf file")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    cjk_font()
    from matplotlib import pyplot

    pyplot.rcParams["font.family"] = [CJK_FAMILY]
    pyplot.rcParams["axes.unicode_minus"] = False   # the CJK font's minus, not U+2212
    return pyplot


def _wan(fen: int) -> float:
    """Fen as 万元, for plotting only (amounts in tables stay exact integers)."""
    return fen / 100 / YUAN_PER_WAN


def _short(name: str) -> str:
    for suffix in ("维吾尔自治区", "壮族自治区", "回族自治区", "特别行政区", "自治区", "省", "市"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def draw_month(report, out_dir: str) -> list[str]:
    """Both pictures of a clearing report into out_dir; their paths."""
    os.makedirs(out_dir, exist_ok=True)
    return [heat_map(report, os.path.join(out_dir, f"clearing-{report.month}-flows.png")),
            net_bars(report, os.path.join(out_dir, f"clearing-{report.month}-net.png"))]


ANNOTATED_FLOWS = 12     # the largest flows carry their value in the heat map


def flow_grid(report) -> tuple[list[str], list[str], list[list[float | None]]]:
    """Insured provinces (rows), treatment provinces (columns) and the fund flow of each cell in 万元; None
    where nothing flowed and on the diagonal (a province does not pay itself)."""
    insured = sorted({p.insured_province for p in report.pairs})
    treatment = sorted({p.treatment_province for p in report.pairs})
    grid: list[list[float | None]] = [[None] * len(treatment) for _ in insured]
    for p in report.pairs:
        fen = p.totals.fund_pay_sumamt + p.totals.acct_pay_sumamt
        if fen > 0 and p.insured_province != p.treatment_province:
            grid[insured.index(p.insured_province)][treatment.index(p.treatment_province)] = _wan(fen)
    return insured, treatment, grid


def heat_map(report, path: str) -> str:
    """Fund paid, insured province (rows, who pays) × treatment province (columns, who is paid).

    The colour scale is logarithmic, so a ¥500 flow and a ¥5,000,000 one are both told from each other and
    from none; cells with no flow and the diagonal are left blank (grey); the largest flows carry their value.
    """
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    insured, treatment, grid = flow_grid(report)
    values = [v for row in grid for v in row if v is not None]
    names = report.province_names
    fig, ax = plt.subplots(figsize=(max(6, 0.42 * len(treatment) + 3), max(5, 0.36 * len(insured) + 2.5)), dpi=110)
    ax.set_facecolor("#e6e6e6")     # blank cells: nothing flowed (or the diagonal)
    masked = [[float("nan") if v is None else v for v in row] for row in grid]
    norm = LogNorm(vmin=min(values), vmax=max(values)) if values and min(values) < max(values) else None
    image = ax.imshow(masked, cmap="viridis", aspect="auto", norm=norm)
    for value, i, j in sorted(((v, i, j) for i, row in enumerate(grid) for j, v in enumerate(row) if v is not None),
                              reverse=True)[:ANNOTATED_FLOWS]:
        ax.text(j, i, f"{value:,.0f}" if value >= 10 else f"{value:.1f}", ha="center", va="center", fontsize=6,
                color="black" if norm is None or norm(value) > 0.6 else "white")
    ax.set_xticks(range(len(treatment)), [_short(names.get(p, p)) for p in treatment], rotation=90)
    ax.set_yticks(range(len(insured)), [_short(names.get(p, p)) for p in insured])
    ax.set_xlabel("就医地（收款）")
    ax.set_ylabel("参保地（付款）")
    ax.set_title(f"{report.month // 100}年{report.month % 100}月 跨省直接结算资金流向（万元，对数色标；"
                 f"灰色：无流量或本省；标注最大 {ANNOTATED_FLOWS} 项）", fontsize=9)
    fig.colorbar(image, ax=ax, label="基金与个人账户支付（万元，对数）")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def net_bars(report, path: str) -> str:
    """Net position per province (receivable as treatment place − payable as insured place, fund and accounts),
    largest first, each bar with its value."""
    plt = _pyplot()
    nets = sorted(report.net_positions, key=lambda n: n.net_fen, reverse=True)
    names = report.province_names
    fig, ax = plt.subplots(figsize=(max(6, 0.38 * len(nets) + 2), 5), dpi=110)
    values = [_wan(n.net_fen) for n in nets]
    bars = ax.bar(range(len(nets)), values, color=["#c0392b" if v < 0 else "#2471a3" for v in values])
    ax.bar_label(bars, labels=[f"{v:,.0f}" if abs(v) >= 10 else f"{v:.1f}" for v in values], fontsize=6, padding=2,
                 rotation=90)
    ax.margins(y=0.15)
    ax.set_xticks(range(len(nets)), [_short(names.get(n.province, n.province)) for n in nets], rotation=90)
    ax.axhline(0, color="#333333", linewidth=0.8)
    ax.set_ylabel("净头寸（万元）：应收 − 应付")
    ax.set_title(f"{report.month // 100}年{report.month % 100}月 各省清算净头寸（含个人账户支付，合计为零）")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
