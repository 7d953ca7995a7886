"""Base config: every field liveinterp reads, with `tiny` sizes.

Recipes (`micro.py`, `tiny.py`, `small.py`, `1b.py`, `7b.py`) start from this and apply a
size preset (`SIZES`) and their mesh. Load with config_flags, e.g.
`--config=configs/tiny.py:sft --config.train.steps=100`.
"""

import ml_collections

# Stages are listed (and checked) in liveinterp.common.config.STAGES.


def _rules():
  # logical name -> mesh axis (or axes, or None = replicated). Weights are FSDP-sharded
  # over `fsdp` and tensor-parallel over `tensor`; activations shard the batch over
  # (data, fsdp) and the hidden/heads dims over `tensor`.
  return [
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("kv_heads", "tensor"),
      ("head_dim", None),
      ("vocab", "tensor"),
      ("codebook", None),
      ("conv_in", None),
      ("conv_out", "tensor"),
      ("conv_kernel", None),
      ("norm", None),
      ("layers", None),
      ("activation_batch", ("data", "fsdp")),
      ("activation_length", None),
      ("activation_embed", None),
      ("activation_mlp", "tensor"),
      ("activation_heads", "tensor"),
      ("activation_kv_heads", "tensor"),
      ("activation_head_dim", None),
      ("activation_vocab", "tensor"),
      ("activation_channels", None),
      ("activation_mel", None),
      ("cache_batch", ("data", "fsdp")),
      ("cache_length", None),
      ("cache_kv_heads", "tensor"),
      ("cache_head_dim", None),
  ]


# Model-size presets: (section, field) -> value. `tiny` is the base itself.
SIZES = {
    "micro": {
        "encoder": dict(d_model=32, num_layers=1, num_heads=2, mlp_dim=64, conv_kernel=5),
        "llm": dict(vocab_size=640, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, window=64, sink_tokens=4, max_len=512),
        "codec": dict(channels=8, latent_dim=16, codebook_size=64, num_codebooks=1,
                      strides=(2, 4, 5, 8),
                      # one residual unit per block and one STFT resolution: the micro
                      # codec's train step compiles in 30 s instead of 63 s, the streaming
                      # decoder step (codec decode inside) in 7.5 s instead of 10.5 s
                      dilations=(1,), stft_resolutions=((256, 64, 256),)),
        "voice": dict(channels=16, embed_dim=16),
        "judge": dict(d_model=64, num_layers=2, num_heads=4, mlp_dim=128, conv_kernel=5),
    },
    "tiny": {},
    "small": {
        "encoder": dict(d_model=256, num_layers=12, num_heads=4, mlp_dim=1024, conv_kernel=15),
        "llm": dict(vocab_size=16384, d_model=768, num_layers=12, num_heads=12,
                    num_kv_heads=4, head_dim=64, mlp_dim=2048, window=2048, sink_tokens=16,
                    max_len=4096),
        "codec": dict(channels=32, latent_dim=128, codebook_size=1024, num_codebooks=2),
        "voice": dict(channels=256, embed_dim=192),
    },
    "1b": {
        "encoder": dict(d_model=512, num_layers=16, num_heads=8, mlp_dim=2048, conv_kernel=15),
        "llm": dict(vocab_size=40960, d_model=2048, num_layers=16, num_heads=32,
                    num_kv_heads=8, head_dim=64, mlp_dim=8192, window=4096, sink_tokens=16,
                    max_len=8192),
        "codec": dict(channels=64, latent_dim=256, codebook_size=2048, num_codebooks=4),
        "voice": dict(channels=512, embed_dim=256),
    },
    "7b": {
        "encoder": dict(d_model=1024, num_layers=24, num_heads=16, mlp_dim=4096,
                        conv_kernel=15),
        "llm": dict(vocab_size=65536, d_model=4096, num_layers=32, num_heads=32,
                    num_kv_heads=8, head_dim=128, mlp_dim=14336, window=8192,
                    sink_tokens=16, max_len=16384),
        "codec": dict(channels=64, latent_dim=256, codebook_size=2048, num_codebooks=4),
        "voice": dict(channels=512, embed_dim=256),
    },
}


def get_config():
  c = ml_collections.ConfigDict()
  c.name = "base"
  c.size = "tiny"
  c.stage = "demo"
  c.seed = 0
  c.workdir = ""

  # ---- mesh: ici = within a slice, dcn = across slices; -1 fills ---------------------
  c.mesh = ml_collections.ConfigDict(dict(
      ici_data=1, ici_fsdp=-1, ici_tensor=1,
      dcn_data=1, dcn_fsdp=1, dcn_tensor=1,
      pod_devices=0,  # devices of the target pod (for memory estimates); 0 = this machine
  ))
  c.logical_axis_rules = _rules()

  # ---- precision -------------------------------------------------------------------
  c.dtype = "float32"        # compute dtype: float32 | bfloat16
  c.param_dtype = "float32"

  # ---- audio and streaming ----------------------------------------------------------
  c.audio = ml_collections.ConfigDict(dict(
      sample_rate=16000, n_mels=80, win_ms=25, hop_ms=10, n_fft=512,
      max_seconds=30.0,
  ))
  c.stream = ml_collections.ConfigDict(dict(
      chunk_ms=640,          # one read unit; a multiple of the 40 ms encoder frame
      max_turn_tokens=64,    # decode budget per chunk
      # the speaker window voicing a turn ends this many chunks before it (voice span,
      # liveinterp/inference/decode_step.py). Measured on the laptop build's test split
      # (benchmarks/voice_span.py, 962 aligned word pairs, 640 ms chunks): a target word
      # is written a median 0 chunks (mean 0.54; 75% in the same chunk) after the chunk
      # holding its source word's end, so the window ends at the answered chunk.
      voice_lag_chunks=0,
  ))

  # ---- models ------------------------------------------------------------------------
  c.encoder = ml_collections.ConfigDict(dict(
      d_model=144, num_layers=4, num_heads=4, mlp_dim=576, conv_kernel=15,
      subsample=4, left_chunks=4, dropout=0.0,
      # LayerNorm closing every block (the classic conformer's). Off: a plain pre-norm
      # residual stream; the per-block renormalisation stalls learning at these budgets
      # (CTC fit of one fixed batch after 100 steps: 3.7 with it, 0.013 without).
      block_norm=False,
  ))
  # The ASR-BLEU judge (liveinterp/models/asr_judge.py, stage `asr_judge`): a word CTC
  # recogniser trained on the corpus's reference target speech. Its own conformer width;
  # utterances longer than max_seconds or with more than max_words words are left out of
  # its training (counted); frame_weight x the frame cross-entropy on the word times;
  # train_examples > 0 trains on the first that many usable clips only (tests, probes);
  # codec_clips > 0 adds a twin of that many training clips passed through the trained
  # codec (encode, decode in the speaker's voice: the channel the system speaks through;
  # codec_dir, default RUN_DIR/codec in the recipe).
  c.judge = ml_collections.ConfigDict(dict(
      d_model=144, num_layers=4, num_heads=4, mlp_dim=576, conv_kernel=15,
      max_seconds=8.0, max_words=48, frame_weight=1.0, eval_examples=64, train_examples=0,
      codec_clips=0, codec_dir="",
  ))
  # out_norm: RMSNorm on the adapter output (audio enters the LLM at token-embedding scale)
  c.adapter = ml_collections.ConfigDict(dict(stack=2, out_norm=True))
  c.llm = ml_collections.ConfigDict(dict(
      vocab_size=4096, d_model=256, num_layers=4, num_heads=4, num_kv_heads=2,
      head_dim=64, mlp_dim=768, rope_theta=10000.0, window=512, sink_tokens=8,
      max_len=2048, tie_embeddings=True, remat="none",  # remat: none|full|dots|dots_no_batch
  ))
  c.codec = ml_collections.ConfigDict(dict(
      channels=16, latent_dim=64, codebook_size=256, num_codebooks=1,
      strides=(2, 4, 5, 8),  # hop 320 samples = 50 Hz at 16 kHz
      quantizer="vq", commitment=0.25, ema_decay=0.99,
      dilations=(1, 3, 9), codebook_update="ema", dead_code_steps=100,
      stft_resolutions=((512, 128, 512), (256, 64, 256), (128, 32, 128)),  # (n_fft, hop, win)
      stft_weight=1.0, mel_weight=1.0, waveform_weight=0.0, quantizer_weight=1.0,
  ))
  c.voice = ml_collections.ConfigDict(dict(channels=64, embed_dim=64))
  # model_type: sentencepiece "bpe" (default) or "unigram". Measured on the laptop drills
  # (6,000 zh-en pairs, 381 English words): unigram at 2,048 pieces splits common English
  # words ("▁Yo u", "▁ s pen t": 2.1 pieces per word), BPE at 1,024 keeps them whole
  # (1.26 pieces per word) with Chinese at 0.57 pieces per character.
  c.tokenizer = ml_collections.ConfigDict(dict(text_vocab_size=2048, model_type="bpe",
                                               model_path=""))

  # ---- data -------------------------------------------------------------------------
  c.data = ml_collections.ConfigDict(dict(
      pair="zh-en", build="tiny", data_dir="", seq_len=256, worker_count=0,
      shuffle_seed=0,
      policy="alignment",     # SFT turn policy: alignment | wait_k
      wait_k=3,
      task_weights=dict(asr=1.0, st=1.0, tts=1.0, s2st=1.0),  # pretraining mixture
      max_audio_slots=96,     # audio rows (80 ms slots) per example: 7.68 s of source
      # SFT streams longer than seq_len (talks) train as windows: each holds as context
      # (no loss) up to this many chunks before its own turns (stream_format.simul_windows)
      window_context_chunks=4,
      codes_path="",          # speech codes of the corpus (liveinterp.train.speech_tokens)
      codec_crop_ms=1000, codec_ref_ms=2000,
      max_src_tokens=64,      # CTC target (source transcript) length per example
      size_from_data=False,   # recipe: seq_len / max_audio_slots / turn budget from the
                              # build's length stats (liveinterp.train.stage_configs)
      text_only=False,        # stream stages: text-only turns even when codes exist
      # SFT turns start with `<src> newly heard source words` (a live transcript, DESIGN
      # §1; stream_format.StreamSpec.src_transcript) and the decoder's grammar allows it
      src_transcript=False,
      # the TFDS build the stages read: "liveinterp_corpus" (the project's, at data.build),
      # "cvss" / "cvss_t" / "covost2" (user corpora at data.pair), or "dataset/config"
      corpus="liveinterp_corpus",
      # share of the build's long-form talks whose utterances alternate two speakers with
      # different espeak voices (data_pipelines.talks; per-utterance speaker spans)
      multi_speaker_talks=0.25,
  ))

  # ---- training ---------------------------------------------------------------------
  c.train = ml_collections.ConfigDict(dict(
      batch_size=8, steps=200, learning_rate=3e-3, warmup_steps=20, end_lr_ratio=0.1,
      weight_decay=0.01, b1=0.9, b2=0.98, grad_clip=1.0, grad_accum_steps=1,
      log_every=10, eval_every=100, init_from="",
      eval_batches=4, eval_examples=16, eval_max_new_tokens=48,
      # auxiliary CTC loss of the encoder frames (own head) against the source transcript
      # (pretrain/sft). Off by default: from scratch it sits in CTC's blank plateau for
      # longer than a laptop budget (laptop ASR, 300 steps: 80% token errors on dev).
      ctc_weight=0.0,
      # auxiliary frame loss: every encoder frame classifies the source character being
      # spoken (from the corpus's word times; same head as CTC). Gives the encoder a
      # signal of its own from step 1 (laptop, 300 steps: 90% of speech frames right on
      # dev), so the decoder has something to listen to.
      frame_weight=1.0,
      # frame loss on the adapter output against the LLM's own embedding table instead of
      # the encoder head: audio embeddings are pulled towards the spoken characters'
      # (laptop pretrain, 300 steps: audio gap zero/swap 0.18/0.34 tied, 0.16/0.15 not).
      frame_tied=True,
      # weight of each speech-token cross-entropy relative to a text/control token's. SFT
      # turns are ~84% codec tokens, which otherwise outvote the few tokens that decide
      # what to say and when (<text>/<eot>, the words, <speech>).
      speech_weight=1.0,
      # divergence limits: a step whose loss, gradients or new parameters are non-finite
      # is skipped (state unchanged); the run stops as diverged (exit code 3, nothing
      # new saved, reason in result.json) after max_consecutive_skipped such steps in a
      # row (0: no limit), or when more than max_skipped_fraction of the steps run so far
      # were skipped, checked once skipped_fraction_after steps have run (a run with fewer
      # train.steps: at its end; 1.0: no limit).
      max_consecutive_skipped=10, max_skipped_fraction=0.5, skipped_fraction_after=20,
      # before the first step, stop with one clear line when the compiled step's memory
      # (XLA's estimate, per device; x local devices on CPU) exceeds what the machine has
      # (liveinterp/common/memory.py); memory_limit_gb > 0 is used as that memory instead
      # (GiB, per device on GPU/TPU, per host on CPU), 0 = what the machine reports.
      memory_check=True, memory_limit_gb=0.0,
  ))
  c.checkpoint = ml_collections.ConfigDict(dict(
      every_steps=50, keep=3, async_save=True,
  ))

  # ---- reinforcement learning (stages rl1, rl2; liveinterp/rl, DESIGN §4-§5) ---------
  # One iteration = train.batch_size episodes (one source utterance each) sampled from the
  # streaming decoder, scored by the rewards, then one PPO update; train.steps counts
  # iterations and train.learning_rate is the PPO learning rate. The reference policy is
  # the run the stage starts from (train.init_from: SFT for rl1, rl1 for rl2).
  c.rl = ml_collections.ConfigDict(dict(
      seq_len=0,            # tokens per rollout stream in the update (0: 1.25 x data.seq_len);
                            # an episode longer than that is cut at a turn (counted)
      temperature=1.0,      # rollout sampling temperature (> 0)
      top_p=1.0,            # must be 1: the update recomputes the sampled distribution
      ppo_epochs=2, ppo_minibatches=2, clip_eps=0.2, value_clip=0.2, value_coef=0.5,
      entropy_coef=0.0, gamma=1.0, lam=0.95,
      # adaptive KL (DESIGN §5): log β += kl_kp · clip((KL - kl_target)/kl_target, ±0.2)
      # after each iteration; KL = mean per generated token of log π_old - log π_ref.
      kl_beta=0.05, kl_target=0.02, kl_kp=0.5, kl_adaptive=True,
      # β may fall only once the KL has reached kl_arm_fraction x kl_target (in [0, 1];
      # 0 = from the start): before the policy moves KL ~ 0 would drive β down (issue #13)
      kl_arm_fraction=0.5,
      # the tokens that KL is the mean over: "all" actions, or "text" (text and control
      # tokens: what to say and when; the speech steps are near-certain "keep speaking"
      # decisions, ~85% of the actions on tiny, that dilute the mean)
      kl_tokens="all",
      speech_action="stop",  # a speech token as a PPO action: "stop" (keep speaking vs
                             # end the turn), "token" (the codec id), "none" (not one);
                             # liveinterp/rl/rollout.py SPEECH_ACTIONS
      value_warmup=5,       # first iterations train only the value head (policy frozen)
      # ...and up to value_warmup_max more while the value head's explained variance on
      # the iteration's own rollout, before its update, is below value_warmup_ev (the
      # untrained head's EV was -5.4 after one iteration, -3.3 after three on runs/tiny_v3;
      # benchmarks/rl_credit.py). 0 = exactly value_warmup iterations.
      value_warmup_max=0, value_warmup_ev=0.0,
      # reward weights (DESIGN §4); multi_turn adds lag and seq at each episode's end
      w_det=0.2, w_init=1.0, w_qual=1.0, w_time=0.5, w_fmt=1.0, w_lag=1.0, w_seq=1.0,
      multi_turn=False, lag_metric="laal", seq_metric="chrf", quality_metric="chrf",
      max_backlog_ms=2000.0,
      time_credit="backlog",  # r_time per turn: "backlog" (DESIGN §4: every turn under a
                              # backlog) | "increment" (the backlog the turn's own speech
                              # adds) | "speech" (that increment on the speech frames
                              # that play late, not the turn's <eot>); rl/rewards.py
      speech_bounds=True,   # format reward checks speech ms per text token against the
                            # bounds the corpus build recorded (speech_ms_per_token)
      eval_episodes=16,     # dev utterances scored greedily every train.eval_every
      # advantages: "gae" (the value head's baseline) or "group" (the mean return of the
      # other samples of the same utterance from the same source chunk on, per turn:
      # rl/gae.py group_advantages; needs gamma=1); train.batch_size episodes are
      # batch_size / group_size utterances, each sampled group_size times
      advantage="gae", group_size=1,
  ))
  return c


def apply_size(c, size: str):
  """Applies the `SIZES[size]` preset to config `c` in place."""
  if size not in SIZES:
    raise ValueError(f"size={size!r}: unknown, expected one of {sorted(SIZES)}")
  c.size = size
  for section, fields in SIZES[size].items():
    for k, v in fields.items():
      c[section][k] = v
  return c


# Stage 2 (multi-turn) reward and KL settings (issue #13 tuning, tiny, from rl1):
#   w_lag=w_seq=1, kl_kp=0.5, 12 it. at 5e-5: test LAAL -5 %, BLEU +1.5 vs SFT;
#   w_lag=3, 20 it. at 2e-4 (runs/rl_tune_a): KL ran to 0.05-0.1, dev BLEU 29 -> 20;
#   w_lag=w_seq=2, kl_kp=1, 20 it. at 1e-4 (runs/rl_tune_b): test LAAL -10 %, BLEU +2.7,
#   speech backlog 1.6 -> 0.9 s; w_lag=4, w_seq=2, kl_kp=1, 20 it. at 1e-4
#   (runs/rl_tune_c, iterations 13-20 with KL arming): test LAAL -12.5 %, BLEU +1.4,
#   backlog 1.33 s (the alignment policy's own targets are at -17.7 %: 1080 vs 1313 ms).
#   The lag and sequence rewards are weighed alike so the
#   policy cannot buy latency with skipped content; the faster controller (kl_kp=1)
#   answers a KL overshoot within a few iterations.
RL2_SETTINGS = dict(w_lag=2.0, w_seq=2.0, kl_kp=1.0)

# RL ablations (issue #13): each is an RL stage with changed reward or KL settings,
# started from SFT, to reproduce the failure modes the design prevents (DESIGN §4):
#   rl_time_only   time compliance alone: speech gets shorter, quality drops;
#   rl_time_only_increment  the same with r_time given to the turn whose speech adds the
#                  backlog (rl.time_credit="increment"), not to every turn under it;
#   rl_time_only_speech  the same with that penalty on the late speech frames' "continue"
#                  decisions instead of the turn's <eot> (rl.time_credit="speech");
#   rl_lag_only    the lagging penalty alone: the policy writes early and skips content;
#   rl_one_stage   all seven rewards at once from SFT (no stage-1 policy first);
#   rl_fixed_beta  stage 1 with a fixed β (the KL either runs away or the policy is
#                  pinned), against the adaptive controller.
_NO_TURN_REWARDS = dict(w_det=0.0, w_init=0.0, w_qual=0.0, w_time=0.0, w_fmt=0.0)
RL_ABLATIONS = {
    "rl_time_only": ("rl1", dict(_NO_TURN_REWARDS, w_time=1.0)),
    "rl_time_only_increment": ("rl1", dict(_NO_TURN_REWARDS, w_time=1.0,
                                           time_credit="increment")),
    "rl_time_only_speech": ("rl1", dict(_NO_TURN_REWARDS, w_time=1.0, time_credit="speech")),
    "rl_lag_only": ("rl2", dict(_NO_TURN_REWARDS, w_lag=1.0, w_seq=0.0, multi_turn=True)),
    "rl_one_stage": ("rl2", dict(multi_turn=True)),
    "rl_fixed_beta": ("rl1", dict(kl_adaptive=False)),
}


def recipe(size: str, stage: str):
  """Base config with a size preset and a stage; what each recipe file returns.

  `stage` is a training stage, "sft_text": the sft stage on text-only turns
  (`data.text_only`), which the recipe runs between pretrain and sft when asked to
  (`liveinterp.recipe --steps=...,sft_text,sft`; sft then starts from it), or an RL
  ablation of `RL_ABLATIONS` (an RL stage with its reward/KL changes).
  """
  c = apply_size(get_config(), size)
  c.name = size
  rl_changes = {}
  if stage in RL_ABLATIONS:
    stage, rl_changes = RL_ABLATIONS[stage]
  c.stage = "sft" if stage == "sft_text" else stage
  c.data.text_only = stage == "sft_text"
  c.rl.multi_turn = stage == "rl2"
  if stage == "rl2":
    c.rl.update(RL2_SETTINGS)
  c.rl.update(rl_changes)
  return c


def pod_recipe(size: str, stage: str, *, pod_devices: int, tensor: int, batch_size: int,
               learning_rate: float, text_vocab_size: int):
  """Pod-scale recipe: bf16, FSDP filling the slice (x `tensor`), data-parallel across
  slices via `mesh.dcn_data`; `pod_devices` is the target for memory estimates."""
  c = recipe(size, stage)
  c.dtype = "bfloat16"
  c.mesh.ici_data, c.mesh.ici_fsdp, c.mesh.ici_tensor = 1, -1, tensor
  c.mesh.pod_devices = pod_devices
  c.train.batch_size = batch_size
  c.train.learning_rate = learning_rate
  c.train.warmup_steps = 2000
  c.train.steps = 200000
  c.data.seq_len = 4096
  c.data.max_audio_slots = 768
  c.tokenizer.text_vocab_size = text_vocab_size
  c.checkpoint.every_steps = 1000
  return c
