"""Logical axis names: the one vocabulary that parameters and activations are named in.

Parameters and activations use *separate* vocabularies so that, e.g., the model width of a
weight (`EMBED`) can be FSDP-sharded while the model width of an activation
(`ACT_EMBED`) stays replicated. Mapping logical names to the mesh axes `data`, `fsdp`,
`tensor` is configuration (`config.logical_axis_rules`), never code.
"""

# Mesh axes (physical). Only `mesh.py` and the config rules talk about these.
DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

# ---- Weight axes --------------------------------------------------------------------
EMBED = "embed"            # model width of a weight
MLP = "mlp"                # feed-forward hidden width
HEADS = "heads"            # query heads
KV_HEADS = "kv_heads"      # key/value heads (GQA)
HEAD_DIM = "head_dim"      # per-head width (kept replicated)
VOCAB = "vocab"            # token vocabulary
CODEBOOK = "codebook"      # codec codebook entries
CONV_IN = "conv_in"        # input channels of a convolution
CONV_OUT = "conv_out"      # output channels of a convolution
CONV_KERNEL = "conv_kernel"  # spatial/temporal kernel taps (replicated)
NORM = "norm"              # scale/bias vectors of norms (replicated)
LAYERS = "layers"          # stacked (scanned) layer axis

# ---- Activation axes ----------------------------------------------------------------
ACT_BATCH = "activation_batch"
ACT_LENGTH = "activation_length"
ACT_EMBED = "activation_embed"
ACT_MLP = "activation_mlp"
ACT_HEADS = "activation_heads"
ACT_KV_HEADS = "activation_kv_heads"
ACT_HEAD_DIM = "activation_head_dim"
ACT_VOCAB = "activation_vocab"
ACT_CHANNELS = "activation_channels"
ACT_MEL = "activation_mel"

# ---- Cache axes (streaming state) ---------------------------------------------------
CACHE_BATCH = "cache_batch"
CACHE_LENGTH = "cache_length"
CACHE_KV_HEADS = "cache_kv_heads"
CACHE_HEAD_DIM = "cache_head_dim"

WEIGHT_AXES = (EMBED, MLP, HEADS, KV_HEADS, HEAD_DIM, VOCAB, CODEBOOK, CONV_IN, CONV_OUT,
               CONV_KERNEL, NORM, LAYERS)
ACTIVATION_AXES = (ACT_BATCH, ACT_LENGTH, ACT_EMBED, ACT_MLP, ACT_HEADS, ACT_KV_HEADS,
                   ACT_HEAD_DIM, ACT_VOCAB, ACT_CHANNELS, ACT_MEL)
CACHE_AXES = (CACHE_BATCH, CACHE_LENGTH, CACHE_KV_HEADS, CACHE_HEAD_DIM)
ALL_LOGICAL_AXES = WEIGHT_AXES + ACTIVATION_AXES + CACHE_AXES
