"""Source readers: HSK on the real wheel; LibreOffice, Bible and Ding on tiny fixture
trees written here in the exact upstream (Debian package) layout — no apt needed."""

import os
import struct
import zlib

import pytest

from data_pipelines.sources import SourceFormatError, bible, ding, hsk, libreoffice
from data_pipelines.sources import licenses


# ---- HSK (real data) ----------------------------------------------------------------

def test_hsk_reads_real_wheel():
  pairs = list(hsk.read_pairs())
  assert len(pairs) > 4000
  first = pairs[0]
  assert first.source == "hsk" and first.item_id.startswith("hsk")
  assert any("\u4e00" <= c <= "\u9fff" for c in first.src)
  assert first.tgt and first.tgt.isascii()
  assert len({p.item_id for p in pairs}) == len(pairs)


def test_hsk_bad_layout_names_file(tmp_path):
  path = tmp_path / "sentences.json"
  path.write_text('{"not": "a list"}', encoding="utf-8")
  with pytest.raises(SourceFormatError, match="sentences.json"):
    list(hsk.read_pairs(str(path)))


def test_licenses_constants():
  lic = licenses()
  assert lic["hsk"]["license"] == "CC-BY-SA-4.0"
  assert lic["lo_help"]["license"] == lic["lo_ui"]["license"] == "MPL-2.0"
  assert lic["bible"]["license"] == "Public domain"
  assert lic["ding"]["license"].startswith("GPL-2")
  assert all(v["attribution"] for v in lic.values())


# ---- LibreOffice ---------------------------------------------------------------------

def _write_mo(path, entries):
  """Minimal GNU .mo writer (little endian, no hash table)."""
  keys = sorted(entries)
  ids = b"".join(k.encode() + b"\0" for k in keys)
  strs = b"".join(entries[k].encode() + b"\0" for k in keys)
  n = len(keys)
  orig_off, trans_off = 28, 28 + 8 * n
  data_off = 28 + 16 * n
  o_tab, t_tab = [], []
  pos = data_off
  for k in keys:
    o_tab.append((len(k.encode()), pos))
    pos += len(k.encode()) + 1
  for k in keys:
    t_tab.append((len(entries[k].encode()), pos))
    pos += len(entries[k].encode()) + 1
  out = struct.pack("<7I", 0x950412DE, 0, n, orig_off, trans_off, 0, 0)
  out += b"".join(struct.pack("<2I", *e) for e in o_tab + t_tab)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(out + ids + strs)


def _page(body):
  return f"<html><body><div id=\"DisplayArea\">{body}</div></body></html>"


def _lo_tree(root):
  help_dir = os.path.join(root, "usr/share/libreoffice/help")
  zh = os.path.join(help_dir, "zh-CN/text/swriter")
  en = os.path.join(help_dir, "en-US/text/swriter")
  os.makedirs(zh)
  os.makedirs(en)
  with open(os.path.join(zh, "main0110.html"), "w", encoding="utf-8") as f:
    f.write(_page(
      '<h1 id="hd_id1" dir="auto">表格</h1>'
      '<p id="par_idN10563" class="paragraph" dir="auto"><span class="avis">'
      '显示用于插入表格的命令。</span></p>'
      '<p id="par_id2" class="paragraph">Untranslated text.</p>'
      '<p id="par_id3" class="paragraph">只有中文。</p>'
      '<p id="other_id" class="paragraph">不是段落编号。</p>'
      '<p id="par_id4" class="paragraph">第一段。</p><p id="par_id4">第二段。</p>'))
  with open(os.path.join(en, "main0110.html"), "w", encoding="utf-8") as f:
    f.write(_page(
      '<h1 id="hd_id1" dir="auto">Tables</h1>'
      '<p id="par_idN10563" class="paragraph" dir="auto"><span class="avis">'
      'Shows commands to insert a table.</span></p>'
      '<p id="par_id2" class="paragraph">Untranslated text.</p>'
      '<p id="other_id" class="paragraph">Not a paragraph id.</p>'
      '<p id="par_id4" class="paragraph">First one.</p><p id="par_id4">Second one.</p>'))
  with open(os.path.join(zh, "orphan.html"), "w", encoding="utf-8") as f:
    f.write(_page('<p id="par_id9">没有英文页。</p>'))
  mo = os.path.join(root, "usr/lib/libreoffice/program/resource/zh_CN/LC_MESSAGES")
  _write_mo(os.path.join(mo, "sw.mo"), {
    "": "Content-Type: text/plain; charset=UTF-8\n",
    "STR_INSERT\x04~Insert Table": "插入表格(~I)",
    "STR_DELETE\x04Delete": "删除",
  })


def test_libreoffice_help_pairs_by_id(tmp_path):
  _lo_tree(str(tmp_path))
  pairs = list(libreoffice.read_help_pairs(str(tmp_path), "zh"))
  got = {p.item_id: (p.src, p.tgt) for p in pairs}
  assert got["text/swriter/main0110.html#hd_id1"] == ("表格", "Tables")
  src, tgt = got["text/swriter/main0110.html#par_idN10563"]
  assert "显示用于插入表格的命令" in src and "Shows commands" in tgt
  assert "<span" in src  # raw markup: cleaning strips it later
  assert got["text/swriter/main0110.html#par_id4"] == ("第一段。", "First one.")
  assert got["text/swriter/main0110.html#par_id4#1"] == ("第二段。", "Second one.")
  assert "text/swriter/main0110.html#par_id3" not in got  # no en twin element
  assert not any("other_id" in k or "orphan" in k for k in got)
  assert all(p.source == "lo_help" for p in pairs)


def test_libreoffice_ui_pairs_from_mo(tmp_path):
  _lo_tree(str(tmp_path))
  pairs = list(libreoffice.read_ui_pairs(str(tmp_path), "zh"))
  got = sorted((p.src, p.tgt) for p in pairs)
  assert got == [("删除", "Delete"), ("插入表格(~I)", "~Insert Table")]  # header skipped
  assert all(p.item_id.startswith("sw.mo#") for p in pairs)


def test_libreoffice_packages_and_missing_tree(tmp_path):
  assert libreoffice.packages("zh") == ("libreoffice-help-zh-cn", "libreoffice-help-en-us",
                                        "libreoffice-l10n-zh-cn")
  assert libreoffice.packages("de")[0] == "libreoffice-help-de"
  with pytest.raises(SourceFormatError, match="zh-CN"):
    list(libreoffice.read_help_pairs(str(tmp_path), "zh"))
  with pytest.raises(ValueError, match="xx"):
    libreoffice.packages("xx")


# ---- Bible (SWORD zText modules) ------------------------------------------------------

def _write_ztext(moddir, verses):
  """OT zText module (one BOOK block) whose index i holds verses[i] (KJV-style layout:
  0-1 testament headings, 2 Genesis heading, 3 chapter heading, 4 = Gen 1:1)."""
  os.makedirs(moddir, exist_ok=True)
  block = b""
  records = []
  for text in verses:
    data = text.encode("utf-8")
    records.append(struct.pack("<IIH", 0, len(block), len(data)))
    block += data
  comp = zlib.compress(block)
  with open(os.path.join(moddir, "ot.bzv"), "wb") as f:
    f.write(b"".join(records))
  with open(os.path.join(moddir, "ot.bzs"), "wb") as f:
    f.write(struct.pack("<III", 0, len(comp), len(block)))
  with open(os.path.join(moddir, "ot.bzz"), "wb") as f:
    f.write(comp)


def _bible_tree(root):
  sword = os.path.join(root, "usr/share/sword")
  os.makedirs(os.path.join(sword, "mods.d"))
  for module, versification in (("engWEB2015eb", "NRSVA"), ("spaRV1909eb", "KJV")):
    with open(os.path.join(sword, "mods.d", f"{module}.conf"), "w") as f:
      f.write(f"# comment\n[{module}]\nDataPath=./modules/texts/ztext/{module}/\n"
              f"ModDrv=zText\nSourceType=OSIS\nEncoding=UTF-8\nCompressType=ZIP\n"
              f"BlockType=BOOK\nVersification={versification}\n")
  heads = ["", "", "", ""]
  _write_ztext(os.path.join(sword, "modules/texts/ztext/engWEB2015eb"), heads + [
    '<w lemma="strong:H0430">In</w> the beginning, God<note placement="foot">'
    '<reference type="annotateRef">1:1 </reference>The Hebrew word rendered “God”.</note>'
    '<w lemma="strong:H1254">created</w> the heavens and the earth.',
    '<title type="section">The Creation</title>The earth was formless and empty.',
    "Only in English.",
  ])
  _write_ztext(os.path.join(sword, "modules/texts/ztext/spaRV1909eb"), heads + [
    "EN el principio crió Dios los cielos y la tierra.",
    "Y la tierra estaba desordenada y vacía.",
  ])


def test_bible_pairs_by_reference_and_notes_removed(tmp_path):
  _bible_tree(str(tmp_path))
  pairs = list(bible.read_pairs(str(tmp_path)))
  got = {p.item_id: (p.src, p.tgt) for p in pairs}
  assert set(got) == {"Gen.1.1", "Gen.1.2"}  # Gen.1.3 has no Spanish verse
  assert got["Gen.1.1"] == ("In the beginning, God created the heavens and the earth.",
                            "EN el principio crió Dios los cielos y la tierra.")
  assert got["Gen.1.2"][0] == "The earth was formless and empty."  # section title gone


def test_bible_clean_osis_keeps_canonical_title():
  markup = ('<title canonical="true" type="psalm">A Psalm by David.</title>'
            '<l level="1"/>Yahweh, how my adversaries have increased!'
            '<note placement="foot">note text</note>')
  assert bible.clean_osis(markup) == "A Psalm by David. Yahweh, how my adversaries have increased!"


def test_bible_missing_tree(tmp_path):
  with pytest.raises(SourceFormatError, match="sword"):
    list(bible.read_pairs(str(tmp_path)))


# ---- Ding -----------------------------------------------------------------------------

DING = "\n".join([
  "# Version :: devel 2023-01-30",
  "# License :: GPL Version 2 or later; GNU General Public License",
  "Anstand {m}; Schicklichkeit {f} | Er hat keinen Funken Anstand. :: "
  "decency | He has not a spark of decency.",
  "Alkoholfahne {f} | Er hat eine Fahne. :: "
  "alcohol breath | His breath smells of booze/reeks of alcohol.",
  "Aal {m} | Aale {pl} :: eel | eels",
  "Unordnung {f} | Entschuldige bitte die Unordnung.; Entschuldigt die Unordnung. :: "
  "mess | Please excuse the mess.; Excuse the mess.",
  "jdm. etw. geben | Gib es mir bitte. :: to give sb. sth. | Please give it to me. [Br.]",
  "kaputte Zeile ohne Trenner",
  "Zwei | Teile :: nur ein Teil",
]) + "\n"


def test_ding_example_sentences(tmp_path):
  path = tmp_path / "usr/share/trans/de-en"
  path.parent.mkdir(parents=True)
  path.write_text(DING, encoding="utf-8")
  pairs = list(ding.read_pairs(str(tmp_path)))
  got = [(p.src, p.tgt) for p in pairs]
  assert got == [
    ("Er hat keinen Funken Anstand.", "He has not a spark of decency."),
    ("Entschuldige bitte die Unordnung.", "Please excuse the mess."),
    ("Entschuldigt die Unordnung.", "Excuse the mess."),
    ("Gib es mir bitte.", "Please give it to me."),  # usage label [Br.] stripped
  ]
  assert [p.item_id for p in pairs] == ["line3.1", "line6.1", "line6.1.1", "line7.1"]
  assert all(p.source == "ding" for p in pairs)


def test_ding_missing_file(tmp_path):
  with pytest.raises(SourceFormatError, match="de-en"):
    list(ding.read_pairs(str(tmp_path)))
