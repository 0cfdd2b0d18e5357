"""What ShuffleLM and FasterDecodeMixer share: drafting, the set loss and generation."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import Cache

from . import invariant, packed
from .calibration import Calibration
from .config import ShuffleConfig
from .head import ShuffleHead
from .loss import IGNORE, SetLoss, offset_targets, set_prediction_loss
from .outputs import DraftOutput, ShuffleOutput, TrunkOutput

if TYPE_CHECKING:
    from ..decoding.loop import GenerationStream


def next_token_anchors(input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Anchor of position t: the next input token (teacher forcing); the last position takes
    the trunk's own greedy token, as it would in generation. (B, T) -> (B, T)."""
    last = logits[:, -1:].argmax(-1)  # (B, 1)
    return torch.cat([input_ids[:, 1:], last], dim=1)


class ShuffleModelBase(nn.Module):
    """A trunk with a next-token LM head, plus the shuffle head. Subclasses give the trunk."""

    config: ShuffleConfig
    head: ShuffleHead

    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = None  # set by loaders; fills token texts in traces
        self.calibration = Calibration()  # what the head's keep probs mean (loaded with it)
        self._cost_curve = None  # this machine's pass costs, measured on first use (cost.py)
        self.draft_projection_dtype: torch.dtype | None = None  # None: the LM head's own;
        # bfloat16 where the machine multiplies it much faster (cost.py measures; drafts only)
        self.row_invariant_passes: bool | None = None  # every token of a pass gets the bits
        # of a one-token pass (invariant.py); None: in half precision on a CPU that allows it

    # --- what a subclass provides ---------------------------------------------------------
    frozen_trunk: bool = False  # True: the trunk never learns, its passes record no gradients

    def decoder_stack(self) -> nn.Module:
        """The Hugging Face decoder stack (embeddings, blocks, final norm) of trunk passes."""
        raise NotImplementedError

    def new_cache(self) -> Cache:
        raise NotImplementedError

    def trunk_module(self) -> nn.Module:
        """The Hugging Face model that runs the trunk passes."""
        raise NotImplementedError

    def token_embeddings(self) -> nn.Module:
        raise NotImplementedError

    def vocab_projection(self) -> nn.Module:
        raise NotImplementedError

    def model_info(self) -> dict:
        raise NotImplementedError

    @property
    def cost_curve(self):
        """The machine's cost curve used to plan steps: None until measured or set by hand."""
        return self._cost_curve

    @cost_curve.setter
    def cost_curve(self, curve) -> None:
        self._cost_curve = curve

    def trunk_forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        logits: bool = True,
        logits_to_keep: int = 0,
        argmax_only: bool = False,
    ) -> TrunkOutput:
        """(B, T) ids -> hidden states and logits (None with logits=False: features only); a 4D
        attention mask with explicit position ids forwards a tree of drafts
        (loop.forward_block). Row-invariant where wanted, the logits recomputed in float32
        (precision.py); `argmax_only` (greedy decoding) certifies their argmax instead.
        `logits_to_keep` = n > 0: logits of the last n positions only (B, n, V), as transformers'
        argument of that name (a prefill needs its last row's; the LM head over a long prompt
        costs a good part of the pass); the hidden states stay those of every position."""
        early = self.config.early_layer
        frozen = torch.no_grad() if self.frozen_trunk else contextlib.nullcontext()
        with frozen, self.row_invariant(), self.packed_products():
            out = self.decoder_stack()(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=cache is not None,
                output_hidden_states=early is not None,
            )
            hidden = out.last_hidden_state  # (B, T, H)
            # (B, T, V), float32 whatever the trunk's dtype
            logits = (
                self.float32_logits(hidden, argmax_only=argmax_only, keep=logits_to_keep)
                if logits
                else None
            )
        if early is not None:  # hidden_states[0] is the embedding, [L] block L's output
            hidden = torch.cat([hidden, out.hidden_states[early]], dim=-1)  # (B, T, 2H)
        return TrunkOutput(hidden=hidden, logits=logits, cache=out.cache)

    def row_invariant(self):
        """The context a trunk pass runs in: row-invariant where it is wanted (invariant.py)."""
        enabled = self.uses_row_invariance()
        if enabled:
            invariant.pad_linear_layers(self.decoder_stack())
        return invariant.row_invariant(enabled)

    def packed_products(self):
        """The context a trunk pass runs in: products on weights packed once, where that is
        faster and gives the same bits (packed.py)."""
        packed.install(self.decoder_stack())
        return packed.our_passes()

    def uses_row_invariance(self) -> bool:
        """Whether trunk passes run row-invariant: as set, or by default in half precision on
        a CPU whose matrix products and attention give a row the same bits in a block of
        invariant.ROWS rows as alone (probed once)."""
        if not invariant.installed(self.trunk_module()):  # attention other than SDPA
            return False
        if self.row_invariant_passes is not None:
            return self.row_invariant_passes
        key = (self.dtype, self.device)
        if getattr(self, "_row_invariance", (None,))[0] != key:
            trunk = self.trunk_module()
            layers, shape = invariant.probe_layers(trunk), invariant.attention_shape(trunk)
            self._row_invariance = (key, invariant.wanted(*key, layers, shape))
        return self._row_invariance[1]

    @property
    def context_length(self) -> int:
        return self.config.max_position_embeddings

    # --- shared ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.head.parameters()).dtype

    def draft(
        self, hidden: torch.Tensor, anchor_ids: torch.Tensor, context: torch.Tensor | None = None
    ) -> DraftOutput:
        """hidden (..., H or 2H: TrunkOutput.hidden) and anchor ids (...) -> K slots of token
        logits, shuffle scores and keep logits; `context` (..., W): the sequence layer's z_t at
        those positions, for a head that has one (`sequence_context`)."""
        packed.install(self.head)
        with packed.our_passes():
            out = self.head(hidden, self.token_embeddings()(anchor_ids), context)
        return DraftOutput(
            logits=self.draft_logits(out.draft_hidden),
            shuffle_scores=out.shuffle_scores,
            keep_logits=out.keep_logits,
            vocab=self.head.draft_vocab,
        )

    def sequence_rows(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The sequence layer's rows r_i for positions whose hidden states are (..., L, H or 2H)
        and whose tokens and next tokens are ids (..., L + 1)."""
        embed = self.token_embeddings()
        return self.head.sequence.rows(hidden, embed(ids[..., :-1]), embed(ids[..., 1:]))

    def sequence_context(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor | None:
        """z_i at every position of whole sequences: hidden (B, L, H or 2H), ids (B, L + 1) ->
        (B, L, W), each row from positions 0..i (training, teacher-forced evaluation); None for
        a head without a sequence layer."""
        if self.head.sequence is None:
            return None
        return self.head.sequence(self.sequence_rows(hidden, ids))

    def draft_everywhere(self, hidden: torch.Tensor, ids: torch.Tensor, anchors: torch.Tensor):
        """Drafts at every position of whole sequences: hidden (B, T, H or 2H), their tokens
        (B, T) and anchors (B, T), the token after each -> DraftOutput over (B, T)."""
        context = self.sequence_context(hidden, torch.cat([ids[:, :1], anchors], 1))
        return self.draft(hidden, anchors, context)

    def draft_logits(self, draft_hidden: torch.Tensor) -> torch.Tensor:
        """The LM head applied to slot vectors, restricted to the draft vocabulary if any."""
        projection = self.vocab_projection()
        if self.head.draft_vocab is None:
            return projection(draft_hidden)
        weight, bias = self._draft_projection_weights(projection)
        if weight.dtype != draft_hidden.dtype:  # a faster dtype for drafts (never for anchors)
            logits = packed.linear(draft_hidden.to(weight.dtype), weight, bias)
            return logits.to(draft_hidden.dtype)
        return packed.linear(draft_hidden, weight, bias)

    def _draft_projection_weights(self, projection: nn.Module):
        """Rows of the LM head for the draft vocabulary; cached while the LM head is frozen."""
        vocab, weight, bias = self.head.draft_vocab, projection.weight, projection.bias
        if weight.requires_grad:
            return weight[vocab], None if bias is None else bias[vocab]
        dtype = self.draft_projection_dtype or weight.dtype
        key = (weight.data_ptr(), weight.dtype, vocab.data_ptr(), vocab._version, dtype)
        cached = self.__dict__.get("_draft_rows")
        if cached is None or cached[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # plain tensors, kept for reuse
                rows = (
                    weight[vocab].to(dtype).contiguous(),
                    None if bias is None else bias[vocab].to(dtype),
                )
            self.__dict__["_draft_rows"] = cached = (key, rows)
        return cached[1]

    def set_draft_vocab(self, token_ids: torch.Tensor) -> None:
        """Restrict drafts to these token ids (e.g. the most frequent ones of the training data)."""
        if self.head.draft_vocab is None or len(token_ids) != len(self.head.draft_vocab):
            raise ValueError(
                f"set draft_vocab_size={len(token_ids)} in the config when creating the head"
            )
        self.head.draft_vocab.copy_(torch.as_tensor(token_ids, dtype=torch.long))

    def draft_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Map token targets to draft-vocabulary columns: -1 where a token is not draftable."""
        vocab = self.head.draft_vocab
        if vocab is None:
            return targets
        column = torch.full((self.config.vocab_size,), -1, dtype=torch.long, device=targets.device)
        column[vocab] = torch.arange(len(vocab), device=targets.device)
        return torch.where(targets == IGNORE, targets, column[targets.clamp(min=0)])

    def head_loss(self, draft: DraftOutput, labels: torch.Tensor) -> SetLoss:
        """Set-prediction loss of drafts at every position of (B, T) labels."""
        targets = offset_targets(labels, self.config.num_slots)  # (B, T, K) tokens at offsets
        trained = (targets != IGNORE).any(-1)  # (B, T): positions with at least one target
        return self.set_loss(
            draft.logits[trained],
            draft.shuffle_scores[trained],
            draft.keep_logits[trained],
            targets[trained],
        )

    def set_loss(self, logits, shuffle_scores, keep_logits, targets: torch.Tensor) -> SetLoss:
        """The set-prediction loss of N positions' drafts against (N, K) target tokens at offsets
        1..K, weighted as the config says: the one objective of training and evaluation."""
        return set_prediction_loss(
            logits,
            shuffle_scores,
            keep_logits,
            self.draft_targets(targets),
            assignment=self.config.assignment,
            lambda_pos=self.config.lambda_pos,
            lambda_keep=self.config.lambda_keep,
            lambda_prior=self.config.lambda_prior,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ShuffleOutput:
        trunk = self.trunk_forward(input_ids, attention_mask=attention_mask)
        anchors = next_token_anchors(input_ids, trunk.logits)  # (B, T)
        draft = self.draft_everywhere(trunk.hidden, input_ids, anchors)
        output = ShuffleOutput(
            logits=trunk.logits,
            shuffle_scores=draft.shuffle_scores,
            draft_logits=draft.logits,
            keep_logits=draft.keep_logits,
            hidden_states=trunk.hidden,
        )
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask == 0, IGNORE)
            output.set_loss = self.head_loss(draft, labels).loss
            output.lm_loss = self.lm_loss(trunk.logits, labels)
            output.loss = output.set_loss
            if output.lm_loss is not None:
                output.loss = output.loss + self.config.lm_loss_weight * output.lm_loss
        return output

    def lm_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """The trunk's own next-token loss, or None where the trunk is frozen."""
        return None

    # --- generation (one loop for every caller: decoding/loop.py) --------------------------
    # decoding builds on model (the head's calibration and sequence cache, precision, the
    # backbone's cache folder), never the other way: these two methods hand the model to the
    # loop, which they import when called, so that importing model never imports decoding.
    def generate(self, input_ids=None, attention_mask=None, **settings):
        """Full sequence (1, prompt+new), or (sequence, GenerationTrace) with return_trace=True."""
        from ..decoding import loop

        return loop.generate(self, input_ids, attention_mask, **settings)

    def stream(self, input_ids=None, attention_mask=None, **settings) -> GenerationStream:
        """Iterate StepTraces as they are decoded; `.trace` holds the GenerationTrace after."""
        from ..decoding import loop

        return loop.stream(self, input_ids, attention_mask, **settings)
