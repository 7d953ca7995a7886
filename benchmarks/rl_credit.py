"""Where the time penalty's credit goes: GAE advantages per action class (issue #13).

    nice -n 5 python -m benchmarks.rl_credit --run_dir=runs/tiny_v3 [--episodes=8]

Loads the SFT checkpoint of a recipe run (read-only), collects one rollout batch of
training utterances with the `rl_time_only` ablation's config (iteration 0's episodes and
sampling key, exactly as `liveinterp.rl.trainer.run` draws them), and for each
`rl.time_credit` builds the per-token rewards as the trainer does
(`trainer.score_rollout`), the value head's values, GAE and whitening
(`trainer.advantages`), with the SFT model's value head as RL starts ("untrained": SFT
never trains it), with V = 0 ("zero": what the reward placement alone gives), and with
`--warmup` > 0 after that many value-only updates on the batch (`trainer.make_update`,
policy frozen). With
`rl.speech_action="stop"` the actions of a speech turn are "continue speaking" (the first
token of frame k >= 1, where `<eot>` was allowed) and "stop" (its `<eot>`); the other
speech tokens have no choice. Reported per credit and value head: count, mean and sum of
the advantage per class (continue, stop, speech tokens without a choice, wait turns'
`<eot>`, text and tag tokens), per speech turn Σ A(continue) and A(stop), and the sign of
the policy-gradient push on the stop logit z (p = σ(z) = q(<eot>)): Σ over decisions of
∂(A·log π(a))/∂z, −p·A for a continue and (1 − p)·A for a stop; > 0 raises p(stop) and
shortens speech, < 0 lengthens it. Prints a table and writes
`benchmarks/results/rl_credit.json`.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from absl import app, flags

from benchmarks import common

CREDITS = ("backlog", "increment", "speech")
CLASSES = ("continue", "stop", "speech_forced", "wait_eot", "text")
COLUMNS = ("credit", "values", "class", "n", "mean_adv", "sum_adv", "mean_raw", "mean_value",
           "stop_push")


def _define_flags() -> dict:
  return dict(
      run_dir=flags.DEFINE_string("run_dir", "runs/tiny_v3", "recipe run directory (read)"),
      ablation=flags.DEFINE_string("ablation", "rl_time_only",
                                   "RL stage/ablation whose config and rewards to use"),
      episodes=flags.DEFINE_integer("episodes", 8, "training utterances in the batch"),
      warmup=flags.DEFINE_integer("warmup", 0, "value-only updates on the batch (0: none; "
                                  "each credit then compiles and runs the update: slow)"),
      out=flags.DEFINE_string("out", os.path.join(common.RESULTS_DIR, "rl_credit.json"),
                              "JSON output"))


_FLAGS: dict = {}


def token_classes(ro, layout) -> np.ndarray:
  """[B, L] int: the `CLASSES` index of each generated token, -1 elsewhere."""
  from liveinterp.rl import trainer  # pylint: disable=g-import-not-at-top
  out = np.full(ro.batch["tokens"].shape, -1, np.int64)
  for r, turns in enumerate(ro.turn_ids):
    ends = np.nonzero(ro.batch["turn_end"][r])[0]
    for end, ids in zip(ends, turns):
      first = end - len(ids) + 1
      ids = np.asarray(ids)
      speech = ids >= layout.speech_offset
      cls = np.full(len(ids), CLASSES.index("text"))
      if speech.any():
        cls[speech] = CLASSES.index("speech_forced")
        cls[trainer.speech_frame_starts(ids, layout)[1:]] = CLASSES.index("continue")
        cls[-1] = CLASSES.index("stop")
      else:
        cls[-1] = CLASSES.index("wait_eot")
      out[r, first:end + 1] = cls
  return out


def stop_push(adv, logp, classes) -> dict:
  """The policy gradient's push on the stop logit, split by action (module docstring)."""
  cont, stop = classes == CLASSES.index("continue"), classes == CLASSES.index("stop")
  p_cont = -np.expm1(logp[cont])          # p(stop) where "continue" was taken
  p_stop = np.exp(logp[stop])             # p(stop) where it was taken
  from_cont = float(np.sum(-p_cont * adv[cont]))
  from_stop = float(np.sum((1.0 - p_stop) * adv[stop]))
  return {"from_continue": from_cont, "from_stop": from_stop,
          "total": from_cont + from_stop}


def per_turn(adv, ro, classes) -> dict:
  """Over speech turns: mean Σ A(continue), mean A(stop), and the share of turns whose
  A(stop) is below their mean A(continue)."""
  sums, stops, below = [], [], []
  for r in range(len(ro.turn_ids)):
    ends = np.nonzero(ro.batch["turn_end"][r])[0]
    for end, ids in zip(ends, ro.turn_ids[r]):
      c = classes[r, end - len(ids) + 1:end + 1]
      a = adv[r, end - len(ids) + 1:end + 1]
      if c[-1] != CLASSES.index("stop"):
        continue
      cont = a[c == CLASSES.index("continue")]
      sums.append(float(cont.sum()))
      stops.append(float(a[-1]))
      if cont.size:
        below.append(float(a[-1] < cont.mean()))
  return {"speech_turns": len(stops),
          "mean_sum_adv_continue": float(np.mean(sums)) if sums else None,
          "mean_adv_stop": float(np.mean(stops)) if stops else None,
          "share_stop_below_continue": float(np.mean(below)) if below else None}


def analyse(adv, raw, logp, classes, ro, values) -> dict:
  """The statistics of one (credit, value head) pair."""
  out = {"classes": {}}
  for i, name in enumerate(CLASSES):
    sel = classes == i
    n = int(sel.sum())
    out["classes"][name] = {
        "n": n, "mean_adv": float(adv[sel].mean()) if n else None,
        "sum_adv": float(adv[sel].sum()), "mean_raw": float(raw[sel].mean()) if n else None,
        "sum_raw": float(raw[sel].sum()),
        "mean_value": float(values[sel].mean()) if n else None}
  out["stop_push"] = stop_push(adv, logp, classes)
  out["stop_push_raw"] = stop_push(raw, logp, classes)
  out["per_turn"] = per_turn(adv, ro, classes)
  out["per_turn_raw"] = per_turn(raw, ro, classes)
  return out


def main(argv):
  del argv
  F = {k: v.value for k, v in _FLAGS.items()}
  t_start = time.perf_counter()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from data_pipelines import build, pipelines  # pylint: disable=g-import-not-at-top
  from liveinterp.common import config as config_lib, mesh as mesh_lib, sharding  # pylint: disable=g-import-not-at-top
  from liveinterp.inference import session as session_lib  # pylint: disable=g-import-not-at-top
  from liveinterp.models import s2st  # pylint: disable=g-import-not-at-top
  from liveinterp.rl import kl as kl_lib, rollout, trainer  # pylint: disable=g-import-not-at-top
  from liveinterp.train.stage_configs import stage_config  # pylint: disable=g-import-not-at-top
  from liveinterp.train.stages import stream_lm  # pylint: disable=g-import-not-at-top

  run_dir = os.path.abspath(F["run_dir"])
  data_dir = os.path.join(os.path.dirname(run_dir), "data")
  base = config_lib.load("tiny:pretrain")
  cfg = stage_config("tiny", F["ablation"], run_dir, data_dir,
                     build.tokenizer_prefix_for(data_dir, base))
  cfg.train.batch_size = int(F["episodes"])
  cfg.rl.ppo_minibatches = 1
  mesh = mesh_lib.create_mesh(cfg.mesh)
  rules = sharding.rules_from_config(cfg.logical_axis_rules)
  tx = trainer._update_tx(cfg)  # pylint: disable=protected-access
  graphdef, abstract, shardings = trainer.abstract_state(
      lambda rngs: s2st.S2ST(cfg, rngs=rngs), tx, mesh, rules)
  ref_params, ref_rest = trainer.load_reference(cfg, abstract)
  tok = stream_lm.tokenizer_for(cfg)
  rs = rollout.RolloutSpec.from_config(cfg)
  decoder = trainer.rollout_decoder(cfg, nnx.merge(graphdef, ref_params, ref_rest), tok)
  grammar, layout = decoder.spec.grammar, decoder.layout
  episodes_for = trainer._Episodes(pipelines.open_corpus(cfg, "train"), rs,  # pylint: disable=protected-access
                                   int(cfg.seed), cfg.stage)
  recs = episodes_for(0, int(F["episodes"]))
  key = episodes_for.sampling_key(0)
  t0 = time.perf_counter()
  ro = rollout.collect(decoder, recs, rs, key, session_lib.Detokenizer(tok))
  t_rollout = time.perf_counter() - t0
  temperature, action = float(cfg.rl.temperature), str(cfg.rl.speech_action)
  score = jax.jit(lambda p, s, b: rollout.policy_and_reference(
      nnx.merge(graphdef, p, s), nnx.merge(graphdef, p, s), b, grammar, temperature, action))
  with sharding.use_mesh(mesh, rules):
    batch0 = pipelines.make_global_batch(dict(ro.batch), mesh, rules)
    logp, values0, ref_logp, _ = score(ref_params, ref_rest, batch0)
  mask = trainer.policy_mask(ro.batch, layout.speech_offset, action)
  beta = float(cfg.rl.kl_beta)
  kl_pen = beta * kl_lib.token_kl(logp, ref_logp, mask)   # 0: the policy is the reference
  classes = token_classes(ro, layout)
  logp_np = np.asarray(logp)
  update_jit = trainer.jit_update(trainer.make_update(graphdef, grammar, tx, cfg), shardings)
  value_only = trainer.value_only_mask(abstract.params)

  results, rows = {}, []
  for credit in CREDITS:
    rc = dataclasses.replace(trainer.reward_config(cfg), time_credit=credit)
    turn_rewards, logs = trainer.score_rollout(ro, recs, rc, layout)
    host = dict(ro.batch, turn_rewards=turn_rewards)
    heads = {"untrained": values0, "zero": jnp.zeros_like(values0)}
    if F["warmup"] > 0:
      state = trainer.initial_state(ref_params, ref_rest, tx, beta, shardings, mesh, rules)
      with sharding.use_mesh(mesh, rules):
        b = pipelines.make_global_batch(host, mesh, rules)
        b = dict(b, old_logp=logp, old_values=values0, ref_logp=ref_logp,
                 kl_exact=jnp.zeros_like(logp))
        for i in range(int(F["warmup"])):
          _, v_old, _, _ = score(state.params, state.model_state, b)
          b = dict(b, old_values=v_old)
          state, _ = update_jit(state, b, jax.random.key(i), jnp.float32(0.0), value_only)
        heads[f"warmup{F['warmup']}"] = score(state.params, state.model_state, b)[1]
    results[credit] = {"reward_time_per_turn": float(np.mean([d["reward/time"] for d in logs])),
                       "turn_rewards_sum": float(turn_rewards.sum())}
    for head, values in heads.items():
      batch = dict(ro.batch, turn_rewards=jnp.asarray(turn_rewards), old_values=values)
      adv, ret = trainer.advantages(batch, jnp.asarray(mask), kl_pen, cfg)
      raw = np.asarray(ret) - np.where(mask > 0, np.asarray(values), 0.0)
      res = analyse(np.asarray(adv), raw, logp_np, classes, ro, np.asarray(values))
      results[credit][head] = res
      for name in CLASSES:
        s = res["classes"][name]
        rows.append({"credit": credit, "values": head, "class": name, "n": s["n"],
                     "mean_adv": s["mean_adv"], "sum_adv": s["sum_adv"],
                     "mean_raw": s["mean_raw"], "mean_value": s["mean_value"],
                     "stop_push": res["stop_push"]["total"] if name == "stop" else None})
  common.print_table(rows, COLUMNS)
  for credit in CREDITS:
    for head, res in results[credit].items():
      if isinstance(res, dict) and "per_turn" in res:
        print(f"[rl_credit] {credit:9s} {head:9s} per speech turn: "
              f"ΣA(continue) {res['per_turn']['mean_sum_adv_continue']:+.3f}, "
              f"A(stop) {res['per_turn']['mean_adv_stop']:+.3f}, "
              f"stop below continue {res['per_turn']['share_stop_below_continue']:.2f}; "
              f"stop-logit push {res['stop_push']['total']:+.2f} "
              f"(continue {res['stop_push']['from_continue']:+.2f}, "
              f"stop {res['stop_push']['from_stop']:+.2f}; raw "
              f"{res['stop_push_raw']['total']:+.2f})")
  speech = np.concatenate([e.speech_ms for e in ro.episodes])
  payload = {
      "run_dir": run_dir, "ablation": F["ablation"], "episodes": int(F["episodes"]),
      "warmup": int(F["warmup"]), "gamma": float(cfg.rl.gamma), "lam": float(cfg.rl.lam),
      "speech_action": action, "speech_s_per_turn": float(speech.mean() / 1000.0),
      "turns": int(speech.size), "rollout_seconds": t_rollout,
      "seconds": time.perf_counter() - t_start, "results": results,
      "command": (f"nice -n 5 python -m benchmarks.rl_credit --run_dir={F['run_dir']} "
                  f"--ablation={F['ablation']} --episodes={F['episodes']} "
                  f"--warmup={F['warmup']}")}
  common.write_json(F["out"], payload)
  print(f"[rl_credit] {payload['seconds']:.0f} s; wrote {F['out']}")


if __name__ == "__main__":
  _FLAGS.update(_define_flags())
  app.run(main)
