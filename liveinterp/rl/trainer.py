"""RL stages `rl1` / `rl2`: PPO with staged rewards and adaptive KL (DESIGN §4-§5).

    python -m liveinterp.train --config=configs/tiny.py:rl1 --workdir=runs/tiny/rl1 \
        --config.train.init_from=runs/tiny/sft

One iteration (`train.steps` of them):

1. **rollout** (host driver, device decode): `train.batch_size` training utterances, drawn
   by a seeded generator from (seed, iteration), are streamed through the streaming decoder
   with the current weights, sampling at `rl.temperature` under the turn grammar
   (`rollout.collect`: text + speech tokens, no codec run: speech durations come from the
   frame counts);
2. **rewards** (host, `rewards.score_episode`, placed by `score_rollout`): the five
   single-turn rewards at each turn's last token (with `rl.time_credit="speech"` the
   time penalty at the late speech frames' first tokens instead); with `rl.multi_turn`
   (rl2) the lagging and sequence-quality rewards at the episode's last turn;
3. **scoring** (one jitted training forward per policy, `rollout.sequence_log_probs`):
   log π_old and V_old with the current weights, log π_ref with the frozen reference
   (`train.init_from`: SFT for rl1, rl1 for rl2) — forced scoring, no second sampling;
4. **update** (`update(state, batch, rng) -> (state, metrics)`, pure, jitted with the
   state's shardings on the mesh): per-token reward `r − β (log π_old − log π_ref)`, GAE
   (reverse scan over generated tokens), whitened advantages, PPO epochs x minibatches
   (`ppo.make_update`), then the adaptive-KL controller moves log β (it may lower β
   only once armed: the KL has reached `rl.kl_arm_fraction` of its target, `kl.py`). The
   first `rl.value_warmup` iterations train the value head only (SFT never trained it);
   with `rl.value_warmup_max` > 0, so does any of the next `value_warmup_max` iterations
   whose rollout the head explains worse than `rl.value_warmup_ev` (explained variance
   before the update, `in_value_warmup`).

State: `RLState` (step, params, opt_state, model_state, log β, the controller's armed
flag) in orbax checkpoints (`restore_state`: older ones without the flag resume armed); the
episodes and sampling keys of iteration i are functions of (seed, i), so a resumed run
repeats exactly what an uninterrupted one does. Exit codes as every stage
(`loop.exit_code`). One process (the decoder runs on one local device; several devices
of that process shard the update).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from data_pipelines import build as build_lib, pipelines
from liveinterp.common import checkpointing, config as config_lib, mesh as mesh_lib
from liveinterp.common import files, memory, reporting, sharding
from liveinterp.inference import decoder as decoder_lib, session as session_lib, loading
from liveinterp.models import s2st
from liveinterp.models.codec import Codec
from liveinterp.models.voice import SpeakerEncoder
from liveinterp.rl import gae as gae_lib, kl as kl_lib, ppo, rewards as rewards_lib, rollout
from liveinterp.train import loop, optimizer, train_state
from liveinterp.train.stages import stream_lm

RL_STAGES = ("rl1", "rl2")
# rl.advantage: "gae" (value head baseline, DESIGN §5) | "group" (leave-one-out baseline of
# rl.group_size samples of each utterance, gae.group_advantages)
ADVANTAGES = ("gae", "group")
# rl.kl_tokens: the generated tokens whose mean exact KL the controller holds at
# rl.kl_target: "all" actions, or "text" (text and control tokens, not speech)
KL_TOKENS = ("all", "text")


@flax.struct.dataclass
class RLState:
  step: jax.Array          # iterations done
  params: nnx.State
  opt_state: Any
  model_state: nnx.State
  log_beta: jax.Array      # log of the KL coefficient β (adaptive KL)
  kl_armed: jax.Array      # float32 0/1: the KL has reached the arm level (kl.armed_after)


@flax.struct.dataclass
class _RLStateV1:
  """`RLState` as checkpointed before `kl_armed` (issue #13): what `restore_state` reads
  from such a checkpoint."""
  step: jax.Array
  params: nnx.State
  opt_state: Any
  model_state: nnx.State
  log_beta: jax.Array


def check_config(c):
  """RL-specific checks (on top of `config.validate`), each naming the field."""
  r = c.rl
  if c.stage not in RL_STAGES:
    raise config_lib.ConfigError(f"stage={c.stage!r} is not an RL stage {RL_STAGES}")
  if not c.train.init_from:
    raise config_lib.ConfigError(
        f"stage={c.stage}: train.init_from is empty; RL starts from a trained policy "
        f"(SFT for rl1, rl1 for rl2), which is also the KL reference")
  if not r.temperature > 0:
    raise config_lib.ConfigError(f"rl.temperature={r.temperature}: must be > 0 (the "
                                 f"policy samples)")
  if r.top_p != 1.0:
    raise config_lib.ConfigError(
        f"rl.top_p={r.top_p}: must be 1.0 (the update recomputes the sampling "
        f"distribution from the logits; a top-p cut is not differentiable)")
  if c.train.batch_size % int(r.ppo_minibatches):
    raise config_lib.ConfigError(f"train.batch_size={c.train.batch_size} is not divisible "
                                 f"by rl.ppo_minibatches={r.ppo_minibatches}")
  for f in ("kl_beta", "kl_target"):
    if not r[f] > 0:
      raise config_lib.ConfigError(f"rl.{f}={r[f]}: must be > 0")
  arm = r.get("kl_arm_fraction", 0.0)
  if isinstance(arm, bool) or not isinstance(arm, (int, float)) or not 0 <= arm <= 1:
    raise config_lib.ConfigError(
        f"rl.kl_arm_fraction={arm!r}: must be a finite number in [0, 1] (the share of "
        f"rl.kl_target the KL must reach before β may fall; 0 = always)")
  if int(r.value_warmup) < 0 or int(r.seq_len) < 0:
    raise config_lib.ConfigError("rl.value_warmup and rl.seq_len must be >= 0")
  if int(r.get("value_warmup_max", 0)) < 0:
    raise config_lib.ConfigError(f"rl.value_warmup_max={r.value_warmup_max}: must be >= 0")
  if r.speech_action not in rollout.SPEECH_ACTIONS:
    raise config_lib.ConfigError(f"rl.speech_action={r.speech_action!r}: expected one of "
                                 f"{rollout.SPEECH_ACTIONS}")
  if r.get("time_credit") == "speech" and r.speech_action == "none":
    raise config_lib.ConfigError(
        "rl.time_credit='speech' puts the time penalty on speech tokens, which "
        "rl.speech_action='none' leaves out of the actions; use 'stop' or 'token'")
  if r.get("kl_tokens", "all") not in KL_TOKENS:
    raise config_lib.ConfigError(f"rl.kl_tokens={r.kl_tokens!r}: expected one of "
                                 f"{KL_TOKENS}")
  adv, group = r.get("advantage", "gae"), r.get("group_size", 1)
  if adv not in ADVANTAGES:
    raise config_lib.ConfigError(f"rl.advantage={adv!r}: expected one of {ADVANTAGES}")
  if (isinstance(group, bool) or not isinstance(group, int) or group < 1
      or c.train.batch_size % group):
    raise config_lib.ConfigError(
        f"rl.group_size={group!r}: must be a positive integer dividing train.batch_size="
        f"{c.train.batch_size} (episodes per iteration = utterances x group_size)")
  if adv == "group" and (group < 2 or float(r.gamma) != 1.0):
    raise config_lib.ConfigError(
        f"rl.advantage='group' needs rl.group_size >= 2 (got {group}: the baseline is "
        f"the other samples of the utterance) and rl.gamma = 1 (got {r.gamma})")
  if jax.process_count() > 1:
    raise config_lib.ConfigError("RL stages run in one process for now (the rollout decoder "
                                 "runs on one local device); use --cpu_devices / one host")
  ppo.PPOConfig.from_config(c)
  rewards_lib.RewardConfig.from_config(c)


def reward_config(c) -> rewards_lib.RewardConfig:
  """`rl.*` reward settings, with the speech-length bounds of the corpus build."""
  rc = rewards_lib.RewardConfig.from_config(c)
  if c.rl.speech_bounds and not c.data.text_only:
    try:
      stats = build_lib.length_stats(c.data.data_dir, c.data.pair, c.data.build)
    except FileNotFoundError:
      stats = {}
    bounds = build_lib.speech_ms_per_token_bounds(stats)
    if bounds is not None:
      import dataclasses  # pylint: disable=g-import-not-at-top
      rc = dataclasses.replace(rc, speech_ms_per_token=tuple(bounds))
  return rc


def _update_tx(c):
  """The optimizer, its schedule counted in gradient updates (epochs x minibatches per
  iteration), not iterations."""
  t = ml_collections.ConfigDict(c.train.to_dict())
  per_iter = int(c.rl.ppo_epochs) * int(c.rl.ppo_minibatches)
  t.steps = int(c.train.steps) * per_iter
  t.warmup_steps = int(c.train.warmup_steps) * per_iter
  return optimizer.make_optimizer(t)


def value_only_mask(params) -> Any:
  """1.0 on the value head's parameters (`value_norm`, `value_head`), 0.0 elsewhere."""
  def f(path, x):
    names = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
    on = "value_head" in names or "value_norm" in names
    return jnp.full(x.shape, 1.0 if on else 0.0, jnp.float32)
  return jax.tree_util.tree_map_with_path(f, params)


def policy_mask(batch, speech_offset: int, speech_action: str) -> jax.Array:
  """[B, L] float: the generated tokens PPO treats as the policy's actions: all of them,
  except the codec ids when `speech_action == "none"` (`rollout.SPEECH_ACTIONS`)."""
  mask = batch["gen_mask"].astype(jnp.float32)
  if speech_action == "none":
    mask = mask * (batch["tokens"] < speech_offset).astype(jnp.float32)
  return mask


def make_update(graphdef, grammar, tx, c):
  """The pure RL update `update(state, batch, rng, policy_coef, grad_mask)`.

  `batch` (leading axis = episodes): the rollout fields (`rollout.Rollout.batch`) plus
  `turn_rewards` [B, L] (`score_rollout`: each turn's reward at its last token), `old_logp`,
  `old_values`, `ref_logp`, `kl_exact` [B, L] (`rollout.policy_and_reference` of the
  current and reference policies). The actions are `policy_mask`'s tokens. Returns (new state, metrics)."""
  r = c.rl
  pc = ppo.PPOConfig.from_config(c)
  temperature = float(r.temperature)

  speech_offset = int(grammar.layout.speech_offset)
  speech_action = str(r.speech_action)
  arm_fraction = float(r.get("kl_arm_fraction", 0.0))
  kl_tokens = str(r.get("kl_tokens", "all"))

  def update(state: RLState, batch, rng, policy_coef, grad_mask):
    mask = policy_mask(batch, speech_offset, speech_action)
    beta = jnp.exp(state.log_beta)
    kl_tok = kl_lib.token_kl(batch["old_logp"], batch["ref_logp"], mask)
    adv, ret = advantages(batch, mask, beta * kl_tok, c)

    def apply_fn(params, mb):
      model = nnx.merge(graphdef, params, state.model_state)
      return rollout.sequence_log_probs(model, mb, grammar, temperature, speech_action)

    ppo_update = ppo.make_update(apply_fn, tx, pc)
    train_batch = dict(batch, mask=mask, old_logp=batch["old_logp"],
                       old_values=batch["old_values"], advantages=adv, returns=ret)
    params, opt_state, m = ppo_update(state.params, state.opt_state, train_batch, rng,
                                      policy_coef=policy_coef, grad_mask=grad_mask)
    # The controller reads the exact per-token KL of the sampling distributions (the
    # one-sample estimate above is unbiased but noisy and often negative), and holds
    # still during the value warm-up, where the policy does not move.
    # β may fall only once the KL has reached the arm level (kl.py, issue #13).
    kls = controller_kls(batch["kl_exact"], mask, batch["tokens"], speech_offset)
    kl = kls["kl_text"] if kl_tokens == "text" else kls["kl_all"]
    armed = kl_lib.armed_after(state.kl_armed, kl, target=float(r.kl_target),
                               arm_fraction=arm_fraction)
    moved = kl_lib.update_log_beta(state.log_beta, kl, target=float(r.kl_target),
                                   kp=float(r.kl_kp), adaptive=bool(r.kl_adaptive),
                                   armed=armed)
    log_beta = jnp.where(policy_coef > 0, moved, state.log_beta)
    kl_armed = jnp.where(policy_coef > 0, armed, state.kl_armed)
    new = RLState(step=state.step + 1, params=params, opt_state=opt_state,
                  model_state=state.model_state, log_beta=log_beta, kl_armed=kl_armed)
    metrics = {f"rl/{k}": v for k, v in m.items()}
    metrics.update({"rl/kl": kl, "rl/beta": beta, "rl/kl_armed": kl_armed,
                    **{f"rl/{k}": v for k, v in kls.items()},
                    "rl/kl_sample": kl_lib.mean_kl(batch["old_logp"], batch["ref_logp"], mask),
                    "rl/kl_reward": -(beta * kl_tok).sum() / jnp.maximum(mask.shape[0], 1),
                    "rl/return_mean": (ret * mask).sum() / jnp.maximum(mask.sum(), 1)})
    return new, metrics

  return update


def controller_kls(kl_exact, mask, tokens, speech_offset: int) -> dict:
  """Mean exact KL per action over all actions (`kl_all`), over the text and control
  tokens (`kl_text`: what to say, when to wait or end a turn) and over the speech steps
  (`kl_speech`: "keep speaking"), and the text tokens' share of the actions
  (`text_action_share`). `rl.kl_tokens` picks which mean the controller holds at
  `rl.kl_target`: the speech steps are many and near-certain, so "all" lets the text
  decisions move much further than the target says."""
  text = mask * (tokens < speech_offset).astype(jnp.float32)
  over = lambda m: (kl_exact * m).sum() / jnp.maximum(m.sum(), 1.0)
  return {"kl_all": over(mask), "kl_text": over(text), "kl_speech": over(mask - text),
          "text_action_share": text.sum() / jnp.maximum(mask.sum(), 1.0)}


def value_explained_variance(batch, log_beta, speech_offset: int, c) -> jax.Array:
  """Explained variance of the value head on a scored rollout before its update: the
  batch's `old_values` against the returns the update would train them towards (same
  rewards, KL penalty at β = exp(log_beta), GAE) over the policy's actions."""
  mask = policy_mask(batch, speech_offset, str(c.rl.speech_action))
  kl_tok = kl_lib.token_kl(batch["old_logp"], batch["ref_logp"], mask)
  _, ret = advantages(batch, mask, jnp.exp(log_beta) * kl_tok, c)
  return ppo.explained_variance(batch["old_values"], ret, mask)


def in_value_warmup(it: int, ev_before: float | None, r) -> bool:
  """Whether iteration `it` trains the value head only: the first `rl.value_warmup`
  iterations, then up to `rl.value_warmup_max` more while the head's explained variance
  on the iteration's rollout (`value_explained_variance`, None when not computed) is
  below `rl.value_warmup_ev`. Never with `rl.advantage="group"` (its baseline is not the
  value head, which trains alongside the policy). Depends only on the iteration and its
  rollout, so a resumed run decides as an uninterrupted one."""
  if r.get("advantage", "gae") == "group":
    return False
  first = int(r.value_warmup)
  if it < first:
    return True
  extra = int(r.get("value_warmup_max", 0))
  return (extra > 0 and it < first + extra and ev_before is not None
          and ev_before < float(r.get("value_warmup_ev", 0.0)))


def advantages(batch, mask, kl_penalty, c) -> tuple[jax.Array, jax.Array]:
  """(whitened advantages, returns) [B, L] of the update: per-token reward
  `turn_rewards · mask − kl_penalty`; `rl.advantage="gae"`: GAE (`rl.gamma`, `rl.lam`)
  over `old_values`; "group": the leave-one-out baseline of the episode's group
  (`gae.group_advantages`, `rl.group_size` samples of one utterance); advantages
  whitened over `mask`."""
  rew = batch["turn_rewards"] * mask - kl_penalty
  if c.rl.get("advantage", "gae") == "group":
    adv, ret = gae_lib.group_advantages(rew, mask, batch["turn_end"],
                                        int(c.rl.group_size))
  else:
    adv, ret = gae_lib.gae(rew, batch["old_values"], mask, gamma=float(c.rl.gamma),
                           lam=float(c.rl.lam))
  return ppo.whiten(adv, mask), ret


def abstract_state(model_fn, tx, mesh, rules):
  """(graphdef, abstract `RLState` carrying shardings, `RLState` of shardings); the
  parameters and optimizer state are sharded by their logical axes, log β and the
  armed flag replicated."""
  graphdef, abstract, shardings = train_state.abstract_state(model_fn, tx, mesh, rules)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  rl_shardings = RLState(step=shardings.step, params=shardings.params,
                         opt_state=shardings.opt_state, model_state=shardings.model_state,
                         log_beta=replicated, kl_armed=replicated)
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated)
  abstract_rl = RLState(step=abstract.step, params=abstract.params,
                        opt_state=abstract.opt_state, model_state=abstract.model_state,
                        log_beta=scalar, kl_armed=scalar)
  return graphdef, abstract_rl, rl_shardings


def restore_state(ckpt: checkpointing.Checkpointer, abstract_rl: RLState):
  """`ckpt.restore(abstract_rl)` -> (state, step) or None, also for a checkpoint written
  before `RLState.kl_armed` existed (its latest step's tree has no such leaf): that one
  is restored as it was saved and resumes armed, as the controller it ran under was
  (restoring it into the new tree would fail on every step, and `Checkpointer.restore`
  would set them all aside as corrupt)."""
  step, legacy = ckpt.latest_step, False
  if step is not None:
    try:  # the saved tree's top-level names (Checkpointer.save: <directory>/<step>/state)
      saved = ocp.StandardCheckpointHandler().metadata(
          epath.Path(ckpt.directory) / str(step) / "state").tree
      legacy = "kl_armed" not in saved and "log_beta" in saved
    except Exception:  # pylint: disable=broad-except  (unreadable: the plain restore says why)
      legacy = False
  if not legacy:
    return ckpt.restore(abstract_rl)
  fields = {f: getattr(abstract_rl, f) for f in ("step", "params", "opt_state",
                                                  "model_state", "log_beta")}
  restored = ckpt.restore(_RLStateV1(**fields))
  if restored is None:
    return None
  old, step = restored
  armed = jax.device_put(jnp.float32(1.0), abstract_rl.kl_armed.sharding)
  reporting.console(f"checkpoint step {step} predates the KL controller's armed flag "
                    f"(issue #13): resuming armed")
  return RLState(**{f: getattr(old, f) for f in fields}, kl_armed=armed), step


def initial_state(params, model_state, tx, beta: float, rl_shardings: RLState, mesh,
                  rules) -> RLState:
  """A fresh `RLState` in its shardings from a policy's weights (copied: the update
  donates its state, and the weights passed in stay usable, e.g. as the reference)."""
  copy = lambda t, s: jax.jit(lambda x: jax.tree.map(jnp.copy, x), out_shardings=s)(t)  # noqa: E731
  # Same leaves, the target's tree (a model made eagerly and one restored from its
  # abstract shape carry different Variable metadata).
  params = jax.tree.unflatten(jax.tree.structure(rl_shardings.params), jax.tree.leaves(params))
  model_state = jax.tree.unflatten(jax.tree.structure(rl_shardings.model_state),
                                   jax.tree.leaves(model_state))
  with sharding.use_mesh(mesh, rules):
    opt_state = jax.jit(tx.init, out_shardings=rl_shardings.opt_state)(params)
    return RLState(step=jax.device_put(jnp.zeros((), jnp.int32), rl_shardings.step),
                   params=copy(params, rl_shardings.params), opt_state=opt_state,
                   model_state=copy(model_state, rl_shardings.model_state),
                   log_beta=jax.device_put(jnp.log(jnp.float32(beta)), rl_shardings.log_beta),
                   kl_armed=jax.device_put(jnp.float32(0.0), rl_shardings.kl_armed))


def check_update_memory(update_jit, args, config, name: str) -> dict:
  """Before the first update: its compiled memory against the machine's (issue #12;
  liveinterp/common/memory.py). Raises MemoryEstimateError (one line, exit code 2) when it
  will not fit. The compile is jit's own: the update called with the same `args` reuses
  it (nothing is compiled twice, the numerics are the update's)."""
  mem = memory.check_step(
      update_jit.lower(*args).compile(), config.train, what=name, step="RL update",
      hint="lower train.batch_size or rl.seq_len (0: from data.seq_len), raise "
           "rl.ppo_minibatches, or use more devices")
  reporting.console(memory.summary(mem, name, step="update memory",
                                   checked=config.train.get("memory_check", True)))
  return mem


def jit_update(update_fn, rl_shardings: RLState):
  """`update` jitted with the state's shardings (donated); the batch keeps the data
  sharding it arrives with."""
  return jax.jit(update_fn, out_shardings=(rl_shardings, None), donate_argnums=(0,))


class _Episodes:
  """Which training utterances iteration i rolls out: a generator seeded by
  (seed, stage, i) draws records until `n / group_size` fit the rollout geometry (too
  long ones are counted), each repeated `group_size` times in a row (the group's samples,
  `rl.group_size`). The stage is in the seed so rl2 does not replay rl1's episodes in
  order (an ablation of rl1 sees rl1's: same data, other settings)."""

  def __init__(self, source, rs: rollout.RolloutSpec, seed: int, stage: str = "rl1",
               group_size: int = 1):
    self.source, self.rs, self.seed = source, rs, seed
    self.stage_index = RL_STAGES.index(stage)
    self.group_size = int(group_size)
    self.too_long = 0

  def __call__(self, iteration: int, n: int) -> list:
    g = np.random.default_rng([self.seed, self.stage_index, iteration])
    k = n // self.group_size
    out, tries = [], 0
    while len(out) < k:
      tries += 1
      if tries > 50 * k:
        raise ValueError(f"fewer than {k} of {tries} drawn training utterances fit "
                         f"data.max_audio_slots={self.rs.max_chunks} chunks")
      rec = self.source[int(g.integers(len(self.source)))]
      if rollout.fits(rec, self.rs):
        out.append(rec)
      else:
        self.too_long += 1
    return [rec for rec in out for _ in range(self.group_size)]

  def sampling_key(self, iteration: int) -> jax.Array:
    """The rollout's sampling key of iteration i, from (seed, stage, i) like its records."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed),
                                                 self.stage_index), iteration)


def _place_rewards(ro: rollout.Rollout, per_turn: list[np.ndarray],
                   per_frame: list[list[tuple[np.ndarray, np.ndarray]]] | None = None
                   ) -> np.ndarray:
  """Each kept turn's reward at its last token -> [B, L]; with `per_frame` (row r, turn
  t: (offsets in the turn, rewards)) also those rewards at those tokens of the turn."""
  out = np.zeros(ro.batch["tokens"].shape, np.float32)
  for r, rew in enumerate(per_turn):
    ends = np.nonzero(ro.batch["turn_end"][r])[0]
    assert len(ends) == len(rew), (len(ends), len(rew))
    out[r, ends] = rew
    if per_frame is not None:
      for end, ids, (offsets, frame_rew) in zip(ends, ro.turn_ids[r], per_frame[r]):
        out[r, end - len(ids) + 1 + offsets] += frame_rew
  return out


def speech_frame_starts(ids: np.ndarray, layout) -> np.ndarray:
  """Offsets in a turn's tokens of each whole speech frame's first token (codebook 0):
  with `rl.speech_action="stop"` the "continue speaking" decision that played it."""
  speech = np.nonzero(np.asarray(ids) >= layout.speech_offset)[0]
  q = int(layout.num_codebooks)
  return speech[:len(speech) // q * q:q]


def score_rollout(ro: rollout.Rollout, records, rc: rewards_lib.RewardConfig, layout
                  ) -> tuple[np.ndarray, list[dict]]:
  """The rewards of a rollout: (per-token rewards [B, L], each episode's logging metrics).
  Each turn's reward (`rewards.score_episode`) goes to its last token; with
  `rc.time_credit == "speech"` its w_time·r_time goes to its speech frames' first tokens
  instead (`rewards.speech_time_rewards`)."""
  per_turn, per_frame, logs = [], [], []
  for ep, rec, turns in zip(ro.episodes, records, ro.turn_ids):
    rew, log = rewards_lib.score_episode(ep, rewards_lib.Reference.from_record(rec), rc)
    if rc.time_credit == "speech":
      starts = [speech_frame_starts(ids, layout) for ids in turns]
      frames = rewards_lib.speech_time_rewards(ep, [len(s) for s in starts], rc)
      rew = rew - np.asarray([f.sum() for f in frames])
      per_frame.append(list(zip(starts, frames)))
    per_turn.append(rew)
    logs.append(log)
  return _place_rewards(ro, per_turn, per_frame if rc.time_credit == "speech" else None), logs


def rollout_stats(ro: rollout.Rollout, logs: list[dict]) -> dict:
  """Host metrics of one rollout: reward components, text tokens and speech seconds per
  turn, speech backlog, share of waiting turns."""
  out = {k: float(np.mean([d[k] for d in logs])) for k in logs[0]}
  n_text = np.concatenate([e.n_text_tokens for e in ro.episodes]).astype(np.float64)
  speech = np.concatenate([e.speech_ms for e in ro.episodes]) / 1000.0
  out["rl/text_tokens_per_turn"] = float(n_text.mean()) if n_text.size else 0.0
  out["rl/speech_s_per_turn"] = float(speech.mean()) if speech.size else 0.0
  out["rl/wait_fraction"] = float(np.mean(n_text == 0)) if n_text.size else 1.0
  out["rl/cut_turns"] = float(ro.cut_turns)
  out["rl/malformed_turns"] = float(sum((~e.well_formed).sum() for e in ro.episodes))
  return out


def within_group_share(episode_rewards: np.ndarray, group_size: int) -> float:
  """Share of the variance of the episodes' total rewards that lies within groups (the
  samples of one utterance, consecutive rows): what a per-utterance baseline cannot
  remove. 1.0 for groups of one or no spread at all."""
  x = np.asarray(episode_rewards, np.float64)
  total = x.var()
  if group_size < 2 or total <= 0:
    return 1.0
  return float(x.reshape(-1, group_size).var(axis=1).mean() / total)


def load_reference(config, abstract: RLState):
  """The reference policy `train.init_from` (also where a fresh run starts): (params,
  model state) restored into `abstract`'s shapes and shardings; refuses a diverged run."""
  loop._refuse_diverged(config.train.init_from)  # pylint: disable=protected-access
  src = checkpointing.Checkpointer(os.path.join(config.train.init_from, "checkpoints"))
  try:
    return src.restore_params(abstract.params, abstract_model_state=abstract.model_state)
  finally:
    src.close()


def rollout_decoder(config, model, tok) -> decoder_lib.StreamingDecoder:
  """The decoder users run, sampling at `rl.temperature`; no codec (speech durations come
  from frame counts). Its turn loop compacts to the rows still writing (`turn_rows=
  "auto"`: the same episodes; the tiny rl1 stage on an idle 2-core machine: rollouts
  181 -> 128 s of 8 iterations, the stage 456 -> 370 s, `main_job_times`)."""
  codec = loading.random_model(lambda r: Codec(config, rngs=r), 1)
  speaker = loading.random_model(lambda r: SpeakerEncoder(config, rngs=r), 2)
  return decoder_lib.StreamingDecoder(
      model, codec, speaker, tok, config, temperature=float(config.rl.temperature),
      prompt_ids=decoder_lib.prompt_for(config, tok),
      speech_turns=decoder_lib.speech_turns_for(config), decode_speech=False,
      turn_rows="auto")


START_EVAL = "start_eval.json"


def dev_scores(dev_eval, model, writer, step: int, label: str) -> dict:
  """`dev_eval` of `model`: scores written at TensorBoard `step` and printed after
  `label` with one example; -> the scores."""
  ev, examples = dev_eval(model)
  writer.write_scalars(step, dict(ev))
  reporting.console(f"{label}: " + " | ".join(f"{k} {v:.4g}" for k, v in ev.items()))
  for ref, hyp in examples[:1]:
    reporting.console(f"  simul ref: {ref}\n  simul hyp: {hyp}")
  return ev


def starting_policy_eval(workdir: str, start: int, dev_eval, name: str, init_from: str,
                         model_fn, writer) -> dict:
  """The dev scores of the policy the stage starts from (its KL reference), measured once
  before the first iteration with the evaluation every `train.eval_every` iterations uses,
  so a stage's result holds both ends: `start/eval/simul_bleu` ... next to
  `eval/simul_bleu` (an RL stage that lowers quality shows it in its own result, issue
  #13). Written at TensorBoard step 0 and to `workdir/start_eval.json`, which a resumed
  run reads back instead of evaluating again. {} without dev episodes."""
  path = os.path.join(workdir, START_EVAL)
  if dev_eval is None:
    return {}
  if start > 0 and os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  if start > 0:  # a checkpoint from before this file existed: nothing to compare with
    return {}
  ev = dev_scores(dev_eval, model_fn(), writer, 0,
                  f"[{name}] eval @ 0 (starting policy, {init_from})")
  out = {f"start/{k}": float(v) for k, v in ev.items()}
  files.write_json_atomic(path, out)
  return out


def run(config, workdir: str, stop_at: int | None = None) -> dict:
  """Trains an RL stage to `train.steps` iterations, resuming from `workdir`."""
  config_lib.validate(config, num_devices=jax.device_count())
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  name = config.stage
  mesh = mesh_lib.create_mesh(config.mesh)
  rules = sharding.rules_from_config(config.logical_axis_rules)
  tx = _update_tx(config)
  total = int(config.train.steps)
  tok = stream_lm.tokenizer_for(config)
  rs = rollout.RolloutSpec.from_config(config)
  rc = reward_config(config)
  train_src = pipelines.open_corpus(config, "train")
  dev = pipelines.open_corpus(config, "dev")
  episodes_for = _Episodes(train_src, rs, int(config.seed), config.stage,
                           int(config.rl.get("group_size", 1)))

  model_fn = lambda rngs: s2st.S2ST(config, rngs=rngs)  # noqa: E731
  graphdef, abstract_rl, rl_shardings = abstract_state(model_fn, tx, mesh, rules)
  abstract = abstract_rl

  ref_params, ref_rest = load_reference(config, abstract)

  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    keep=config.checkpoint.keep,
                                    every_steps=config.checkpoint.every_steps,
                                    async_save=config.checkpoint.async_save)
  restored = restore_state(ckpt, abstract_rl)
  if restored is not None:
    state, start = restored
    reporting.console(f"[{name}] resumed from iteration {start} in {ckpt.directory}")
  else:
    state = initial_state(ref_params, ref_rest, tx, float(config.rl.kl_beta), rl_shardings,
                          mesh, rules)
    start = 0
    reporting.console(f"[{name}] starting from {config.train.init_from} (also the KL "
                      f"reference)")

  decoder = rollout_decoder(config, nnx.merge(graphdef, ref_params, ref_rest), tok)
  grammar = decoder.spec.grammar
  detok = session_lib.Detokenizer(tok)
  temperature = float(config.rl.temperature)

  speech_action = str(config.rl.speech_action)

  def score(params, model_state, ref, ref_state, batch):
    return rollout.policy_and_reference(nnx.merge(graphdef, params, model_state),
                                        nnx.merge(graphdef, ref, ref_state), batch,
                                        grammar, temperature, speech_action)

  score_jit = jax.jit(score)
  gated = int(config.rl.get("value_warmup_max", 0)) > 0
  ev_jit = jax.jit(lambda b, lb: value_explained_variance(
      b, lb, int(grammar.layout.speech_offset), config))
  update_jit = jit_update(make_update(graphdef, grammar, tx, config), rl_shardings)
  ones = jax.tree.map(lambda x: jnp.ones(x.shape, jnp.float32), abstract.params)
  value_only = value_only_mask(abstract.params)
  dev_records = [dev[i] for i in range(min(len(dev), int(config.rl.eval_episodes)))]
  dev_eval = stream_lm.SimulDevEval(config, tok, dev_records) if dev_records else None

  writer = reporting.create_writer(os.path.join(workdir, "tensorboard"))
  if start == 0:
    writer.write_hparams(loop._flatten_config(config))  # pylint: disable=protected-access
  start_eval = starting_policy_eval(workdir, start, dev_eval, name, config.train.init_from,
                                    lambda: nnx.merge(graphdef, state.params,
                                                      state.model_state), writer)
  progress = reporting.ProgressLine(total, start, prefix=f"[{name}] ")
  stop = loop._StopFlag()  # pylint: disable=protected-access
  stop.install()
  guard = loop._DivergenceGuard(config.train)  # pylint: disable=protected-access
  last: dict = {}
  stopped = None
  it = start
  t_loop = time.perf_counter()
  try:
    while it < total:
      t0 = time.perf_counter()
      recs = episodes_for(it, int(config.train.batch_size))
      decoder.set_model(nnx.merge(graphdef, state.params, state.model_state))
      key = episodes_for.sampling_key(it)
      ro = rollout.collect(decoder, recs, rs, key, detok)
      turn_rewards, logs = score_rollout(ro, recs, rc, decoder.layout)
      t_roll = time.perf_counter() - t0
      host = dict(ro.batch, turn_rewards=turn_rewards)
      with sharding.use_mesh(mesh, rules):
        batch = pipelines.make_global_batch(host, mesh, rules)
        old_logp, old_values, ref_logp, kl_exact = score_jit(
            state.params, state.model_state, ref_params, ref_rest, batch)
        batch = dict(batch, old_logp=old_logp, old_values=old_values, ref_logp=ref_logp,
                     kl_exact=kl_exact)
        ev_before = None
        if gated and it >= int(config.rl.value_warmup):
          ev_before = float(ev_jit(batch, state.log_beta))
        warm = in_value_warmup(it, ev_before, config.rl)
        args = (state, batch, jax.random.fold_in(key, 1), jnp.float32(0.0 if warm else 1.0),
                value_only if warm else ones)
        if it == start:  # before the first update of this run: will it fit?
          check_update_memory(update_jit, args, config, name)
        state, m = update_jit(*args)
        del args  # holds the donated state
      m = {k: float(v) for k, v in jax.device_get(m).items()}
      # train forward == decoder, on the positions whose action is the token itself
      gen = host["gen_mask"] > 0
      if speech_action == "stop":
        gen &= host["tokens"] < decoder.layout.speech_offset
      gap = np.abs(np.asarray(old_logp)[gen] - host["rollout_logp"][gen])
      m["rl/rollout_logp_gap"] = float(gap.max()) if gap.size else 0.0
      m.update(rollout_stats(ro, logs))
      m["rl/within_group_share"] = within_group_share(turn_rewards.sum(axis=1),
                                                      episodes_for.group_size)
      m["rl/value_warmup"] = float(warm)
      if ev_before is not None:
        m["rl/value_ev_before"] = ev_before
      m["rl/too_long_skipped"] = float(episodes_for.too_long)
      m["rl/rollout_seconds"] = t_roll
      m["rl/iteration_seconds"] = time.perf_counter() - t0
      it += 1
      last = m
      writer.write_scalars(it, dict(m))
      with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": it, **m}) + "\n")
      progress(it, {k: m[k] for k in ("reward/total", "rl/kl", "rl/beta", "rl/entropy",
                                      "rl/value_loss") if k in m})
      if guard.update([int(m.get("rl/skipped", 0) > 0)]):
        stopped = "diverged"
        break
      eval_now = dev_eval is not None and (it % int(config.train.eval_every) == 0
                                           or it == total)
      if eval_now:
        ev = dev_scores(dev_eval, nnx.merge(graphdef, state.params, state.model_state),
                        writer, it, f"[{name}] eval @ {it}")
        last = dict(last, **ev)
      preempted = stop.agreed()
      stopping = preempted or (stop_at is not None and it >= stop_at)
      ckpt.save(it, state, meta={"stage": name, "step": it, "config": config.name},
                force=stopping or it == total)
      if stopping:
        if it < total:
          stopped = "preempted" if preempted else "stop_at"
        break
  finally:
    stop.restore()
    last_checkpoint = loop.close_outputs(ckpt, writer)
  return loop.finish_result(
      dict(last, **start_eval), name=name, step=it, total=total,
      steps_per_second=(it - start) / max(time.perf_counter() - t_loop, 1e-9),
      stopped=stopped, last_checkpoint=last_checkpoint, guard=guard, workdir=workdir,
      learning_rate=config.train.learning_rate)
