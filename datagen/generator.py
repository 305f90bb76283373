"""Realistic synthetic national reference data for Yidi (SPEC §3 JSONL files).

``generate(out_dir, persons, seed, institutions)`` writes ``regions.jsonl``,
``institutions.jsonl``, ``catalog.jsonl``, ``policies.jsonl``,
``persons.jsonl``, ``filings.jsonl`` and ``manifest.json``.  The output is a
pure function of ``(seed, persons, institutions)``: every random choice comes
from ``random.Random`` streams seeded by strings (hashed with SHA-512 by the
standard library, never by ``hash()``), every table is iterated in a fixed
order, and no clock is read.  ``as_of`` (20261122) is the reference date the
filings are made valid around.

Shape of the data
-----------------
* regions: the 31 provinces, their prefecture-level cities (real GB/T 2260
  codes, see ``geo.py``) and 44 districts used as insured places.  The four
  municipalities are represented by their ``xx0100`` code.
* institutions: ``institutions`` rows (default 36,000) apportioned by
  population; codes are ``H``/``C``/``P`` + the city's 6-digit admdvs + a
  5-digit serial (12 characters); every institution's ``admdvs`` is a city
  code.  ~7% of hospitals are not open for inpatient and/or outpatient direct
  settlement; pharmacies are outpatient only.
* catalog: ~5,500 base items (drugs, treatments, services, materials) times
  31 provinces, with provincial differences in class, ``selfpay_bp`` and
  ``price_cap_fen``.
* policies: every city code x {310, 390} x {20250101, 20260101}.
* persons: ``persons`` filed persons, weighted towards the big sending
  provinces; valid, unique GB 11643 certnos.
* filings: one active per person, ~4% with a second active one, ~2% with an
  older revoked long-term one (revoked the day before the current one began).  Retirees go to
  海南/广东/云南 and to their children's cities,
  workers to the big coastal cities, referrals to the top hospitals of
  北京/上海/广州.

Stable demo entities (identical for every seed and size)
---------------------------------------------------------
Institutions (all level 3 hospitals open for inpatient and outpatient unless
noted):

* ``H11010000001`` 北京协和医院 (110100 北京) — the serials 00001.. of 110100,
  310100, 440100 and a few capitals are the famous referral hospitals
  (``FAMOUS_HOSPITALS``), e.g. ``H31010000001`` 复旦大学附属中山医院,
  ``H44010000001`` 中山大学附属第一医院, ``H51010000001`` 四川大学华西医院.
* ``P46010000001`` 海南椰岛大药房(海口龙华店), a pharmacy in 海口 (level 1,
  outpatient only).
* ``C46020000001`` 三亚市河西社区卫生服务中心, a clinic in 三亚 (level 1,
  outpatient only).
* ``H21010000001`` 中国医科大学附属第一医院 (沈阳), ``H46010000001`` 海南省人民医院 (海口),
  ``H46020000001`` 三亚市人民医院, ``H53010000001`` 昆明医科大学第一附属医院.

Persons (``DEMO_PERSONS``), each with one active filing:

* ``2100000000000001`` 王建国, retired employee (310) insured in 210102 沈阳市和平区, a diabetic (M01600)
  with ¥1,500 in his personal account,
  filing ``BA210000000001`` retired_relocation to 460000 (all of 海南), open-ended.
* ``4100000000000002`` 李娜, employee in service insured in 410105 郑州市金水区,
  filing ``BA410000000002`` stationed_work to 440300 深圳, open-ended.
* ``2300000000000003`` 张伟, employee in service insured in 230100 哈尔滨, assistance
  true, filing ``BA230000000003`` referral to 110100 naming ``H11010000001`` 北京协和医院,
  20261101..20270131.
* ``5100000000000004`` 陈秀英, resident (390) insured in 510107 成都市武侯区,
  filing ``BA510000000004`` other_temporary to 460100 海口, 20261101..20270430.
* ``2200000000000005`` 刘淑兰, retired employee insured in 220100 长春, status
  suspended, filing ``BA220000000005`` long_term_residence to 530100 昆明, open-ended.

Random persons have psn_no = province (2 digits) + a 14-digit serial whose
first digit is never 0, so they never collide with the demo persons; their
card numbers never start with ``A`` (reserved for the demo persons).
"""

from __future__ import annotations

import datetime
import math
import os
import random
from typing import Callable

import orjson

from core import TEMPORARY_KINDS, certno_check_char, province_code

from . import geo

AS_OF = 20261122
GENERATOR = "yidi-datagen"
VERSION = 1
DEFAULT_INSTITUTIONS = 36_000
CHUNK_ROWS = 100_000

Progress = Callable[[str, int, int], None]


def _rng(seed: int, stage: str) -> random.Random:
    return random.Random(f"yidi-datagen:{seed}:{stage}")


def _dumps(obj) -> bytes:
    return orjson.dumps(obj) + b"\n"


def _cum(weights) -> list[float]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


# ---------------------------------------------------------------------------
# Dates

_DAY0 = datetime.date(2019, 1, 1).toordinal()
_DATES: list[int] = []
for _i in range(datetime.date(2031, 1, 1).toordinal() - _DAY0):
    _d = datetime.date.fromordinal(_DAY0 + _i)
    _DATES.append(_d.year * 10000 + _d.month * 100 + _d.day)
_DAY_INDEX = {d: i for i, d in enumerate(_DATES)}
AS_OF_DAY = _DAY_INDEX[AS_OF]
Y2026_DAY = _DAY_INDEX[20260101]


def _birth_table(first: datetime.date, last: datetime.date) -> list[tuple[str, int]]:
    """(yyyymmdd, its int value) per day."""
    out = []
    for o in range(first.toordinal(), last.toordinal() + 1):
        s = datetime.date.fromordinal(o).strftime("%Y%m%d")
        out.append((s, int(s)))
    return out


# ---------------------------------------------------------------------------
# Regions

def _region_rows() -> list[tuple[str, str]]:
    rows = []
    for code, name, *_ in geo.PROVINCES:
        rows.append((code, name))
        for city, cname in geo.CITIES[code]:
            rows.append((city, cname))
            for dist, dname in geo.DISTRICTS.get(city, ()):
                rows.append((dist, dname))
    return rows


# ---------------------------------------------------------------------------
# Institutions

FAMOUS_HOSPITALS: dict[str, list[str]] = {
    "110100": ["北京协和医院", "中国人民解放军总医院", "北京大学第一医院", "北京大学人民医院",
               "北京大学第三医院", "中国医学科学院阜外医院", "中国医学科学院肿瘤医院",
               "首都医科大学附属北京天坛医院", "首都医科大学宣武医院", "首都医科大学附属北京安贞医院",
               "首都医科大学附属北京同仁医院", "首都医科大学附属北京儿童医院", "北京积水潭医院",
               "中日友好医院"],
    "310100": ["复旦大学附属中山医院", "复旦大学附属华山医院", "上海交通大学医学院附属瑞金医院",
               "上海交通大学医学院附属仁济医院", "复旦大学附属肿瘤医院", "上海市第六人民医院",
               "上海市第一人民医院", "上海交通大学医学院附属新华医院", "复旦大学附属儿科医院",
               "海军军医大学第一附属医院"],
    "440100": ["中山大学附属第一医院", "中山大学孙逸仙纪念医院", "中山大学肿瘤防治中心",
               "广东省人民医院", "南方医科大学南方医院", "广州医科大学附属第一医院",
               "中山大学中山眼科中心", "广东省中医院", "广州市妇女儿童医疗中心", "广州市第一人民医院"],
    "510100": ["四川大学华西医院", "四川省人民医院"],
    "330100": ["浙江大学医学院附属第一医院", "浙江大学医学院附属第二医院"],
    "420100": ["华中科技大学同济医学院附属同济医院", "华中科技大学同济医学院附属协和医院"],
    "430100": ["中南大学湘雅医院"],
    "610100": ["空军军医大学西京医院"],
    "410100": ["郑州大学第一附属医院"],
    "320100": ["江苏省人民医院"],
    "370100": ["山东大学齐鲁医院"],
    "210100": ["中国医科大学附属第一医院", "中国医科大学附属盛京医院"],
    "120100": ["天津医科大学总医院"],
    "500100": ["重庆医科大学附属第一医院"],
    "460100": ["海南省人民医院"],
    "460200": ["三亚市人民医院"],
    "530100": ["昆明医科大学第一附属医院"],
}
FIXED_OTHERS = [
    ("P46010000001", "海南椰岛大药房(海口龙华店)", "460100", "pharmacy", 1, False, True),
    ("C46020000001", "三亚市河西社区卫生服务中心", "460200", "clinic", 1, False, True),
]
# Referral targets: weight of each city's famous hospitals as a whole.
REFERRAL_CITY_WEIGHT = {
    "110100": 45, "310100": 30, "440100": 12, "510100": 3, "330100": 2, "420100": 2,
    "430100": 1.5, "610100": 1, "410100": 1, "320100": 1, "370100": 0.8,
    "210100": 0.4, "120100": 0.3,
}

PLACE_WORDS = [
    "东城", "西城", "南湖", "北湖", "新华", "和平", "长安", "建设", "解放", "红旗", "中山", "滨江",
    "江北", "河西", "城南", "城北", "高新", "东湖", "西湖", "青山", "金山", "银河", "光明", "幸福",
    "朝阳", "振兴", "兴华", "新城", "华山", "龙泉", "金桥", "龙华", "桃源", "望江", "锦绣", "铁路",
    "矿务局", "电力", "纺织", "石化", "钢铁", "胜利", "团结", "文化", "永安", "太平", "万寿", "凤凰",
    "白云", "天河", "黄河", "长江", "珠江", "松花江", "泰山", "紫金", "春华", "秋实", "东风", "前进",
]
HOSPITAL_L3 = ["第一人民医院", "中心医院", "人民医院", "中医医院", "第二人民医院", "妇幼保健院",
               "儿童医院", "肿瘤医院", "第三人民医院", "传染病医院", "精神卫生中心", "口腔医院"]
HOSPITAL_SPECIAL = ["骨科医院", "眼科医院", "口腔医院", "中西医结合医院", "妇产医院", "康复医院",
                    "心血管病医院", "皮肤病医院", "老年病医院", "胸科医院"]
PHARMACY_CHAINS = ["老百姓大药房", "益丰大药房", "大参林", "一心堂", "国大药房", "海王星辰",
                   "漱玉平民大药房", "同仁堂药店", "九州通大药房", "健之佳", "高济医药", "本地平价大药房"]
CN_NUM = "一二三四五六七八九十"


def _cn_ordinal(n: int) -> str:
    if n <= 10:
        return CN_NUM[n - 1]
    if n < 20:
        return "十" + CN_NUM[n - 11]
    t, u = divmod(n, 10)
    return CN_NUM[t - 1] + "十" + (CN_NUM[u - 1] if u else "")


def _apportion(total: int, weights: list[float]) -> list[int]:
    """Largest-remainder apportionment of ``total`` by ``weights`` (deterministic)."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    out = [int(x) for x in raw]
    rest = total - sum(out)
    order = sorted(range(len(weights)), key=lambda i: (-(raw[i] - out[i]), i))
    for i in order[:rest]:
        out[i] += 1
    return out


def _institutions(seed: int, total: int) -> list[tuple]:
    rng = _rng(seed, "institutions")
    rows: list[tuple] = []
    serial: dict[tuple[str, str], int] = {}
    used_names: set[str] = set()

    def next_code(prefix: str, city: str) -> str:
        n = serial.get((prefix, city), 0) + 1
        serial[(prefix, city)] = n
        return f"{prefix}{city}{n:05d}"

    for city, names in FAMOUS_HOSPITALS.items():
        for name in names:
            rows.append((next_code("H", city), name, city, "hospital", 3, True, True))
            used_names.add(name)
    for code, name, city, kind, level, inp, outp in FIXED_OTHERS:
        prefix = code[0]
        serial[(prefix, city)] = serial.get((prefix, city), 0) + 1
        assert code == f"{prefix}{city}{serial[(prefix, city)]:05d}"
        rows.append((code, name, city, kind, level, inp, outp))
        used_names.add(name)

    cities = [(c, p) for p, *_ in geo.PROVINCES for c, _n in geo.CITIES[p]]
    remaining = total - len(rows)
    if remaining < len(cities):
        raise ValueError(f"institutions must be at least {len(rows) + len(cities)}")
    pop = {p[0]: p[3] for p in geo.PROVINCES}
    # Hainan's hospitals serve far more visitors than its population suggests.
    pop["460000"] *= 1.8
    weights = []
    for c, p in cities:
        wsum = sum(geo.city_weight(x) for x, _n in geo.CITIES[p])
        weights.append(pop[p] * geo.city_weight(c) / wsum)
    counts = [1 + n for n in _apportion(remaining - len(cities), weights)]

    level3_next: dict[str, int] = {}
    for (city, _prov), n in zip(cities, counts, strict=True):
        disp = geo.city_display(city)
        short = geo.city_short(city)
        for _ in range(n):
            r = rng.random()
            if r < 0.38:
                kind, prefix = "hospital", "H"
                r2 = rng.random()
                level = 3 if r2 < 0.12 else (2 if r2 < 0.45 else 1)
            elif r < 0.60:
                kind, prefix, level = "clinic", "C", 1
            else:
                kind, prefix, level = "pharmacy", "P", 1
            name = _institution_name(rng, kind, level, city, disp, short, level3_next)
            base, k = name, 1
            while name in used_names:
                k += 1
                if kind == "hospital":
                    name = f"{base}第{_cn_ordinal(k)}分院"
                elif kind == "pharmacy":
                    name = base.replace("店)", f"{_cn_ordinal(k)}店)")
                else:
                    name = f"{base}({k})"
            used_names.add(name)
            if kind == "hospital":
                r3 = rng.random()
                inp = not (r3 < 0.045)
                outp = not (0.035 < r3 < 0.07)
            elif kind == "clinic":
                inp = rng.random() < 0.25
                outp = rng.random() < 0.96
            else:
                inp, outp = False, rng.random() < 0.95
            rows.append((next_code(prefix, city), name, city, kind, level, inp, outp))
    return rows


def _institution_name(rng, kind, level, city, disp, short, level3_next) -> str:
    word = PLACE_WORDS[int(rng.random() * len(PLACE_WORDS))]
    if kind == "pharmacy":
        chain = PHARMACY_CHAINS[int(rng.random() * len(PHARMACY_CHAINS))]
        return f"{chain}({short}{word}店)"
    if kind == "clinic":
        r = rng.random()
        if r < 0.45:
            return f"{disp}{word}社区卫生服务中心"
        if r < 0.70:
            return f"{disp}{word}镇卫生院"
        if r < 0.85:
            return f"{disp}{word}门诊部"
        return f"{short}{word}诊所"
    if level == 3:
        i = level3_next.get(city, 0)
        level3_next[city] = i + 1
        if i < len(HOSPITAL_L3):
            return f"{disp}{HOSPITAL_L3[i]}"
        return f"{disp}第{_cn_ordinal(i - len(HOSPITAL_L3) + 4)}人民医院"
    r = rng.random()
    if level == 2:
        if r < 0.35:
            return f"{disp}{word}医院"
        if r < 0.65:
            return f"{disp}{word}人民医院"
        if r < 0.8:
            return f"{disp}{word}中医院"
        return f"{disp}{HOSPITAL_SPECIAL[int(rng.random() * len(HOSPITAL_SPECIAL))]}"
    if r < 0.5:
        return f"{disp}{word}社区医院"
    if r < 0.8:
        return f"{disp}{word}医院"
    return f"{short}{word}镇中心卫生院"


# ---------------------------------------------------------------------------
# Catalogue

DRUGS = [  # (generic name, ATC level-4 code, forms)
    ("阿莫西林", "J01CA", "胶囊 片 颗粒"), ("头孢呋辛酯", "J01DC", "片"), ("头孢克肟", "J01DD", "胶囊 颗粒"),
    ("头孢曲松钠", "J01DD", "注射用"), ("左氧氟沙星", "J01MA", "片 注射液"), ("莫西沙星", "J01MA", "片 注射液"),
    ("阿奇霉素", "J01FA", "片 胶囊 注射用"), ("克拉霉素", "J01FA", "片"), ("哌拉西林他唑巴坦", "J01CR", "注射用"),
    ("美罗培南", "J01DH", "注射用"), ("万古霉素", "J01XA", "注射用"), ("奥司他韦", "J05AH", "胶囊 颗粒"),
    ("阿昔洛韦", "J05AB", "片 乳膏"), ("恩替卡韦", "J05AF", "片 分散片"), ("替诺福韦", "J05AF", "片"),
    ("氟康唑", "J02AC", "胶囊 注射液"), ("二甲双胍", "A10BA", "片 缓释片"), ("格列美脲", "A10BB", "片"),
    ("阿卡波糖", "A10BF", "片"), ("西格列汀", "A10BH", "片"), ("达格列净", "A10BK", "片"),
    ("恩格列净", "A10BK", "片"), ("门冬胰岛素", "A10AB", "注射液"), ("甘精胰岛素", "A10AE", "注射液"),
    ("氨氯地平", "C08CA", "片"), ("硝苯地平", "C08CA", "缓释片 控释片"), ("缬沙坦", "C09CA", "胶囊 片"),
    ("厄贝沙坦", "C09CA", "片"), ("氯沙坦钾", "C09CA", "片"), ("培哚普利", "C09AA", "片"),
    ("美托洛尔", "C07AB", "片 缓释片"), ("比索洛尔", "C07AB", "片"), ("氢氯噻嗪", "C03AA", "片"),
    ("呋塞米", "C03CA", "片 注射液"), ("螺内酯", "C03DA", "片"), ("阿托伐他汀钙", "C10AA", "片"),
    ("瑞舒伐他汀钙", "C10AA", "片"), ("辛伐他汀", "C10AA", "片"), ("依折麦布", "C10AX", "片"),
    ("阿司匹林", "B01AC", "肠溶片"), ("氯吡格雷", "B01AC", "片"), ("替格瑞洛", "B01AC", "片"),
    ("利伐沙班", "B01AF", "片"), ("华法林钠", "B01AA", "片"), ("低分子量肝素钙", "B01AB", "注射液"),
    ("单硝酸异山梨酯", "C01DA", "缓释片 片"), ("硝酸甘油", "C01DA", "片 注射液"), ("胺碘酮", "C01BD", "片 注射液"),
    ("地高辛", "C01AA", "片"), ("沙库巴曲缬沙坦", "C09DX", "片"), ("奥美拉唑", "A02BC", "肠溶胶囊 注射用"),
    ("泮托拉唑", "A02BC", "肠溶片 注射用"), ("雷贝拉唑钠", "A02BC", "肠溶片"), ("艾司奥美拉唑", "A02BC", "肠溶片 注射用"),
    ("铝碳酸镁", "A02AD", "咀嚼片"), ("莫沙必利", "A03FA", "片"), ("多潘立酮", "A03FA", "片"),
    ("蒙脱石", "A07BC", "散"), ("乳果糖", "A06AD", "口服溶液"), ("双歧杆菌三联活菌", "A07FA", "胶囊"),
    ("布洛芬", "M01AE", "缓释胶囊 片 混悬液"), ("双氯芬酸钠", "M01AB", "缓释片 凝胶"), ("塞来昔布", "M01AH", "胶囊"),
    ("对乙酰氨基酚", "N02BE", "片 混悬液"), ("曲马多", "N02AX", "缓释片"), ("吗啡", "N02AA", "注射液 缓释片"),
    ("加巴喷丁", "N03AX", "胶囊"), ("普瑞巴林", "N03AX", "胶囊"), ("丙戊酸钠", "N03AG", "缓释片 口服溶液"),
    ("左乙拉西坦", "N03AX", "片"), ("卡马西平", "N03AF", "片"), ("艾司唑仑", "N05CD", "片"),
    ("右佐匹克隆", "N05CF", "片"), ("奥氮平", "N05AH", "片"), ("喹硫平", "N05AH", "片"),
    ("利培酮", "N05AX", "片 口服溶液"), ("舍曲林", "N06AB", "片"), ("帕罗西汀", "N06AB", "片"),
    ("艾司西酞普兰", "N06AB", "片"), ("多奈哌齐", "N06DA", "片"), ("美金刚", "N06DX", "片"),
    ("多巴丝肼", "N04BA", "片"), ("普拉克索", "N04BC", "片"), ("甲钴胺", "B03BA", "片 注射液"),
    ("叶酸", "B03BB", "片"), ("琥珀酸亚铁", "B03AA", "片"), ("重组人促红素", "B03XA", "注射液"),
    ("左甲状腺素钠", "H03AA", "片"), ("甲巯咪唑", "H03BB", "片"), ("泼尼松", "H02AB", "片"),
    ("甲泼尼龙", "H02AB", "片 注射用"), ("地塞米松", "H02AB", "注射液 片"), ("氢化可的松", "H02AB", "注射液"),
    ("孟鲁司特钠", "R03DC", "片 咀嚼片"), ("布地奈德", "R03BA", "吸入气雾剂 混悬液"), ("沙美特罗替卡松", "R03AK", "吸入粉雾剂"),
    ("噻托溴铵", "R03BB", "吸入粉雾剂"), ("氨溴索", "R05CB", "片 口服溶液 注射液"), ("乙酰半胱氨酸", "R05CB", "泡腾片 颗粒"),
    ("氯雷他定", "R06AX", "片"), ("西替利嗪", "R06AE", "片"), ("坦索罗辛", "G04CA", "缓释胶囊"),
    ("非那雄胺", "G04CB", "片"), ("阿仑膦酸钠", "M05BA", "片"), ("碳酸钙D3", "A12AX", "片 咀嚼片"),
    ("骨化三醇", "A11CC", "软胶囊"), ("别嘌醇", "M04AA", "片"), ("非布司他", "M04AA", "片"),
    ("秋水仙碱", "M04AC", "片"), ("甲氨蝶呤", "L01BA", "片 注射液"), ("环磷酰胺", "L01AA", "注射用"),
    ("顺铂", "L01XA", "注射液"), ("奥沙利铂", "L01XA", "注射用"), ("紫杉醇", "L01CD", "注射液"),
    ("多西他赛", "L01CD", "注射液"), ("吉西他滨", "L01BC", "注射用"), ("卡培他滨", "L01BC", "片"),
    ("吉非替尼", "L01XE", "片"), ("奥希替尼", "L01XE", "片"), ("伊马替尼", "L01XE", "片"),
    ("来曲唑", "L02BG", "片"), ("他莫昔芬", "L02BA", "片"), ("曲妥珠单抗", "L01XC", "注射用"),
    ("贝伐珠单抗", "L01XC", "注射液"), ("利妥昔单抗", "L01XC", "注射液"), ("信迪利单抗", "L01XC", "注射液"),
    ("他克莫司", "L04AD", "胶囊"), ("环孢素", "L04AD", "软胶囊"), ("吗替麦考酚酯", "L04AA", "片"),
    ("阿达木单抗", "L04AB", "注射液"), ("氯化钠", "B05BB", "注射液"), ("葡萄糖", "B05BA", "注射液"),
    ("复方氯化钠", "B05BB", "注射液"), ("人血白蛋白", "B05AA", "注射液"), ("氯化钾", "B05XA", "缓释片 注射液"),
    ("维生素C", "A11GA", "片 注射液"), ("维生素B1", "A11DA", "片"), ("七叶皂苷钠", "C05CX", "注射用"),
    ("前列地尔", "C01EA", "注射液"), ("丁苯酞", "N07XX", "软胶囊 注射液"), ("依达拉奉", "N07XX", "注射液"),
    ("奥卡西平", "N03AF", "片"), ("托吡酯", "N03AX", "片"), ("拉莫三嗪", "N03AX", "片"),
    ("头孢他啶", "J01DD", "注射用"), ("头孢哌酮舒巴坦", "J01DD", "注射用"), ("利奈唑胺", "J01XX", "片 注射液"),
    ("更昔洛韦", "J05AB", "注射用"), ("伏立康唑", "J02AC", "片 注射用"), ("异烟肼", "J04AC", "片"),
    ("利福平", "J04AB", "胶囊"), ("吡嗪酰胺", "J04AK", "片"), ("乙胺丁醇", "J04AK", "片"),
    ("雷珠单抗", "S01LA", "注射液"), ("玻璃酸钠", "S01KA", "滴眼液 注射液"), ("左氧氟沙星", "S01AE", "滴眼液"),
    ("妥布霉素地塞米松", "S01CA", "滴眼液"), ("莫匹罗星", "D06AX", "软膏"), ("卤米松", "D07AC", "乳膏"),
]
PATENT_DRUGS = [
    "复方丹参滴丸", "连花清瘟胶囊", "六味地黄丸", "安宫牛黄丸", "板蓝根颗粒", "银翘解毒片", "云南白药胶囊",
    "速效救心丸", "血塞通软胶囊", "藿香正气水", "感冒清热颗粒", "牛黄解毒片", "丹参注射液", "通心络胶囊",
    "参松养心胶囊", "麝香保心丸", "小柴胡颗粒", "逍遥丸", "补中益气丸", "蒲地蓝消炎口服液", "双黄连口服液",
    "脑心通胶囊", "注射用血栓通", "清开灵注射液", "香砂养胃丸", "金水宝胶囊", "百令胶囊", "复方甘草片",
    "养血清脑颗粒", "稳心颗粒", "芪苈强心胶囊", "银杏叶片", "强力枇杷露", "急支糖浆", "金匮肾气丸",
    "乌鸡白凤丸", "益母草颗粒", "三七伤药片", "活血止痛胶囊", "颈复康颗粒", "仙灵骨葆胶囊", "疏风解毒胶囊",
]
STRENGTHS = ["5mg", "10mg", "20mg", "25mg", "40mg", "50mg", "0.1g", "0.125g", "0.25g", "0.5g", "1g",
             "2ml:10mg", "5ml:0.1g", "10ml:0.5g", "100ml:0.9g", "250ml:12.5g", "0.3g", "75mg", "150mg", "200mg"]
PACKS = ["×7片/盒", "×10片/盒", "×12粒/盒", "×14片/盒", "×24片/盒", "×28片/盒", "×30片/瓶",
         "×36粒/盒", "×48粒/盒", "×100片/瓶", "×1支", "×5支/盒", "×10袋/盒", "×1瓶"]
MANUFACTURERS = ["华北制药", "石药集团", "扬子江药业", "齐鲁制药", "恒瑞医药", "正大天晴", "科伦药业",
                 "华润双鹤", "辉瑞", "阿斯利康", "赛诺菲", "诺华", "默沙东", "拜耳", "罗氏", "复星医药",
                 "白云山", "哈药集团", "修正药业", "云南白药", "同仁堂", "东阳光", "信立泰", "海正药业",
                 "上海医药", "国药集团", "鲁南制药", "步长制药", "以岭药业", "天士力", "京新药业", "华海药业"]
SERVICES = [
    ("一般诊疗费", 0), ("普通门诊诊查费", 0), ("副主任医师诊查费", 0), ("主任医师诊查费", 0), ("急诊诊查费", 0),
    ("住院诊查费", 0), ("床位费", 1), ("重症监护", 0), ("特级护理", 0), ("Ⅰ级护理", 0), ("Ⅱ级护理", 0),
    ("Ⅲ级护理", 0), ("血常规检查", 0), ("尿常规检查", 0), ("粪便常规", 0), ("肝功能检测", 0), ("肾功能检测", 0),
    ("血脂四项", 0), ("血糖测定", 0), ("糖化血红蛋白测定", 0), ("凝血四项", 0), ("C反应蛋白测定", 0),
    ("降钙素原检测", 0), ("肿瘤标志物检测", 2), ("甲状腺功能检测", 0), ("乙肝五项定量", 0), ("血气分析", 0),
    ("心肌酶谱", 0), ("常规心电图检查", 0), ("动态心电图", 0), ("动态血压监测", 0), ("彩色多普勒超声检查", 3),
    ("普通B超检查", 3), ("X线摄影", 3), ("CT平扫", 3), ("CT增强扫描", 3), ("磁共振平扫", 3),
    ("磁共振增强扫描", 3), ("正电子发射计算机断层显像", 3), ("电子胃镜检查", 0), ("电子结肠镜检查", 0),
    ("支气管镜检查", 0), ("骨密度测定", 3), ("肺功能检查", 0), ("脑电图", 0), ("肌电图", 0),
    ("病理活检", 0), ("冰冻切片检查", 0), ("基因检测", 2), ("核酸检测", 0), ("输血", 0), ("救护车费", 0),
]
SERVICE_VARIANTS = {
    1: ["(普通病房三人间)", "(普通病房双人间)", "(单人间)", "(监护病房)", "(层流洁净病房)", "(急诊观察床)"],
    2: ["(单项)", "(三项)", "(五项)", "(十二项)", "(多项联合)"],
    3: ["(头部)", "(胸部)", "(腹部)", "(盆腔)", "(颈椎)", "(腰椎)", "(膝关节)", "(肩关节)", "(心脏)",
        "(甲状腺)", "(乳腺)", "(泌尿系)", "(血管)", "(四肢)", "(全身)"],
}
TREATMENTS = [
    "经皮冠状动脉支架置入术", "冠状动脉旁路移植术", "人工全髋关节置换术", "人工全膝关节置换术",
    "腹腔镜胆囊切除术", "阑尾切除术", "腹股沟疝修补术", "甲状腺部分切除术", "乳腺癌改良根治术",
    "肺叶切除术", "胃癌根治术", "结直肠癌根治术", "肝部分切除术", "经尿道前列腺电切术", "剖宫产术",
    "子宫全切术", "白内障超声乳化摘除术", "玻璃体切割术", "椎间盘摘除术", "脊柱融合术", "颅内血肿清除术",
    "动脉瘤栓塞术", "心脏射频消融术", "永久起搏器置入术", "血液透析", "腹膜透析", "血液灌流",
    "静脉输液", "肌肉注射", "静脉注射", "雾化吸入", "氧气吸入", "吸痰护理", "清创缝合术", "换药",
    "针刺", "艾灸", "推拿治疗", "拔罐", "中药熏洗", "康复评定", "运动疗法", "作业疗法", "言语训练",
    "静脉化疗", "调强放射治疗", "立体定向放射治疗", "介入化疗栓塞术", "骨髓穿刺术", "腰椎穿刺术",
    "胸腔闭式引流术", "气管插管术", "机械通气", "心肺复苏术", "电除颤", "体外冲击波碎石", "牙体充填",
    "根管治疗", "牙齿拔除术", "高压氧治疗",
]
TREATMENT_VARIANTS = ["", "(单侧)", "(双侧)", "(复杂)", "(加收)", "(儿童)", "(每次)", "(每小时)",
                      "(每日)", "(腔镜下)", "(机器人辅助)", "(急诊)"]
MATERIALS = [
    ("一次性使用无菌注射器", ["1ml", "2ml", "5ml", "10ml", "20ml", "50ml"], 30, 300),
    ("一次性使用输液器", ["带针", "精密过滤", "避光", "流量调节"], 200, 2000),
    ("静脉留置针", ["18G", "20G", "22G", "24G"], 500, 3000),
    ("冠状动脉药物洗脱支架", ["2.5×18mm", "3.0×24mm", "3.5×29mm", "4.0×33mm"], 50000, 100000),
    ("冠状动脉球囊扩张导管", ["2.0×15mm", "2.5×20mm", "3.0×15mm"], 20000, 100000),
    ("人工髋关节假体", ["陶瓷对陶瓷", "陶瓷对聚乙烯", "金属对聚乙烯"], 500000, 1000000),
    ("人工膝关节假体", ["固定平台", "活动平台", "后稳定型"], 400000, 800000),
    ("人工晶状体", ["单焦点", "非球面", "散光矫正型", "多焦点"], 50000, 800000),
    ("心脏起搏器", ["单腔", "双腔", "三腔"], 1500000, 4000000),
    ("中心静脉导管", ["单腔", "双腔", "三腔"], 15000, 60000),
    ("导尿管", ["双腔", "三腔", "硅胶"], 500, 5000),
    ("一次性使用吻合器", ["管型", "直线型", "腔镜切割"], 100000, 400000),
    ("骨科接骨板", ["锁定型", "重建型", "解剖型"], 50000, 300000),
    ("椎弓根螺钉", ["5.5mm", "6.5mm", "万向"], 30000, 120000),
    ("可吸收缝合线", ["2-0", "3-0", "4-0", "5-0"], 3000, 20000),
    ("止血纱布", ["5×7cm", "10×10cm"], 5000, 30000),
    ("医用X射线胶片", ["8×10英寸", "14×17英寸"], 500, 3000),
    ("导丝", ["超滑", "微导丝", "加硬"], 10000, 80000),
    ("血液透析器", ["低通量", "高通量"], 8000, 30000),
    ("造影导管", ["4F", "5F", "6F"], 5000, 30000),
    ("胰岛素笔用针头", ["4mm", "5mm", "8mm"], 100, 500),
    ("医用敷料", ["水胶体", "藻酸盐", "泡沫"], 1000, 20000),
    ("气管插管", ["带囊", "加强型"], 2000, 20000),
    ("输尿管支架管", ["单J", "双J"], 5000, 60000),
    ("疝修补片", ["平片", "立体网塞", "防粘连"], 20000, 300000),
    ("人工血管", ["直型", "分叉型"], 200000, 1200000),
    ("颅内动脉瘤弹簧圈", ["标准型", "柔软型"], 500000, 1200000),
    ("血管鞘", ["5F", "6F", "7F"], 5000, 40000),
]
MATERIAL_MAKERS = ["微创医疗", "乐普医疗", "威高", "迈瑞", "美敦力", "强生", "雅培", "波士顿科学",
                   "史赛克", "爱尔康", "蓝帆医疗", "鱼跃", "春立医疗", "大博医疗", "先健科技", "百多力"]
DRUG_FORM_LETTER = {"片": "A", "胶囊": "B", "颗粒": "C", "注射用": "D", "注射液": "E", "缓释片": "F",
                    "控释片": "G", "分散片": "H", "肠溶片": "J", "肠溶胶囊": "K", "口服溶液": "L", "混悬液": "M",
                    "咀嚼片": "N", "散": "P", "乳膏": "Q", "软膏": "R", "凝胶": "S", "滴眼液": "T",
                    "吸入气雾剂": "U", "吸入粉雾剂": "V", "软胶囊": "W", "泡腾片": "X", "缓释胶囊": "Y"}

CATALOG_TARGETS = {"drug": 3000, "patent": 400, "service": 800, "treatment": 700, "material": 900}


def _catalog_base(seed: int) -> list[tuple]:
    """Base items: (code, name, category, class, selfpay factor, base cap fen)."""
    rng = _rng(seed, "catalog")
    items: list[tuple] = []
    codes: set[str] = set()
    names: set[str] = set()

    def add(code, name, category, class_weights, cap):
        if code in codes or name in names:
            return False
        codes.add(code)
        names.add(name)
        r = rng.random()
        cls = "A" if r < class_weights[0] else ("B" if r < class_weights[0] + class_weights[1] else "C")
        items.append((code, name, category, cls, 0.5 + rng.random(), cap))
        return True

    n = 0
    while n < CATALOG_TARGETS["drug"]:
        generic, atc, forms = DRUGS[int(rng.random() * len(DRUGS))]
        form = rng.choice(forms.split())
        strength = rng.choice(STRENGTHS)
        maker = rng.choice(MANUFACTURERS)
        pack = rng.choice(PACKS)
        full = f"注射用{generic}" if form == "注射用" else f"{generic}{form}"
        name = f"{full} {strength}{pack}({maker})"
        code = f"X{atc}{DRUG_FORM_LETTER[form]}{rng.randrange(1000):03d}A{rng.randrange(1, 1000):03d}"
        cap = 0
        if rng.random() < 0.12:
            cap = rng.randrange(50, 2000) * (100 if rng.random() < 0.8 else 1000)
        n += add(code, name, "drug", (0.45, 0.47), cap)
    n = 0
    while n < CATALOG_TARGETS["patent"]:
        base = rng.choice(PATENT_DRUGS)
        name = f"{base} {rng.choice(PACKS)}({rng.choice(MANUFACTURERS)})"
        code = f"ZA{rng.randrange(1, 20):02d}{rng.choice('ABCDEFG')}{rng.randrange(10000):04d}B{rng.randrange(1, 1000):03d}"
        n += add(code, name, "drug", (0.35, 0.55), 0)
    n = 0
    while n < CATALOG_TARGETS["service"]:
        base, vkind = rng.choice(SERVICES)
        variant = rng.choice(SERVICE_VARIANTS[vkind]) if vkind else ""
        extra = rng.choice(["", "", "(加急)", "(夜间)", "(床旁)", "(复查)", "(首次)"])
        name = f"{base}{variant}{extra}"
        if name in names:
            name = f"{name}-{rng.randrange(1, 100)}项"
        code = f"00{rng.randrange(10, 30):02d}{rng.randrange(10 ** 11):011d}"
        n += add(code, name, "service", (0.70, 0.25), 0)
    n = 0
    while n < CATALOG_TARGETS["treatment"]:
        base = rng.choice(TREATMENTS)
        name = f"{base}{rng.choice(TREATMENT_VARIANTS)}"
        if name in names:
            name = f"{name}-{rng.choice(['Ⅰ', 'Ⅱ', 'Ⅲ', 'Ⅳ'])}型{rng.randrange(1, 50)}"
        code = f"33{rng.randrange(10, 20):02d}{rng.randrange(10 ** 11):011d}"
        n += add(code, name, "treatment", (0.55, 0.40), 0)
    n = 0
    while n < CATALOG_TARGETS["material"]:
        base, specs, lo, hi = MATERIALS[int(rng.random() * len(MATERIALS))]
        name = f"{base} {rng.choice(specs)}({rng.choice(MATERIAL_MAKERS)})"
        code = f"C{rng.randrange(1, 20):02d}{rng.randrange(10 ** 16):016d}"
        cap = (lo + int(rng.random() * (hi - lo))) // 10 * 10 if rng.random() < 0.55 else 0
        n += add(code, name, "material", (0.20, 0.65), cap)
    return items


def _write_catalog(path: str, seed: int, items: list[tuple]) -> int:
    rng = _rng(seed, "catalog-provinces")
    rows = 0
    with open(path, "wb") as f:
        for prov, *_ in geo.PROVINCES:
            # Provincial style: base 先行自付 share per category, price caps level.
            base_sp = {"drug": rng.choice([500, 1000, 1000, 1500, 2000]),
                       "treatment": rng.choice([1000, 1500, 2000, 2000]),
                       "service": rng.choice([500, 1000, 1000, 1500]),
                       "material": rng.choice([1000, 2000, 2000, 3000])}
            cap_factor = 0.85 + 0.3 * rng.random()
            out = []
            for code, name, cat, cls, spf, cap in items:
                r = rng.random()
                if r < 0.03:
                    cls = {"A": "B", "B": "A" if r < 0.02 else "C", "C": "B"}[cls]
                selfpay = 0
                if cls == "B":
                    selfpay = min(3000, max(500, int(base_sp[cat] * spf / 100 + 0.5) * 100))
                pcap = 0
                if cap and rng.random() > 0.05:
                    pcap = max(10, int(cap * cap_factor * (0.95 + 0.1 * rng.random())) // 10 * 10)
                out.append(orjson.dumps({"province": prov, "code": code, "name": name, "category": cat,
                                         "class": cls, "selfpay_bp": selfpay, "price_cap_fen": pcap}))
            f.write(b"\n".join(out) + b"\n")
            rows += len(out)
    return rows


# ---------------------------------------------------------------------------
# Policies

def _policy_rows(seed: int) -> list[dict]:
    rng = _rng(seed, "policies")
    crng = _rng(seed, "chronic-policies")
    rows = []
    for prov, *_ in geo.PROVINCES:
        style = {
            "ded": 0.7 + 0.6 * rng.random(),   # provincial deductible level
            "ratio": rng.randrange(-3, 4) * 50,  # provincial ratio offset
            "cap310": rng.randrange(25, 41) * 1_000_000,
            "cap390": rng.randrange(15, 31) * 1_000_000,
        }
        for city, _n in geo.CITIES[prov]:
            has_subsequent = rng.random() < 0.85
            has_ci = rng.random() > 0.03
            has_assist = rng.random() > 0.03
            for insutype in ("310", "390"):
                p25 = _policy(rng, city, insutype, style, has_subsequent, has_ci, has_assist)
                p26 = _policy_2026(rng, p25)
                if crng.random() > 0.03:   # a few regions have no chronic-disease terms for cross-province care
                    p25["chronic"] = _chronic_block(crng, insutype)
                    p26["chronic"] = orjson.loads(orjson.dumps(p25["chronic"]))
                rows.append(p25)
                rows.append(p26)
    return rows


# Chronic diseases an institution may be enabled for, by level: (code, share of such institutions enabled).
CHRONIC_ENABLED = {
    3: [("M03900", 0.9), ("M01600", 0.9), ("M00503", 0.75), ("M07803", 0.7), ("M08300", 0.45)],
    2: [("M03900", 0.5), ("M01600", 0.5), ("M00503", 0.2), ("M07803", 0.2)],
    1: [("M03900", 0.06), ("M01600", 0.06)],
}


def _with_chronic(row: dict) -> dict:
    """SPEC §10.2: the chronic diseases an institution is open for (mostly level 2-3 hospitals; no pharmacy);
    drawn from the institution code's own stream, so a hospital's diseases do not depend on the data set's size
    or seed (like the demo entities)."""
    if row["kind"] == "pharmacy" or not row["outpatient"]:
        return row
    rng = _rng(0, "chronic-" + row["fixmedins_code"])
    codes = [c for c, share in CHRONIC_ENABLED[row["level"]] if rng.random() < share]
    if codes:
        row["chronic_diseases"] = codes
    return row


def _chronic_block(rng, insutype: str) -> dict:
    """SPEC §10.2 a pooling region's chronic block: a default and the costly diseases on their own terms."""
    emp = insutype == "310"
    d = rng.randrange(0, 4) * 10000 if emp else rng.randrange(1, 6) * 10000
    r = rng.randrange(75, 86) * 100 if emp else rng.randrange(60, 71) * 100
    block = {"default": {"annual_deductible_fen": d, "ratio_bp": {"1": min(9500, r + 500), "2": r, "3": r - 500},
                         "retired_bonus_bp": rng.randrange(0, 6) * 100 if emp else 0,
                         "annual_cap_fen": rng.randrange(3, 11) * 100_000}}
    dialysis = rng.randrange(85, 93) * 100 if emp else rng.randrange(75, 86) * 100
    block["M07803"] = {"annual_deductible_fen": 0, "ratio_bp": {"1": dialysis, "2": dialysis, "3": dialysis - 200},
                       "retired_bonus_bp": 0, "annual_cap_fen": rng.randrange(60, 101) * 100_000}
    cancer = rng.randrange(70, 86) * 100
    block["M00503"] = {"annual_deductible_fen": 0, "ratio_bp": {"1": cancer, "2": cancer, "3": cancer - 300},
                       "retired_bonus_bp": 0, "annual_cap_fen": rng.randrange(100, 201) * 100_000}
    return block


def _clamp(x: int, lo: int, hi: int) -> int:
    return lo if x < lo else (hi if x > hi else x)


def _policy(rng, city, insutype, style, has_subsequent, has_ci, has_assist) -> dict:
    emp = insutype == "310"
    k = style["ded"]
    ded1 = _clamp(int((20000 + rng.randrange(0, 15001)) * k) // 5000 * 5000, 20000, 40000)
    ded2 = _clamp(int((45000 + rng.randrange(0, 25001)) * k) // 5000 * 5000, ded1 + 10000, 80000)
    ded3 = _clamp(int((80000 + rng.randrange(0, 30001)) * k) // 10000 * 10000, ded2 + 10000, 120000)
    off = style["ratio"]
    if emp:
        r1 = _clamp(9000 + off + rng.randrange(-1, 3) * 50, 8800, 9200)
        r2 = _clamp(8500 + off + rng.randrange(-2, 3) * 50, 8200, r1 - 200)
        r3 = _clamp(8000 + off + rng.randrange(-2, 3) * 50, 7500, r2 - 200)
    else:
        r1 = _clamp(8500 + off + rng.randrange(-2, 3) * 50, 8000, 9000)
        r2 = _clamp(7500 + off + rng.randrange(-2, 3) * 50, 7000, r1 - 300)
        r3 = _clamp(6800 + off + rng.randrange(-2, 3) * 50, 6500, r2 - 300)
    inpatient = {"deductible_fen": {"1": ded1, "2": ded2, "3": ded3},
                 "ratio_bp": {"1": r1, "2": r2, "3": r3},
                 # Retirees get a few points more, but level-1 care stays below 97%.
                 "retired_bonus_bp": min(rng.randrange(0, 11) * 100, 9700 - r1) if emp else 0,
                 "annual_cap_fen": style["cap310" if emp else "cap390"] + rng.randrange(0, 6) * 500_000}
    inpatient["annual_cap_fen"] = _clamp(inpatient["annual_cap_fen"], 13_000_000, 40_000_000)
    if has_subsequent:
        inpatient["subsequent_deductible_bp"] = 5000
    o1 = rng.randrange(70, 81) * 100 if emp else rng.randrange(60, 71) * 100
    outpatient = {"annual_deductible_fen": (rng.randrange(5, 21) if emp else rng.randrange(2, 8)) * 10000,
                  "ratio_bp": {"1": o1, "2": o1 - 1000, "3": max(5000, o1 - 2000)},
                  "retired_bonus_bp": rng.randrange(0, 11) * 100 if emp else 0,
                  "annual_cap_fen": (rng.randrange(3, 9) if emp else rng.randrange(2, 5)) * 100_000}
    row = {"admdvs": city, "insutype": insutype, "effective_from": 20250101,
           "inpatient": inpatient, "outpatient": outpatient}
    if has_ci:
        if rng.random() < 0.6:
            tiers = [{"up_to_fen": 10_000_000, "ratio_bp": 6000},
                     {"up_to_fen": 30_000_000, "ratio_bp": 7000},
                     {"up_to_fen": None, "ratio_bp": 8000}]
        else:
            tiers = [{"up_to_fen": rng.choice([5_000_000, 10_000_000, 20_000_000]), "ratio_bp": 6000},
                     {"up_to_fen": None, "ratio_bp": rng.choice([7000, 7500, 8000])}]
        row["critical_illness"] = {"threshold_fen": rng.randrange(20, 41) * 50_000, "tiers": tiers,
                                   "annual_cap_fen": rng.randrange(30, 61) * 1_000_000}
    if has_assist:
        row["assistance"] = {"ratio_bp": rng.randrange(12, 19) * 500,
                             "annual_cap_fen": rng.randrange(2, 11) * 1_000_000}
    row["reduction_bp"] = {"referral": rng.choice([0, 0, 0, 500, 1000]),
                           "emergency": rng.choice([0, 0, 0, 0, 500]),
                           "other_temporary": rng.choice([1000, 1000, 1500, 2000])}
    row["high_cost_fen"] = rng.randrange(10, 31) * 1_000_000
    return row


def _policy_2026(rng, p25: dict) -> dict:
    """The 2026 revision: a little more generous, within the same national ranges."""
    p = orjson.loads(orjson.dumps(p25))
    p["effective_from"] = 20260101
    inp = p["inpatient"]
    ded = inp["deductible_fen"]
    cut = rng.choice([0, 0, 5000, 10000])
    ded["1"] = max(20000, ded["1"] - cut)
    ded["2"] = max(ded["1"] + 10000, ded["2"] - cut)
    ded["3"] = max(ded["2"] + 10000, ded["3"] - cut)
    bump = rng.choice([0, 50, 100, 200])
    hi = 9200 if p["insutype"] == "310" else 9000
    inp["ratio_bp"] = {k: min(hi, v + bump) for k, v in inp["ratio_bp"].items()}
    inp["annual_cap_fen"] = min(40_000_000, inp["annual_cap_fen"] + rng.choice([0, 1_000_000, 2_000_000]))
    out = p["outpatient"]
    out["annual_cap_fen"] = min(800_000, out["annual_cap_fen"] + rng.choice([0, 50_000, 100_000]))
    if "critical_illness" in p:
        ci = p["critical_illness"]
        ci["annual_cap_fen"] = min(60_000_000, ci["annual_cap_fen"] + rng.choice([0, 5_000_000]))
    return p


# ---------------------------------------------------------------------------
# Persons

SURNAMES = (
    "王 李 张 刘 陈 杨 黄 赵 吴 周 徐 孙 马 朱 胡 郭 何 高 林 罗 郑 梁 谢 宋 唐 许 韩 冯 邓 曹 "
    "彭 曾 肖 田 董 袁 潘 于 蒋 蔡 余 杜 叶 程 苏 魏 吕 丁 任 沈 姚 卢 姜 崔 钟 谭 陆 汪 范 金 "
    "石 廖 贾 夏 韦 付 方 白 邹 孟 熊 秦 邱 江 尹 薛 闫 段 雷 侯 龙 史 陶 黎 贺 顾 毛 郝 龚 邵 "
    "万 钱 严 覃 武 戴 莫 孔 向 汤 常 温 康 施 文 牛 樊 葛 邢 安 齐 易 乔 伍 庞 颜 倪 庄 聂 章"
).split()
# Roughly Zipf-shaped: 王/李/张 each ~7%, the long tail well under 1%.
SURNAME_CUM = _cum([7.2, 7.1, 6.8, 5.4, 4.6, 3.1, 2.4, 2.3, 2.0, 1.7] + [1.2] * 20 + [0.6] * 30
                   + [0.3] * (len(SURNAMES) - 60))
MALE_CHARS = list("伟强磊军勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆帅旭宁龙林国建志海峰东文德新成永春庆"
                  "光荣福贵忠诚学军卫兵红胜利民生金")
FEMALE_CHARS = list("芳娜敏静丽艳娟霞秀英梅玲燕萍红琳雪慧婷颖倩洁丹莉兰凤玉桂珍佳欣怡雨月晶淑琴云霞美荣")

# Share of each insured place in a province: the city itself or, for the
# cities with districts listed in geo, half of it spread over the districts.
_CAT_RESIDENT, _CAT_RETIRED, _CAT_WORKER = 0, 1, 2

DEMO_PERSONS = [
    # psn_no, birth, seq, name, insuplc, insutype, person_type, status, assistance, card_no
    ("2100000000000001", "19560312", "031", "王建国", "210102", "310", "retired", "active", False, "A00000001"),
    ("4100000000000002", "19900518", "042", "李娜", "410105", "310", "in_service", "active", False, "A00000002"),
    ("2300000000000003", "19750806", "013", "张伟", "230100", "310", "in_service", "active", True, "A00000003"),
    ("5100000000000004", "19620121", "024", "陈秀英", "510107", "390", "in_service", "active", False, "A00000004"),
    ("2200000000000005", "19520909", "046", "刘淑兰", "220100", "310", "retired", "suspended", False, "A00000005"),
]
DEMO_FILINGS = [
    ("BA210000000001", "2100000000000001", "retired_relocation", "460000", [], 20230115, 0),
    ("BA410000000002", "4100000000000002", "stationed_work", "440300", [], 20250301, 0),
    ("BA230000000003", "2300000000000003", "referral", "110100", ["H11010000001"], 20261101, 20270131),
    ("BA510000000004", "5100000000000004", "other_temporary", "460100", [], 20261101, 20270430),
    ("BA220000000005", "2200000000000005", "long_term_residence", "530100", [], 20240601, 0),
]


# SPEC §10 fields of the demo persons: 王建国 is a diabetic with a personal account (the README's chronic visit).
DEMO_EXTRAS = {"2100000000000001": ',"acct_balance_fen":150000,"chronic_diseases":["M01600"]'}


def _demo_person_lines() -> tuple[list[str], set[int]]:
    lines, keys = [], set()
    for psn, birth, seq, name, place, insutype, ptype, status, assist, card in DEMO_PERSONS:
        first17 = place + birth + seq
        keys.add(int(first17))
        line = _person_line(psn, first17 + certno_check_char(first17), name, place, insutype, ptype,
                            status, assist, card, "3.0")
        extra = DEMO_EXTRAS.get(psn, "")
        lines.append(line[:-2] + extra + "}\n" if extra else line)
    return lines, keys


def _person_line(psn, certno, name, place, insutype, ptype, status, assist, card, version) -> str:
    return (f'{{"psn_no":"{psn}","certno":"{certno}","name":"{name}","insuplc_admdvs":"{place}",'
            f'"insutype":"{insutype}","person_type":"{ptype}","status":"{status}",'
            f'"assistance":{"true" if assist else "false"},"card_no":"{card}","card_version":"{version}"}}\n')


def _insured_places() -> tuple[list[tuple[str, int]], list[float]]:
    """[(admdvs, province index)], cumulative weights."""
    places, weights = [], []
    for pi, (prov, _n, _s, _pop, sender) in enumerate(geo.PROVINCES):
        cities = geo.CITIES[prov]
        wsum = sum(geo.city_weight(c) for c, _x in cities)
        for city, _x in cities:
            w = sender * geo.city_weight(city) / wsum
            districts = geo.DISTRICTS.get(city, ())
            shares = [(city, w * (0.5 if districts else 1.0))]
            shares += [(d, w * 0.5 / len(districts)) for d, _y in districts]
            for code, share in shares:
                places.append((code, pi))
                weights.append(share)
    return places, _cum(weights)


def _write_persons(f, seed: int, n_random: int, progress: Progress | None, total: int):
    """Writes the random persons; returns (province index per person, category per person)."""
    rng = _rng(seed, "persons")
    rand = rng.random
    places, place_cum = _insured_places()
    place_idx = range(len(places))
    births = {
        _CAT_RETIRED: _birth_table(datetime.date(1940, 1, 1), datetime.date(1966, 12, 31)),
        _CAT_WORKER: _birth_table(datetime.date(1966, 1, 1), datetime.date(2004, 12, 31)),
        _CAT_RESIDENT: _birth_table(datetime.date(1945, 1, 1), datetime.date(2022, 12, 31)),
    }
    seq_str = [f"{s:03d}" for s in range(1000)]
    demo_lines, seen = _demo_person_lines()
    f.write("".join(demo_lines))
    prov2 = [p[0][:2] for p in geo.PROVINCES]
    n_male, n_female = len(MALE_CHARS), len(FEMALE_CHARS)
    # psn_no serials: a bijection of the person index onto [10^13, 10^14) (first
    # digit never 0, unlike the demo persons).  Card numbers: a bijection onto
    # 24 letters x 10^8 (no I, O; A is for the demo persons).
    psn_mod, psn_mul, psn_add = 9 * 10 ** 13, _coprime(rng, 9 * 10 ** 13), rng.randrange(9 * 10 ** 13)
    card_letters = "BCDEFGHJKLMNPQRSTUVWXYZ"
    card_mod = len(card_letters) * 10 ** 8
    card_mul, card_add = _coprime(rng, card_mod), rng.randrange(card_mod)
    prov_of = bytearray(n_random)
    cat_of = bytearray(n_random)
    chronic_of = bytearray(n_random)
    # SPEC §10 fields from their own random streams, so the persons' other fields stay what they were.
    arng, crng = _rng(seed, "accounts"), _rng(seed, "chronic")
    family_of: dict[str, str] = {}   # pooling region -> the last employee-insured person seen there
    figures = {"with_account": 0, "account_fen": 0, "with_family": 0, "chronic": 0, "chronic_retired": 0}
    done = 0
    while done < n_random:
        n = min(CHUNK_ROWS, n_random - done)
        pidx = rng.choices(place_idx, cum_weights=place_cum, k=n)
        surs = rng.choices(SURNAMES, cum_weights=SURNAME_CUM, k=n)
        out = []
        for k in range(n):
            i = done + k
            place, pi = places[pidx[k]]
            r = rand()
            if r < 0.25:
                cat, insutype, ptype = _CAT_RESIDENT, "390", "in_service"
            elif r < 0.61:
                cat, insutype, ptype = _CAT_RETIRED, "310", "retired"
            else:
                cat, insutype, ptype = _CAT_WORKER, "310", "in_service"
            table = births[cat]
            bstr, bnum = table[int(rand() * len(table))]
            base_key = int(place) * 10 ** 11 + bnum * 1000
            while True:
                s = int(rand() * 1000)
                if base_key + s not in seen:
                    break
            seen.add(base_key + s)
            first17 = f"{place}{bstr}{seq_str[s]}"
            certno = first17 + certno_check_char(first17)
            if s & 1:
                given = MALE_CHARS[int(rand() * n_male)]
                if rand() < 0.7:
                    given += MALE_CHARS[int(rand() * n_male)]
            else:
                given = FEMALE_CHARS[int(rand() * n_female)]
                if rand() < 0.7:
                    given += FEMALE_CHARS[int(rand() * n_female)]
            r = rand()
            status = "suspended" if r < 0.01 else "active"
            assist = "true" if rand() < 0.02 else "false"
            r = rand()
            version = "3.0" if r < 0.85 else ("2.0" if r < 0.995 else "1.0")
            psn = f"{prov2[pi]}{10 ** 13 + (i * psn_mul + psn_add) % psn_mod}"
            cv = (i * card_mul + card_add) % card_mod
            card = f"{card_letters[cv // 100_000_000]}{cv % 100_000_000:08d}"
            extra = _person_extras(arng, crng, cat, psn, place, family_of, figures)
            out.append(f'{{"psn_no":"{psn}","certno":"{certno}","name":"{surs[k]}{given}",'
                       f'"insuplc_admdvs":"{place}","insutype":"{insutype}","person_type":"{ptype}",'
                       f'"status":"{status}","assistance":{assist},"card_no":"{card}",'
                       f'"card_version":"{version}"{extra}}}\n')
            prov_of[i] = pi
            cat_of[i] = cat
            chronic_of[i] = '"chronic_diseases"' in extra
        f.write("".join(out))
        done += n
        if progress:
            progress("persons", done + len(DEMO_PERSONS), total)
    if progress and n_random == 0:
        progress("persons", total, total)
    def psn_fn(i: int) -> str:
        return f"{prov2[prov_of[i]]}{10 ** 13 + (i * psn_mul + psn_add) % psn_mod}"

    return prov_of, cat_of, psn_fn, chronic_of, figures


# SPEC §10.2 national chronic disease codes and their weight among recognised diseases.
CHRONIC_DISEASES = [("M03900", 45), ("M01600", 35), ("M00503", 6), ("M07803", 4), ("M08300", 2)]
_CHRONIC_CODES = [c for c, _w in CHRONIC_DISEASES]
_CHRONIC_CUM = _cum(w for _c, w in CHRONIC_DISEASES)
# Prevalence of a recognised chronic disease among filed persons, by category; retirees relocated
# to 海南/云南 are more often chronic patients (the filings lean them there: _write_filings).
CHRONIC_PREVALENCE = {_CAT_RETIRED: 0.22, _CAT_WORKER: 0.05, _CAT_RESIDENT: 0.08}
# Median personal-account balance (fen): employees only; residents have no personal account.
ACCOUNT_MEDIAN_FEN = {_CAT_RETIRED: 520_000, _CAT_WORKER: 310_000}
FAMILY_SHARE = {_CAT_RETIRED: 0.06, _CAT_WORKER: 0.04, _CAT_RESIDENT: 0.12}   # 共济: a relative's account pays


def _figures(f: dict, n: int) -> dict:
    """What the SPEC §10 data look like (the random persons): shown in the manifest."""
    return {"persons_with_account": f["with_account"], "persons_with_family_account": f["with_family"],
            "average_balance_fen": f["account_fen"] // max(1, f["with_account"]),
            "chronic_persons": f["chronic"], "chronic_prevalence_bp": f["chronic"] * 10000 // max(1, n),
            "chronic_retired_share_bp": f["chronic_retired"] * 10000 // max(1, f["chronic"])}


def _person_extras(arng, crng, cat: int, psn: str, place: str, family_of: dict, figures: dict) -> str:
    """The optional SPEC §10 fields of a person row, as JSON text to append ("" for none)."""
    parts = []
    if cat in ACCOUNT_MEDIAN_FEN and arng.random() > 0.06:   # a few employees have spent theirs
        balance = min(20_000_000, int(ACCOUNT_MEDIAN_FEN[cat] * math.exp(arng.gauss(0.0, 0.9))))
        parts.append(f'"acct_balance_fen":{balance}')
        figures["with_account"] += 1
        figures["account_fen"] += balance
    pool = place[:4]
    relative = family_of.get(pool)
    if relative is not None and arng.random() < FAMILY_SHARE[cat]:
        parts.append(f'"mulaid_psn_nos":["{relative}"]')
        figures["with_family"] += 1
    if cat in ACCOUNT_MEDIAN_FEN:
        family_of[pool] = psn
    if crng.random() < CHRONIC_PREVALENCE[cat]:
        codes = {_CHRONIC_CODES[_pick_cum(crng, _CHRONIC_CUM)] for _ in range(1 if crng.random() < 0.75 else 2)}
        parts.append('"chronic_diseases":[' + ",".join(f'"{c}"' for c in sorted(codes)) + "]")
        figures["chronic"] += 1
        figures["chronic_retired"] += cat == _CAT_RETIRED
    return "".join("," + p for p in parts)


def _pick_cum(rng, cum: list[float]) -> int:
    x = rng.random() * cum[-1]
    for j, c in enumerate(cum):
        if x < c:
            return j
    return len(cum) - 1


def _coprime(rng: random.Random, mod: int) -> int:
    while True:
        a = rng.randrange(mod // 3, mod - 1)
        if math.gcd(a, mod) == 1:
            return a


# ---------------------------------------------------------------------------
# Filings

RETIREE_DESTS = [
    ("460000", 9), ("460100", 5), ("460200", 6), ("440000", 3), ("440300", 3), ("440100", 2.5),
    ("440400", 1.5), ("441300", 1.5), ("530000", 3), ("530100", 3), ("530700", 1), ("532900", 1.2),
    ("532800", 1), ("450500", 1), ("350200", 0.8), ("510100", 1), ("110100", 3), ("310100", 3),
    ("320500", 1), ("330100", 1.5), ("320100", 1), ("120100", 1), ("370200", 1.2), ("210200", 0.8),
    ("130300", 0.5), ("410100", 0.5), ("500100", 0.6), ("420100", 0.6), ("610100", 0.5),
]
WORKER_DESTS = [
    ("110100", 10), ("310100", 10), ("440100", 7), ("440300", 9), ("330100", 5), ("320500", 4),
    ("320100", 3), ("120100", 3), ("441900", 3), ("440600", 2), ("330200", 2), ("350200", 1.5),
    ("370200", 1.5), ("510100", 2), ("420100", 2), ("610100", 1.5), ("500100", 1.5), ("440000", 2),
    ("320000", 1.5), ("330000", 1.5), ("350100", 1), ("430100", 1), ("410100", 1), ("340100", 1),
    ("460100", 0.5), ("210200", 0.5), ("320200", 1), ("442000", 0.8), ("440400", 0.6),
]
RESIDENT_DESTS = [
    ("440000", 5), ("320000", 3), ("330000", 3), ("350000", 2), ("310100", 5), ("110100", 4),
    ("440300", 4), ("440100", 3), ("441900", 2.5), ("330100", 2), ("320500", 2), ("120100", 1.5),
    ("460000", 2), ("460200", 1), ("530000", 1), ("370000", 1), ("510100", 1), ("500100", 1),
]
TEMP_DESTS = [
    ("460000", 3), ("460200", 2), ("460100", 1), ("530000", 2), ("530100", 1), ("530700", 0.6),
    ("110100", 3), ("310100", 3), ("440000", 2), ("440300", 2), ("440100", 1.5), ("330100", 1.5),
    ("510100", 1.5), ("610100", 1), ("500100", 1), ("450300", 0.8), ("350200", 1), ("370200", 1),
    ("320500", 1), ("540100", 0.5), ("650100", 0.5), ("520100", 0.5), ("430100", 0.6), ("420100", 0.6),
    ("210200", 0.5), ("130300", 0.4), ("150700", 0.3), ("620100", 0.3), ("640100", 0.2),
]
KIND_WEIGHTS = {
    _CAT_RETIRED: [("retired_relocation", 55), ("long_term_residence", 25), ("other_temporary", 8),
                   ("referral", 8), ("emergency", 4)],
    _CAT_WORKER: [("stationed_work", 50), ("long_term_residence", 25), ("other_temporary", 12),
                  ("referral", 8), ("emergency", 5)],
    _CAT_RESIDENT: [("long_term_residence", 60), ("other_temporary", 18), ("referral", 15),
                    ("emergency", 7)],
}


class _Picker:
    """Weighted choice that avoids the person's own province (by resampling)."""

    def __init__(self, rng: random.Random, entries: list[tuple[str, float]]):
        self.rng = rng
        self.codes = [c for c, _w in entries]
        self.provs = [province_code(c) for c in self.codes]
        self.cum = _cum(w for _c, w in entries)
        self.total = self.cum[-1]
        self.n = len(self.codes)

    def pick(self, own_prov: str) -> int:
        rand, cum = self.rng.random, self.cum
        for _ in range(20):
            x = rand() * self.total
            lo, hi = 0, self.n - 1
            while lo < hi:
                mid = (lo + hi) // 2
                if cum[mid] <= x:
                    lo = mid + 1
                else:
                    hi = mid
            if self.provs[lo] != own_prov:
                return lo
        for i in range(self.n):  # deterministic fallback
            if self.provs[i] != own_prov:
                return i
        raise AssertionError("no destination outside the province")


# Where relocated retirees with a chronic disease lean (warm, clean air, dialysis centres used to visitors).
CHRONIC_RETIREE_DESTS = [("460000", 4), ("460200", 3), ("460100", 2), ("530000", 2), ("530100", 1.5),
                         ("530700", 0.5)]


def _write_filings(f, seed: int, prov_of: bytearray, cat_of: bytearray, psn_fn, insts: list[tuple],
                   progress: Progress | None, total: int, chronic_of: bytearray | None = None) -> int:
    rng = _rng(seed, "filings")
    lean = _Picker(_rng(seed, "chronic-dest"), CHRONIC_RETIREE_DESTS)
    rand = rng.random
    # Institutions a long-term filing may designate: hospitals open for inpatient.
    by_region: dict[str, list[str]] = {}
    for code, _name, city, kind, _level, inp, _outp in insts:
        if kind == "hospital" and inp:
            by_region.setdefault(city, []).append(code)
            by_region.setdefault(province_code(city), []).append(code)
    referral_targets = []
    for city, w in REFERRAL_CITY_WEIGHT.items():
        names = FAMOUS_HOSPITALS[city]
        for j in range(len(names)):
            # The first hospitals of a city (协和, 中山, 中山一院 ...) draw the most referrals.
            referral_targets.append((f"H{city}{j + 1:05d}", w * (2.0 if j < 3 else 1.0) / len(names)))
    pickers = {
        "lt_retired": _Picker(rng, RETIREE_DESTS),
        "lt_worker": _Picker(rng, WORKER_DESTS),
        "lt_resident": _Picker(rng, RESIDENT_DESTS),
        "temp": _Picker(rng, TEMP_DESTS),
        "referral": _Picker(rng, [(c[1:7], w) for c, w in referral_targets]),
    }
    referral_codes = [c for c, _w in referral_targets]
    kind_cum = {cat: ([k for k, _w in kw], _cum(w for _k, w in kw)) for cat, kw in KIND_WEIGHTS.items()}
    prov_codes = [p[0] for p in geo.PROVINCES]
    lt_span = AS_OF_DAY  # long-term valid_from: 2019-01-01 .. as_of
    dates = _DATES

    def long_term(cat: int, own: str, kind: str) -> tuple[str, str]:
        if kind == "retired_relocation" or (kind == "long_term_residence" and cat == _CAT_RETIRED):
            pk = pickers["lt_retired"]
        elif cat == _CAT_RESIDENT:
            pk = pickers["lt_resident"]
        else:
            pk = pickers["lt_worker"]
        dest = pk.codes[pk.pick(own)]
        codes = "[]"
        if rand() < 0.12:
            pool = by_region.get(dest)
            if pool:
                m = 1 + int(rand() * 3)
                chosen = sorted({pool[int(rand() * len(pool))] for _ in range(m)})
                codes = '["' + '","'.join(chosen) + '"]'
        return dest, codes

    def temporary(own: str, kind: str) -> tuple[str, str]:
        if kind == "referral":
            pk = pickers["referral"]
            j = pk.pick(own)
            target = referral_codes[j]
            city = target[1:7]
            dest = city if rand() < 0.8 else province_code(city)
            return dest, f'["{target}"]'
        pk = pickers["temp"]
        return pk.codes[pk.pick(own)], "[]"

    def temp_dates(kind: str) -> tuple[int, int]:
        if kind == "emergency":
            length = 7 + int(rand() * 84)
        elif rand() < 0.5:
            length = rand() < 0.5 and 180 or 365
        else:
            length = 30 + int(rand() * 336)
        if rand() < 0.85:  # valid on as_of
            start = max(Y2026_DAY, AS_OF_DAY - int(rand() * length))
        else:
            start = Y2026_DAY + int(rand() * (AS_OF_DAY - Y2026_DAY + 1))
        return dates[start], dates[start + length - 1]

    def lt_dates() -> tuple[int, int, int]:
        start = int(lt_span * math.sqrt(rand()))  # filings grew year by year
        if rand() < 0.78:
            return start, dates[start], 0
        end = min(len(dates) - 1, start + (1 + int(rand() * 3)) * 365 - 1)
        return start, dates[start], dates[end]

    lines = [
        f'{{"filing_id":"{fid}","psn_no":"{psn}","kind":"{kind}","dest_admdvs":"{dest}",'
        f'"fixmedins_codes":{orjson.dumps(codes).decode()},"valid_from":{vf},"valid_to":{vt},"status":"active"}}\n'
        for fid, psn, kind, dest, codes, vf, vt in DEMO_FILINGS
    ]
    f.write("".join(lines))
    rows = len(lines)
    serial = len(DEMO_FILINGS)
    n = len(prov_of)
    for start_i in range(0, n, CHUNK_ROWS):
        out = []
        for i in range(start_i, min(n, start_i + CHUNK_ROWS)):
            cat = cat_of[i]
            own = prov_codes[prov_of[i]]
            p2 = own[:2]
            psn = psn_fn(i)
            kinds, cum = kind_cum[cat]
            x = rand() * cum[-1]
            kind = kinds[0]
            for j, c in enumerate(cum):
                if x < c:
                    kind = kinds[j]
                    break
            extra = rand()
            if kind in TEMPORARY_KINDS:
                dest, codes = temporary(own, kind)
                vf, vt = temp_dates(kind)
                lt_start = None
            else:
                dest, codes = long_term(cat, own, kind)
                if (chronic_of is not None and chronic_of[i] and cat == _CAT_RETIRED and codes == "[]"
                        and lean.rng.random() < 0.4):
                    dest = lean.codes[lean.pick(own)]
                lt_start, vf, vt = lt_dates()
            if extra < 0.03 and lt_start is not None and lt_start > 60:
                # An older long-term filing, revoked when the person moved on.
                old_dest, old_codes = long_term(cat, own, kind)
                old_start = int(rand() * (lt_start - 30))
                serial += 1
                out.append(f'{{"filing_id":"BA{p2}{serial:010d}","psn_no":"{psn}","kind":"{kind}",'
                           f'"dest_admdvs":"{old_dest}","fixmedins_codes":{old_codes},'
                           f'"valid_from":{dates[old_start]},"valid_to":{dates[lt_start - 1]},'
                           f'"status":"revoked"}}\n')
            serial += 1
            out.append(f'{{"filing_id":"BA{p2}{serial:010d}","psn_no":"{psn}","kind":"{kind}",'
                       f'"dest_admdvs":"{dest}","fixmedins_codes":{codes},"valid_from":{vf},'
                       f'"valid_to":{vt},"status":"active"}}\n')
            if 0.03 <= extra < 0.07:
                # A second active filing: a temporary trip (often a referral)
                # on top of a long-term one, or a long-term one after a trip.
                if lt_start is not None:
                    kind2 = "referral" if rand() < 0.6 else "other_temporary"
                    dest2, codes2 = temporary(own, kind2)
                    vf2, vt2 = temp_dates(kind2)
                else:
                    kind2 = "long_term_residence"
                    dest2, codes2 = long_term(cat, own, kind2)
                    _s, vf2, vt2 = lt_dates()
                serial += 1
                out.append(f'{{"filing_id":"BA{p2}{serial:010d}","psn_no":"{psn}","kind":"{kind2}",'
                           f'"dest_admdvs":"{dest2}","fixmedins_codes":{codes2},"valid_from":{vf2},'
                           f'"valid_to":{vt2},"status":"active"}}\n')
        f.write("".join(out))
        rows += len(out)
        if progress:
            progress("filings", min(n, start_i + CHUNK_ROWS) + len(DEMO_PERSONS), total)
    if progress and n == 0:
        progress("filings", total, total)
    return rows


# ---------------------------------------------------------------------------
# Entry point

def generate(out_dir: str, persons: int = 1_800_000, seed: int = 2026, institutions: int | None = None,
             progress: Progress | None = None) -> dict:
    """Write the SPEC §3 reference data set into ``out_dir`` and return its manifest.

    ``persons`` counts every filed person, the demo persons included (so it
    must be at least ``len(DEMO_PERSONS)``).  ``institutions`` defaults to
    36,000.  ``progress(stage, done, total)`` is called once per small stage
    and every 100,000 rows for persons and filings.
    """
    if persons < len(DEMO_PERSONS):
        raise ValueError(f"persons must be at least {len(DEMO_PERSONS)}")
    n_inst = DEFAULT_INSTITUTIONS if institutions is None else institutions
    os.makedirs(out_dir, exist_ok=True)
    counts: dict[str, int] = {}

    def path(stem: str) -> str:
        return os.path.join(out_dir, f"{stem}.jsonl")

    regions = _region_rows()
    with open(path("regions"), "wb") as f:
        f.write(b"".join(_dumps({"admdvs": c, "name": n}) for c, n in regions))
    counts["regions"] = len(regions)
    if progress:
        progress("regions", len(regions), len(regions))

    insts = _institutions(seed, n_inst)
    with open(path("institutions"), "wb") as f:
        f.write(b"".join(
            _dumps(_with_chronic({"fixmedins_code": c, "name": n, "admdvs": a, "kind": k, "level": lv,
                                        "inpatient": ip, "outpatient": op}))
            for c, n, a, k, lv, ip, op in insts))
    counts["institutions"] = len(insts)
    if progress:
        progress("institutions", len(insts), len(insts))

    base = _catalog_base(seed)
    counts["catalog"] = _write_catalog(path("catalog"), seed, base)
    if progress:
        progress("catalog", counts["catalog"], counts["catalog"])

    policies = _policy_rows(seed)
    with open(path("policies"), "wb") as f:
        f.write(b"".join(_dumps(p) for p in policies))
    counts["policies"] = len(policies)
    if progress:
        progress("policies", len(policies), len(policies))

    n_random = persons - len(DEMO_PERSONS)
    with open(path("persons"), "w", encoding="utf-8", newline="\n", buffering=1 << 22) as f:
        prov_of, cat_of, psn_fn, chronic_of, figures = _write_persons(f, seed, n_random, progress, persons)
    counts["persons"] = persons
    with open(path("filings"), "w", encoding="utf-8", newline="\n", buffering=1 << 22) as f:
        counts["filings"] = _write_filings(f, seed, prov_of, cat_of, psn_fn, insts, progress, persons, chronic_of)

    krng = _rng(seed, "voucher-keys")   # SPEC §10.5: one development key per province
    with open(path("voucher_keys"), "wb") as f:
        f.write(b"".join(_dumps({"province": p[0], "key_hex": krng.randbytes(32).hex()}) for p in geo.PROVINCES))
    counts["voucher_keys"] = len(geo.PROVINCES)

    manifest = {"generator": GENERATOR, "version": VERSION, "seed": seed, "persons": persons,
                "counts": counts, "as_of": AS_OF, "figures": _figures(figures, n_random)}
    with open(os.path.join(out_dir, "manifest.json"), "wb") as f:
        f.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest
