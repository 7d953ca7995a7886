"""Interpreting drills (zh–en): a generated, closed-vocabulary, compositional corpus.

What human interpreters drill: numbers, prices, dates, clock times, quantities with
measure words, ages, durations, years, temperatures, person and city names, days of the
week, and the zh→en reorderings of time and place phrases (Chinese puts them before the
verb, English after: 我明天在上海见王先生。 → "I will meet Mr. Wang in Shanghai
tomorrow."). Every pair comes from a template filled from a small real vocabulary
(≈ 300 English words), so a small model can learn it, and held-out sentences are new
combinations of words seen in training (the corpus splits by a hash of the Chinese
sentence).

Conventions of the text:
- Chinese numbers are written in hanzi so that espeak reads them (二十五, 一百零五; 两 for
  a count of two before a measure word, 两点 for two o'clock); English numbers are words
  without hyphens ("twenty five", "one hundred five"), ordinals for dates ("May third").
- Chinese ends with 。 and has no other punctuation; English is sentence case with a
  final period. Chinese has 4–14 characters (without 。), English 3–9 words.
- Tense is marked compositionally: 了 → English past, 要 → "will", 每天 → present;
  a bare time word with a travel/meeting verb → present ("王先生明天去北京。" →
  "Mr. Wang goes to Beijing tomorrow.").

`read_pairs()` yields `NUM_PAIRS` distinct pairs (distinct Chinese sentences) in a fixed
order; item k has id f"{template}-{k:05d}" (e.g. "price-00042") and attempt i is drawn
with its own `random.Random(f"{SEED}:{i}")` (no global RNG), so the output depends on
nothing but this file, and a shorter run yields a prefix of a longer one.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

from data_pipelines.sources import SourcePair

CORPUS_NAMES = ("drill",)
LANGS = ("zh", "en")  # (src, tgt) order of the pairs this reader yields
LICENSE = "CC0-1.0"
ATTRIBUTION = ("Interpreting-drill sentences generated from templates by liveinterp "
               "(data_pipelines/sources/drills.py); no third-party text, dedicated to "
               "the public domain (CC0 1.0).")
NUM_PAIRS = 12000  # ≈ 2 % each go to dev and test (`corpus.DEV_FRACTION`)
SEED = "liveinterp-drill-v1"
ZH_CHARS = (4, 14)  # Chinese characters without 。
EN_WORDS = (3, 9)

# ---- numbers ---------------------------------------------------------------------------
_ZH_DIGITS = "零一二三四五六七八九"
_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve "
            "thirteen fourteen fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty",
            "ninety")
_EN_ORD = ("",) + tuple("first second third fourth fifth sixth seventh eighth ninth tenth "
           "eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth "
           "eighteenth nineteenth".split())


def zh_number(n: int, *, count: bool = False) -> str:
  """0–999 in hanzi (十五, 二十, 一百零五, 一百一十); `count`: 两 for 2 and 两百 for 200
  (before a measure word)."""
  if not 0 <= n <= 999:
    raise ValueError(f"zh_number: {n} outside 0..999")
  if count and n == 2:
    return "两"
  if n < 10:
    return _ZH_DIGITS[n]
  if n < 100:
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else _ZH_DIGITS[tens]) + "十" + (_ZH_DIGITS[ones] if ones else "")
  hundreds, rest = divmod(n, 100)
  out = ("两" if count and hundreds == 2 else _ZH_DIGITS[hundreds]) + "百"
  if rest == 0:
    return out
  if rest < 10:
    return out + "零" + _ZH_DIGITS[rest]
  tens, ones = divmod(rest, 10)
  return out + _ZH_DIGITS[tens] + "十" + (_ZH_DIGITS[ones] if ones else "")


def en_number(n: int) -> str:
  """0–999 in English words, no hyphens or "and" ("twenty five", "one hundred five")."""
  if not 0 <= n <= 999:
    raise ValueError(f"en_number: {n} outside 0..999")
  if n < 20:
    return _EN_ONES[n]
  if n < 100:
    tens, ones = divmod(n, 10)
    return _EN_TENS[tens] + (" " + _EN_ONES[ones] if ones else "")
  hundreds, rest = divmod(n, 100)
  return _EN_ONES[hundreds] + " hundred" + (" " + en_number(rest) if rest else "")


def en_ordinal(n: int) -> str:
  """1–31 as an ordinal in words ("third", "twenty first", "thirtieth")."""
  if not 1 <= n <= 31:
    raise ValueError(f"en_ordinal: {n} outside 1..31")
  if n < 20:
    return _EN_ORD[n]
  tens, ones = divmod(n, 10)
  if ones == 0:
    return _EN_TENS[tens][:-1] + "ieth"
  return _EN_TENS[tens] + " " + _EN_ORD[ones]


# ---- vocabulary ------------------------------------------------------------------------
# (zh, en, person): person "3" takes the English -s form; copula by `_BE`.
_PRONOUNS = (("我", "I", "1s"), ("你", "you", "2"), ("他", "he", "3"), ("她", "she", "3"),
             ("我们", "we", "p"), ("他们", "they", "p"), ("你们", "you", "2"))
_SURNAMES = (("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("陈", "Chen"), ("刘", "Liu"),
             ("赵", "Zhao"), ("杨", "Yang"), ("黄", "Huang"))
_TITLES = (("先生", "Mr."), ("小姐", "Ms."), ("太太", "Mrs."), ("老师", "Teacher"),
           ("医生", "Doctor"))
_FAMILY = (("我妈妈", "my mother"), ("我爸爸", "my father"), ("我哥哥", "my brother"),
           ("我姐姐", "my sister"), ("我朋友", "my friend"))
_PLURAL_SUBJECTS = (("我们", "we"), ("他们", "they"), ("你们", "you"))
_BE = {"1s": "am", "2": "are", "3": "is", "p": "are"}
_CITIES = (("北京", "Beijing"), ("上海", "Shanghai"), ("广州", "Guangzhou"),
           ("深圳", "Shenzhen"), ("南京", "Nanjing"), ("杭州", "Hangzhou"),
           ("成都", "Chengdu"), ("天津", "Tianjin"), ("武汉", "Wuhan"),
           ("重庆", "Chongqing"), ("东京", "Tokyo"), ("伦敦", "London"),
           ("巴黎", "Paris"), ("纽约", "New York"))
_WEEKDAYS = (("星期一", "Monday"), ("星期二", "Tuesday"), ("星期三", "Wednesday"),
             ("星期四", "Thursday"), ("星期五", "Friday"), ("星期六", "Saturday"),
             ("星期天", "Sunday"))
_MONTHS = ("January February March April May June July August September October "
           "November December").split()
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAY_PARTS = (("上午", "in the morning"), ("下午", "in the afternoon"),
              ("晚上", "in the evening"))

# Time phrases: (zh, en, tense) with tense past | future | habit.
_TIMES = (
    ("昨天", "yesterday", "past"), ("昨天上午", "yesterday morning", "past"),
    ("昨天下午", "yesterday afternoon", "past"), ("昨天晚上", "last night", "past"),
    ("上星期", "last week", "past"), ("上个月", "last month", "past"),
    ("去年", "last year", "past"),
    ("今天", "today", "future"), ("今天下午", "this afternoon", "future"),
    ("今天晚上", "this evening", "future"), ("明天", "tomorrow", "future"),
    ("明天上午", "tomorrow morning", "future"), ("明天下午", "tomorrow afternoon", "future"),
    ("明天晚上", "tomorrow evening", "future"), ("下星期", "next week", "future"),
    ("下个月", "next month", "future"), ("明年", "next year", "future"),
    ("每天", "every day", "habit"), ("每天上午", "every morning", "habit"),
    ("每天晚上", "every evening", "habit"),
) + tuple((f"上{zh}", f"last {en}", "past") for zh, en in _WEEKDAYS) \
  + tuple((f"下{zh}", f"next {en}", "future") for zh, en in _WEEKDAYS) \
  + tuple((f"每个{zh}", f"every {en}", "habit") for zh, en in _WEEKDAYS)
# Day words without a day part (they combine with a clock time that may carry one).
_PLAIN_DAYS = tuple(t for t in _TIMES if t[0] in ("昨天", "今天", "明天")
                    or (t[0][0] in "上下" and t[0][1:3] == "星期" and len(t[0]) == 4))

# Countable things: (measure word, zh noun, en singular, en plural).
_DRINKS = (("杯", "咖啡", "cup of coffee", "cups of coffee"),
           ("杯", "茶", "cup of tea", "cups of tea"),
           ("瓶", "水", "bottle of water", "bottles of water"),
           ("瓶", "啤酒", "bottle of beer", "bottles of beer"),
           ("杯", "牛奶", "glass of milk", "glasses of milk"))
_FOODS = (("个", "苹果", "apple", "apples"), ("个", "鸡蛋", "egg", "eggs"),
          ("个", "包子", "bun", "buns"), ("碗", "米饭", "bowl of rice", "bowls of rice"),
          ("碗", "面条", "bowl of noodles", "bowls of noodles"),
          ("公斤", "苹果", "kilogram of apples", "kilograms of apples"))
_GOODS = (("本", "书", "book", "books"), ("张", "票", "ticket", "tickets"),
          ("张", "地图", "map", "maps"), ("件", "衬衫", "shirt", "shirts"),
          ("双", "鞋", "pair of shoes", "pairs of shoes"), ("支", "笔", "pen", "pens"),
          ("把", "椅子", "chair", "chairs"), ("张", "桌子", "table", "tables"),
          ("台", "电脑", "computer", "computers"), ("辆", "自行车", "bicycle", "bicycles"),
          ("辆", "车", "car", "cars"))
_COMPANIONS = (("个", "朋友", "friend", "friends"), ("个", "孩子", "child", "children"),
               ("只", "猫", "cat", "cats"), ("只", "狗", "dog", "dogs"),
               ("个", "学生", "student", "students"))
_PLACES = (("房间里", "in the room"), ("教室里", "in the classroom"),
           ("商店里", "in the shop"), ("车里", "in the car"), ("桌子上", "on the table"))

# Verbs: zh, (base, 3rd person -s, past), objects it takes.
_CONSUME = (("买", ("buy", "buys", "bought"), _DRINKS + _FOODS + _GOODS),
            ("卖", ("sell", "sells", "sold"), _FOODS + _GOODS),
            ("喝", ("drink", "drinks", "drank"), _DRINKS),
            ("吃", ("eat", "eats", "ate"), _FOODS[:-1]))
_TRAVEL = (("去", ("go to", "goes to", "went to")),
           ("来", ("come to", "comes to", "came to")),
           ("到", ("arrive in", "arrives in", "arrived in")),
           ("坐飞机去", ("fly to", "flies to", "flew to")),
           ("坐火车去", ("take the train to", "takes the train to", "took the train to")))
_ROUTINE = (("起床", ("get up", "gets up", "got up")),
            ("上班", ("start work", "starts work", "started work")),
            ("下班", ("finish work", "finishes work", "finished work")),
            ("回家", ("go home", "goes home", "went home")),
            ("吃饭", ("have dinner", "has dinner", "had dinner")))

Pair = tuple[str, str]


def _pick(rng: random.Random, seq):
  return seq[rng.randrange(len(seq))]


def _person(rng: random.Random) -> tuple[str, str, str]:
  """A subject: (zh, en, person)."""
  r = rng.random()
  if r < 0.4:
    return _pick(rng, _PRONOUNS)
  if r < 0.85:
    (zs, es), (zt, et) = _pick(rng, _SURNAMES), _pick(rng, _TITLES)
    return zs + zt, f"{et} {es}", "3"
  return (*_pick(rng, _FAMILY), "3")


def _object_person(rng: random.Random) -> tuple[str, str]:
  """A person as object: titled name or family member (no pronoun case forms)."""
  if rng.random() < 0.8:
    (zs, es), (zt, et) = _pick(rng, _SURNAMES), _pick(rng, _TITLES)
    return zs + zt, f"{et} {es}"
  return _pick(rng, _FAMILY)


def _verb(forms: tuple[str, str, str], person: str, tense: str) -> str:
  if tense == "past":
    return forms[2]
  if tense == "future":
    return "will " + forms[0]
  return forms[1] if person == "3" else forms[0]


def _count(rng: random.Random, hi: int = 20) -> int:
  """A small count, biased low (1–hi, sometimes up to 99)."""
  return rng.randint(1, hi) if rng.random() < 0.8 else rng.randint(1, 99)


def _quantity(rng: random.Random, things) -> tuple[str, str, int]:
  mw, noun, sg, pl = _pick(rng, things)
  n = _count(rng)
  return zh_number(n, count=True) + mw + noun, f"{en_number(n)} {sg if n == 1 else pl}", n


def _clock(rng: random.Random) -> tuple[str, str]:
  """Clock time: (zh 三点二十分 / 两点半 / 十点, en "three twenty" / "two thirty" /
  "ten o'clock"), optionally with a day part (下午三点 → "three in the afternoon")."""
  h = rng.randint(1, 12)
  m = _pick(rng, (0, 0, 0, 5, 10, 15, 20, 25, 30, 30, 35, 40, 45, 50, 55))
  zh = ("两" if h == 2 else zh_number(h)) + "点"
  if m == 30 and rng.random() < 0.5:
    zh += "半"
  elif m:
    zh += ("零" + zh_number(m) if m < 10 else zh_number(m)) + "分"
  en = en_number(h) + (" o'clock" if m == 0 else
                       " oh " + en_number(m) if m < 10 else " " + en_number(m))
  if rng.random() < 0.3:
    zp, ep = _pick(rng, _DAY_PARTS)
    return zp + zh, (en_number(h) if m == 0 else en) + " " + ep
  return zh, en


def _date(rng: random.Random) -> tuple[str, str]:
  """(五月三号, May third)."""
  month = rng.randint(1, 12)
  day = rng.randint(1, _MONTH_DAYS[month - 1])
  return f"{zh_number(month)}月{zh_number(day)}号", f"{_MONTHS[month - 1]} {en_ordinal(day)}"


def _price(rng: random.Random) -> tuple[str, int]:
  r = rng.random()
  if r < 0.75:
    n = rng.randint(1, 99)
  else:
    n = rng.randint(1, 9) * 100 + rng.choice((0, 0, 10, 20, 50, 80))
  return zh_number(n, count=True) + "块钱", n


# ---- templates: rng -> (zh, en) without final punctuation --------------------------------
def _t_consume(rng):
  zs, es, p = _person(rng)
  zv, forms, things = _pick(rng, _CONSUME)
  zq, eq, _ = _quantity(rng, things)
  r = rng.random()
  if r < 0.25:  # no time phrase, past: 她买了五本书。
    return f"{zs}{zv}了{zq}", f"{es} {forms[2]} {eq}"
  zt, et, tense = _pick(rng, _TIMES)
  zmark = {"past": zv + "了", "future": "要" + zv, "habit": zv}[tense]
  return f"{zs}{zt}{zmark}{zq}", f"{es} {_verb(forms, p, tense)} {eq} {et}"


def _t_want(rng):
  zs, es, p = _person(rng)  # 我要两杯咖啡。 -> I want two cups of coffee.
  zq, eq, _ = _quantity(rng, _DRINKS + _FOODS[:-1] + _GOODS)
  return f"{zs}要{zq}", f"{es} {'wants' if p == '3' else 'want'} {eq}"


def _t_travel(rng):
  zs, es, p = _person(rng)
  zv, forms = _pick(rng, _TRAVEL)
  zc, ec = _pick(rng, _CITIES)
  r = rng.random()
  if r < 0.2:  # date: 他五月三号去北京。 -> He goes to Beijing on May third.
    zd, ed = _date(rng)
    tense = _pick(rng, ("plain", "future", "past"))
    zv2 = {"plain": zv, "future": "要" + zv, "past": zv + "了"}[tense]
    ev = _verb(forms, p, "habit" if tense == "plain" else tense)
    return f"{zs}{zd}{zv2}{zc}", f"{es} {ev} {ec} on {ed}"
  if r < 0.3:  # year: 他二零一九年去了上海。 -> He went to Shanghai in twenty nineteen.
    y = rng.randint(2010, 2029)
    zy = "".join(_ZH_DIGITS[int(c)] for c in str(y)) + "年"
    return f"{zs}{zy}{zv}了{zc}", f"{es} {forms[2]} {ec} in twenty {en_number(y - 2000)}"
  if r < 0.45:  # clock: 他明天三点到上海。 -> He will arrive in Shanghai at three tomorrow.
    zk, ek = _clock(rng)
    zt, et, _ = _pick(rng, [t for t in _PLAIN_DAYS if t[2] == "future"])
    return f"{zs}{zt}{zk}要{zv}{zc}", f"{es} will {forms[0]} {ec} at {ek} {et}"
  zt, et, tense = _pick(rng, _TIMES)
  if tense == "future" and rng.random() < 0.5:  # 王先生明天去北京。 -> ... goes to ...
    return f"{zs}{zt}{zv}{zc}", f"{es} {_verb(forms, p, 'habit')} {ec} {et}"
  zmark = {"past": zv + "了", "future": "要" + zv, "habit": zv}[tense]
  return f"{zs}{zt}{zmark}{zc}", f"{es} {_verb(forms, p, tense)} {ec} {et}"


def _t_meeting(rng):
  zs, es = _pick(rng, _PLURAL_SUBJECTS)
  zk, ek = _clock(rng)
  r = rng.random()
  if r < 0.35:  # 我们三点二十分开会。
    return f"{zs}{zk}开会", f"{es} meet at {ek}"
  if r < 0.7:  # 我们星期二三点开会。 -> We meet at three o'clock on Tuesday.
    zd, ed = _pick(rng, _WEEKDAYS)
    return f"{zs}{zd}{zk}开会", f"{es} meet at {ek} on {ed}"
  zc, ec = _pick(rng, _CITIES)  # 我们明天在上海开会。 -> We meet in Shanghai tomorrow.
  zt, et, tense = _pick(rng, _TIMES)
  zv = {"past": "开了会", "future": "开会", "habit": "开会"}[tense]
  zf = "要" if tense == "future" else ""  # 我们明天要在上海开会。
  ev = {"past": "met", "future": "will meet", "habit": "meet"}[tense]
  return f"{zs}{zt}{zf}在{zc}{zv}", f"{es} {ev} in {ec} {et}"


def _t_routine(rng):
  zs, es, p = _person(rng)
  zv, forms = _pick(rng, _ROUTINE)
  zk, ek = _clock(rng)
  if rng.random() < 0.5:  # 她每天六点半起床。 -> She gets up at six thirty every day.
    zt, et = _pick(rng, (("每天", "every day"), ("", "")))
    return f"{zs}{zt}{zk}{zv}", f"{es} {_verb(forms, p, 'habit')} at {ek} {et}"
  # 他昨天十点回家。 -> He went home at ten o'clock yesterday. (the time word sets the
  # tense; 要 marks the future: 他明天七点要起床。 -> He will get up at seven tomorrow.)
  zt, et, tense = _pick(rng, _PLAIN_DAYS)
  zm = zv if tense == "past" else "要" + zv
  return f"{zs}{zt}{zk}{zm}", f"{es} {_verb(forms, p, tense)} at {ek} {et}"


def _t_meet_person(rng):
  zs, es, p = _person(rng)
  zo, eo = _object_person(rng)
  zt, et, tense = _pick(rng, _TIMES)
  r = rng.random()
  if r < 0.5:  # 我明天要给王先生打电话。 -> I will call Mr. Wang tomorrow.
    zv = {"past": f"给{zo}打了电话", "future": f"要给{zo}打电话",
          "habit": f"给{zo}打电话"}[tense]
    return f"{zs}{zt}{zv}", f"{es} {_verb(('call', 'calls', 'called'), p, tense)} {eo} {et}"
  zc, ec = _pick(rng, _CITIES)  # 我明天在上海见王先生。 -> I will meet Mr. Wang in Shanghai tomorrow.
  zv = "见了" if tense == "past" else "见"
  zf = "要" if tense == "future" else ""  # 我明天要在上海见王先生。
  return (f"{zs}{zt}{zf}在{zc}{zv}{zo}",
          f"{es} {_verb(('meet', 'meets', 'met'), p, tense)} {eo} in {ec} {et}")


def _t_price(rng):
  mw, noun, sg, pl = _pick(rng, _DRINKS + _FOODS[:-1] + _GOODS)
  zp, n = _price(rng)
  if rng.random() < 0.7:  # 这本书十块钱。 -> This book costs ten yuan.
    return f"这{mw}{noun}{zp}", f"this {sg} costs {en_number(n)} yuan"
  k = rng.randint(2, 9)  # 这三本书五十块钱。 -> These three books cost fifty yuan.
  return (f"这{zh_number(k, count=True)}{mw}{noun}{zp}",
          f"these {en_number(k)} {pl} cost {en_number(n)} yuan")


def _t_spend(rng):
  zs, es, p = _person(rng)
  zp, n = _price(rng)
  if rng.random() < 0.5:  # 他花了三十块钱。 -> He spent thirty yuan.
    return f"{zs}花了{zp}", f"{es} spent {en_number(n)} yuan"
  zt, et, tense = _pick(rng, [t for t in _TIMES if t[2] == "past"])
  return f"{zs}{zt}花了{zp}", f"{es} spent {en_number(n)} yuan {et}"


def _t_have(rng):
  zs, es, p = _person(rng)
  zq, eq, _ = _quantity(rng, _COMPANIONS + _GOODS)
  return f"{zs}有{zq}", f"{es} {'has' if p == '3' else 'have'} {eq}"


def _t_there_is(rng):
  zl, el = _pick(rng, _PLACES)  # 房间里有五个人。 -> There are five people in the room.
  things = _COMPANIONS + _GOODS + (("个", "人", "person", "people"),)
  zq, eq, n = _quantity(rng, things)
  return f"{zl}有{zq}", f"there {'is' if n == 1 else 'are'} {eq} {el}"


def _t_date(rng):
  zd, ed = _date(rng)
  r = rng.random()
  if r < 0.25:
    return f"我的生日是{zd}", f"my birthday is {ed}"
  if r < 0.45:  # 王先生的生日是五月三号。 -> Mr. Wang's birthday is May third.
    zo, eo = _object_person(rng)
    return f"{zo}的生日是{zd}", f"{eo}'s birthday is {ed}"
  if r < 0.65:
    zt, et = _pick(rng, (("今天", "today"), ("明天", "tomorrow"), ("昨天", "yesterday")))
    be = "was" if zt == "昨天" else "is"
    if rng.random() < 0.5:
      zw, ew = _pick(rng, _WEEKDAYS)
      return f"{zt}是{zw}", f"{et} {be} {ew}"
    return f"{zt}是{zd}", f"{et} {be} {ed}"
  if r < 0.85:  # 会议在五月三号。 -> The meeting is on May third.
    zw, ew = _pick(rng, (("会议", "the meeting"), ("考试", "the exam"),
                          ("音乐会", "the concert")))
    return f"{zw}在{zd}", f"{ew} is on {ed}"
  zc, ec = _pick(rng, _CITIES)  # 我们五月三号在北京开会。
  zs, es = _pick(rng, _PLURAL_SUBJECTS)
  return f"{zs}{zd}在{zc}开会", f"{es} meet in {ec} on {ed}"


def _t_now(rng):
  zk, ek = _clock(rng)  # 现在三点二十分。 -> It is three twenty now.
  return f"现在{zk}", f"it is {ek} now"


def _t_age(rng):
  zs, es, p = _person(rng)
  n = rng.randint(2, 90)
  return f"{zs}{zh_number(n)}岁", f"{es} {_BE[p]} {en_number(n)} years old"


def _t_duration(rng):
  zs, es, p = _person(rng)
  n = _count(rng, 12)
  units = (("分钟", "minute"), ("个小时", "hour"), ("天", "day"), ("个星期", "week"),
           ("个月", "month"), ("年", "year"))
  zu, eu = _pick(rng, units)
  eu += "" if n == 1 else "s"
  zn = zh_number(n, count=True)
  r = rng.random()
  if r < 0.35:  # 他等了二十分钟。 -> He waited twenty minutes.
    return f"{zs}等了{zn}{zu}", f"{es} waited {en_number(n)} {eu}"
  if r < 0.7:  # 她在上海住了三年。 -> She lived in Shanghai for three years.
    zu, eu = _pick(rng, units[2:])  # days to years
    eu += "" if n == 1 else "s"
    zc, ec = _pick(rng, _CITIES)
    zv, ev = _pick(rng, (("住", "lived"), ("工作", "worked")))
    return f"{zs}在{zc}{zv}了{zn}{zu}", f"{es} {ev} in {ec} for {en_number(n)} {eu}"
  zv, ev = _pick(rng, (("工作", "worked"), ("学习", "studied"), ("睡", "slept")))
  return f"{zs}{zv}了{zn}{zu}", f"{es} {ev} for {en_number(n)} {eu}"


def _t_live(rng):
  zs, es, p = _person(rng)
  zc, ec = _pick(rng, _CITIES)
  if rng.random() < 0.3:  # 他住在北京。 -> He lives in Beijing.
    return f"{zs}住在{zc}", f"{es} {'lives' if p == '3' else 'live'} in {ec}"
  # 他在北京工作。 -> He works in Beijing.
  zv, forms = _pick(rng, (("工作", ("work", "works")), ("学习", ("study", "studies"))))
  return f"{zs}在{zc}{zv}", f"{es} {forms[1] if p == '3' else forms[0]} in {ec}"


def _t_weather(rng):
  zc, ec = _pick(rng, _CITIES)  # 北京今天二十五度。 -> It is twenty five degrees in Beijing today.
  zt, et = _pick(rng, (("今天", "today"), ("明天", "tomorrow")))
  n = rng.randint(1, 40)
  be = "is" if zt == "今天" else "will be"
  return f"{zc}{zt}{zh_number(n)}度", f"it {be} {en_number(n)} degrees in {ec} {et}"


TEMPLATES: tuple[tuple[str, Callable[[random.Random], Pair], float], ...] = (
    # (name, template, weight)
    ("consume", _t_consume, 3.0), ("want", _t_want, 0.5), ("travel", _t_travel, 3.0),
    ("meeting", _t_meeting, 1.5), ("routine", _t_routine, 1.5),
    ("meet_person", _t_meet_person, 2.0), ("price", _t_price, 1.5),
    ("spend", _t_spend, 0.5), ("have", _t_have, 1.0), ("there_is", _t_there_is, 1.0),
    ("date", _t_date, 1.5), ("now", _t_now, 0.5), ("age", _t_age, 0.7),
    ("duration", _t_duration, 1.2), ("live", _t_live, 0.6), ("weather", _t_weather, 0.5),
)


def _finish(zh: str, en: str) -> Pair:
  en = " ".join(en.split())
  return zh + "。", en[0].upper() + en[1:] + "."


def fits(zh: str, en: str) -> bool:
  """Whether a finished pair has the drill lengths (`ZH_CHARS`, `EN_WORDS`)."""
  n_zh, n_en = len(zh.rstrip("。")), len(en.split())
  return ZH_CHARS[0] <= n_zh <= ZH_CHARS[1] and EN_WORDS[0] <= n_en <= EN_WORDS[1]


def generate(num_pairs: int = NUM_PAIRS, seed: str = SEED) -> Iterator[tuple[str, str, str]]:
  """(item id, zh, en) of `num_pairs` distinct drills (distinct Chinese), in order."""
  names = [t[0] for t in TEMPLATES]
  fns = [t[1] for t in TEMPLATES]
  weights = [t[2] for t in TEMPLATES]
  seen: set[str] = set()
  k = attempt = 0
  while k < num_pairs:
    rng = random.Random(f"{seed}:{attempt}")
    attempt += 1
    if attempt > 50 * num_pairs + 1000:
      raise RuntimeError(f"drills: only {k} distinct pairs after {attempt} attempts")
    i = rng.choices(range(len(fns)), weights)[0]
    zh, en = _finish(*fns[i](rng))
    if zh in seen or not fits(zh, en):
      continue
    seen.add(zh)
    yield f"{names[i]}-{k:05d}", zh, en
    k += 1


def read_pairs(root: str = "", num_pairs: int = NUM_PAIRS) -> Iterator[SourcePair]:
  """Yields (chinese, english, "drill", item id) for `num_pairs` generated drills.

  `root` is unused (the corpus reader signature; nothing to fetch).
  """
  del root
  for item_id, zh, en in generate(num_pairs):
    yield SourcePair(zh, en, "drill", item_id)
