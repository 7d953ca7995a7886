"""Text cleaning: every drop reason, markup/placeholder/accelerator handling, words."""

import pytest

from data_pipelines import text_cleaning as tc
from data_pipelines.sources import SourcePair


def _clean(rows, src_lang="zh", tgt_lang="en", **cfg):
  pairs = [SourcePair(s, t, src, f"id{i}") for i, (s, t, src) in enumerate(rows)]
  return tc.clean_pairs(pairs, src_lang, tgt_lang, tc.CleaningConfig(**cfg))


def test_every_drop_reason_counted_with_item_id():
  rows = [
    ("老师，您好！", "Hello, teacher!", "hsk"),                          # kept
    ("", "Hello there friend.", "hsk"),                                # empty
    ("<span>…</span>", "<b></b>", "lo_help"),                          # empty (markup only)
    ("插入 &lt;Empty&gt; 单元格。", "Insert &lt;Empty&gt; cells.", "lo_help"),  # markup
    ("删除 %1 个文件？", "Delete %1 files?", "lo_ui"),                   # placeholder
    ("Untranslated help text.", "Untranslated help text.", "lo_help"),  # untranslated
    ("Only English here.", "Only English here!", "lo_help"),           # untranslated
    ("Plain Latin text only.", "Some other words.", "lo_help"),        # no_cjk
    ("我们走吧。", "Let's go 我们.", "hsk"),                              # unexpected_cjk
    ("好。", "Good.", "hsk"),                                           # too_short
    ("这" * 20 + "。", "word " * 45, "hsk"),                            # too_long
    ("今天天气很好我们一起去公园散步然后吃饭好吗", "Yes.", "hsk"),  # too_short (tgt)
    ("我喜欢你。", "I really do like you very much indeed, my dear friend from the "
     "old days of our school years.", "hsk"),  # length_ratio
    ("老师，您好！", "Hello, teacher!", "lo_help"),                       # duplicate
    ("老师您好", "hello teacher", "hsk"),                                # duplicate (key)
  ]
  kept, report = _clean(rows)
  assert [p.src for p in kept] == ["老师，您好！"]
  assert report.read == len(rows) and report.kept == 1
  assert dict(report.drops) == {"empty": 2, "markup": 1, "placeholder": 1,
                                "untranslated": 2, "no_cjk": 1, "unexpected_cjk": 1,
                                "too_short": 2, "too_long": 1, "length_ratio": 1,
                                "duplicate": 2}
  assert set(report.drops) == set(tc.DROP_REASONS)
  assert report.drop_examples["placeholder"] == ["lo_ui:id4"]
  assert report.as_dict()["drops"]["duplicate"] == 2


def test_too_long_by_chars():
  kept, report = _clean([("长句子。" * 30, "A long sentence. " * 3, "hsk")], max_chars=100,
                        max_length_ratio=100.0, max_words=1000)
  assert not kept and report.drops["too_long"] == 1


def test_markup_placeholders_accelerators_whitespace():
  rows = [
    ('<ahelp hid=".">使用 %PRODUCTNAME 打开<emph>文档</emph>。</ahelp>',
     '<ahelp hid=".">Open the <emph>document</emph> with $[officename].</ahelp>', "lo_help"),
    ("插入表格(~I)\u00a0 现在", "~Insert   Table\nnow", "lo_ui"),
    ("位置(_P): 在这里", "_Position: here", "lo_ui"),
  ]
  kept, report = _clean(rows, min_words=1)
  assert report.drops == {}
  assert [(p.src, p.tgt) for p in kept] == [
    ("使用 LibreOffice 打开文档。", "Open the document with LibreOffice."),
    ("插入表格 现在", "Insert Table now"),
    ("位置: 在这里", "Position: here"),
  ]
  # underscore mnemonics only for UI catalogs
  assert tc.clean_text("file_name _x") == "file_name _x"
  assert tc.clean_text("_Name", underscore_mnemonics=True) == "Name"


@pytest.mark.parametrize("text,expected", [
  ("Delete %1 files", True), ("%s copied", True), ("Set $(ARG1) now", True),
  ("Item {0} of {1}", True), ("Use %APPDATA% folder", True),
  ("It rose by 50 % today", False), ("Plain text", False),
])
def test_placeholder_detection(text, expected):
  assert tc.has_placeholder(text) is expected


def test_tokenize_words_spans_and_punctuation():
  text = "“Hello,” she said — twice."
  words = tc.tokenize_words(text, "en")
  assert [w.text for w in words] == ["“Hello,”", "she", "said —", "twice."]
  assert all(text[w.start:w.end] == w.text for w in words)
  zh = tc.tokenize_words("老师，您好！我有3个苹果。", "zh")
  assert "".join(w.text for w in zh) == "老师，您好！我有3个苹果。"
  assert zh[0].text == "老师，"
  assert tc.align_token("Hello,”") == "hello"
  assert tc.normalize_key("Hello, World!") == tc.normalize_key("hello world")


def test_cross_call_dedup_with_shared_seen():
  seen = set()
  rows = [("老师，您好！", "Hello, teacher!", "hsk")]
  pairs = [SourcePair(s, t, src, "a") for s, t, src in rows]
  k1, rep = tc.clean_pairs(pairs, "zh", "en", seen=seen)
  k2, rep = tc.clean_pairs(pairs, "zh", "en", report=rep, seen=seen)
  assert len(k1) == 1 and not k2 and rep.drops["duplicate"] == 1
