"""One offline evaluation (issue #11): `liveinterp.offline_eval.offline_eval` is both the
evaluation runner's offline ceiling (task "simul") and the pretrain stage's dev
evaluation (tasks "asr"/"st", `stream_lm._offline_eval`). On a micro random model it
gives what each path computed before it was shared (references built here from the
primitives: pretrain prompts + `generate`, whole-source-first streaming + scores)."""

import numpy as np
import pytest

from configs import micro
from data_pipelines import stream_format as sfmt, tokenizer as tokmod
from liveinterp import evaluate, offline_eval as OE
from liveinterp.eval import quality, streaming_metrics as sm
from liveinterp.inference import generate as gen, loading, session as session_lib

WORDS = "alpha beta gamma delta omega sigma kappa theta lambda zeta".split()
ZH = "一二三四五六七八九十"
SR = 16000


@pytest.fixture(scope="module")
def setup():
  cfg = micro.get_config()
  src_l, tgt_l = str(cfg.data.pair).split("-")
  texts = ([" ".join(np.roll(WORDS, i)) for i in range(10)] * 3
           + [ZH[i:] + ZH[:i] for i in range(10)] * 3)
  tok = tokmod.Tokenizer.train_from_config(texts, None, cfg)
  rng = np.random.default_rng(0)
  records = []
  for i in range(3):
    n = int((1.2 + 0.4 * i) * SR)
    nw = 4 + i
    st = np.linspace(0, 1000 * n / SR - 300, nw).astype(np.float32)
    records.append(dict(
        id=f"r{i}", source="test", speaker=f"s{i}", src_lang=src_l, tgt_lang=tgt_l,
        src_text=ZH[i:i + 4], tgt_text=" ".join(WORDS[i:i + nw]),
        src_audio=(rng.standard_normal(n) * 3000).astype(np.int16),
        tgt_audio=np.zeros(0, np.int16), src_words=list(ZH[i:i + 4]),
        src_word_start_ms=st[:4], src_word_end_ms=st[:4] + 200, tgt_words=WORDS[i:i + nw],
        tgt_word_start_ms=st, tgt_word_end_ms=st + 200, tgt_ready_ms=st + 300,
        alignment=np.zeros((0, 2), np.int32), is_talk=False))
  model, _, _ = loading.build_models(cfg, seed=2)
  return cfg, tok, records, model


@pytest.mark.parametrize("task", ["asr", "st"])
def test_pretrain_format_equals_generate_on_pretrain_prompts(setup, task):
  from liveinterp.train.stages import stream_lm
  cfg, tok, records, model = setup
  spec = sfmt.StreamSpec.from_config(cfg)
  prompts, audios = [], []
  for rec in records:
    ex = sfmt.pretrain_example(rec, tok, spec, task)
    prompts.append(ex["tokens"][:int(np.argmax(ex["loss_mask"] > 0))])
    audios.append(ex["audio"])
  pad = max(int(cfg.data.seq_len), max(len(p) for p in prompts))
  outs = gen.generate(model, prompts, audios, tokmod.AUDIO, [tokmod.EOS, tokmod.EOT],
                      max_new_tokens=6, pad_to=pad)
  hyps = [tok.decode_text(o) for o in outs]
  refs = [r["src_text"] if task == "asr" else r["tgt_text"] for r in records]
  lang = records[0]["src_lang" if task == "asr" else "tgt_lang"]
  want = {"bleu": quality.corpus_bleu(hyps, refs, lang), "chrf": quality.corpus_chrf(hyps, refs)}
  scores, pairs = OE.offline_eval(model, tok, records, task, spec=spec, max_new_tokens=6,
                                  pad_to=int(cfg.data.seq_len))
  assert scores == want and pairs == list(zip(refs, hyps))
  # defaults from cfg: the same numbers when cfg gives the same sizes
  assert OE.offline_eval(model, tok, records, task, cfg=cfg, max_new_tokens=6)[0] == want
  # the pretrain stage's dev evaluation is this function, its keys namespaced
  dev, examples = stream_lm._offline_eval(model, tok, spec, records, task, 6,  # pylint: disable=protected-access
                                          int(cfg.data.seq_len))
  assert dev == {f"eval/{task}_bleu": want["bleu"], f"eval/{task}_chrf": want["chrf"]}
  assert examples == list(zip(refs, hyps))[:3]


def test_simul_equals_whole_source_first_streaming(setup):
  cfg, tok, records, model = setup
  whole = evaluate.text_decoder(cfg, model, tok, max_turn_tokens=int(cfg.data.seq_len))
  with evaluate.without_mesh():
    session_lib.warmup(whole, 4)
  res = evaluate.translate_records(whole, records, tok, batch=4, whole_source_first=True)
  want = sm.simul_scores(res, records, SR)
  scores, pairs = OE.offline_eval(model, tok, records, "simul", cfg=cfg, batch=4)
  assert [h for _, h in pairs] == [r.text.strip() for r in res]
  assert any(h for _, h in pairs)  # the random model writes: the comparison means something
  assert [a for a, _ in pairs] == [r["tgt_text"] for r in records]
  for k in ("bleu", "chrf", "empty_outputs", "length_ratio", "text_latency"):  # not rtf / timed
    assert scores[k] == want[k], k
  assert scores["policy"] == OE.SIMUL_POLICY


def test_bad_arguments_name_the_problem(setup):
  _, tok, records, model = setup
  with pytest.raises(ValueError, match="task='mt'"):
    OE.offline_eval(model, tok, records, "mt")
  with pytest.raises(ValueError, match="task='st': pass cfg"):
    OE.offline_eval(model, tok, records, "st")
  with pytest.raises(ValueError, match="task='simul': needs cfg"):
    OE.offline_eval(model, tok, records, "simul")
