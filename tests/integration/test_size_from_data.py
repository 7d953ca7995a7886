"""The build's recorded length statistics size the stream stages: with
`data.size_from_data` nothing is truncated or dropped, and the decoder's turn budget
covers every trained turn (issue #9 §3)."""

import pytest

from configs import micro
from data_pipelines import build, pipelines, stream_format as sfmt
from liveinterp.train import stage_configs as recipes
from liveinterp.train.stages import stream_lm
from tests.integration import micro_corpus


@pytest.fixture(scope="module")
def micro_data():
  return micro_corpus.micro_corpus()  # read only: shared with the other integration files


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_sizes_from_length_stats_truncate_nothing(micro_data, stage):
  d, tok_prefix = micro_data
  c = micro.get_config(stage)
  c.data.data_dir, c.tokenizer.model_path = d, tok_prefix
  c.data.seq_len = 48                                      # deliberately too small
  tok = stream_lm.tokenizer_for(c)
  src = pipelines.open_corpus(c, "train")
  if stage == "sft":  # too-small limits do truncate: the probe sees it
    small = stream_lm.check_examples_fit(c, stage, src, tok, None)
    assert small["data/truncated_fraction"] + small["data/dropped_fraction"] > 0
  chosen = recipes.size_from_data(c, build.length_stats(d, "zh-en", "micro"))
  assert chosen["seq_len"] >= chosen["longest_stream"]
  info = stream_lm.check_examples_fit(c, stage, src, tok, None)
  assert info["data/truncated_fraction"] == 0 and info["data/dropped_fraction"] == 0
  # the turn budget covers every turn of every training stream (speech at codec rate)
  spec = sfmt.StreamSpec.from_config(c, max_len=None, speech_placeholder="zeros")
  longest = max(len(ids) for i in range(len(src))
                for _, ids in sfmt.turns(sfmt.simul_example(src[i], tok, spec)))
  assert c.stream.max_turn_tokens >= longest


def test_sft_text_step_is_the_text_only_sft_stage_and_sft_starts_from_it(micro_data,
                                                                          tmp_path):
  """The recipe's sft_text step: the sft stage on text-only turns, sized from the
  text-only length stats and started from pretrain; sft starts from it once it finished."""
  d, tok_prefix = micro_data
  run = str(tmp_path)
  text = recipes.stage_config("micro", "sft_text", run, d, tok_prefix)
  full = recipes.stage_config("micro", "sft", run, d, tok_prefix)
  assert text.stage == full.stage == "sft"
  assert text.data.text_only and not full.data.text_only
  assert text.train.init_from == full.train.init_from == f"{run}/pretrain"
  stats = build.length_stats(d, "zh-en", "micro")
  for c in (text, full):
    c.data.size_from_data = True
  assert (recipes.size_from_data(text, stats)["longest_stream"]
          == stats["sft"]["simul"]["without_speech"]["stream_len"]["max"]
          < recipes.size_from_data(full, stats)["longest_stream"])
  (tmp_path / "sft_text").mkdir()
  (tmp_path / "sft_text" / "result.json").write_text("{}")
  assert recipes.stage_config("micro", "sft", run, d, tok_prefix).train.init_from == (
      f"{run}/sft_text")
