"""Data preparation for whisper-llada (not remote code): NeMo-style manifests, tokenizers, and the command line of
``python whisper_llada_data_prep.py``.

``write_manifest`` writes records as a NeMo-style JSON-lines manifest (atomically), ``create_manifest`` builds one from
LibriSpeech split directories, optionally holding out whole speakers or every N-th utterance, and
``train_bpe_tokenizer`` trains a small byte-level BPE on manifests' transcripts for a decoder trained from scratch.
``main`` is the command line (``create-manifest``, ``train-tokenizer``; usage in ``whisper_llada_data``'s docstring).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import whisper_llada_data as wld
from whisper_llada_io import AudioLoadError, PathLike, describe_source, source_path, write_atomic

logger = logging.getLogger("whisper_llada_data")  # the command line's logger (python whisper_llada_data_prep.py)


# --------------------------------------------------------------------------- manifests


def write_manifest(records: Iterable[Mapping[str, Any]], path: PathLike) -> int:
    """Write records as a NeMo-style JSON-lines manifest, atomically.

    Each line is ``{"audio_filepath", "duration", "text", "key"}`` (NeMo ignores
    the extra ``"key"``; ``read_manifest`` keeps it). Only records whose audio is
    a file path can be written. The file is first written to a temporary file
    in the same directory and then moved over ``path`` with ``os.replace``, so a
    reader never sees a half-written manifest. Missing parent directories are
    created. Returns the number of records written.

    Raises:
        ValueError: a record's audio is not a file path.
    """
    target = Path(path).expanduser().absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                audio_path = source_path(record["audio"])
                if audio_path is None:
                    raise ValueError(
                        f"record {record.get('key')!r}: audio source {describe_source(record['audio'])} "
                        "is not a file path; only path records can be written to a manifest"
                    )
                line = {
                    "audio_filepath": audio_path,
                    "duration": record.get("duration"),
                    "text": record["text"],
                    "key": record["key"],
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return count


# --------------------------------------------------------------------------- LibriSpeech


def _speaker_set(speakers: Optional[Iterable[Union[str, int]]]) -> Optional[set[str]]:
    return None if speakers is None else {str(s).strip() for s in speakers if str(s).strip()}


def create_manifest(
    dirs: Union[PathLike, Iterable[PathLike]],
    output: PathLike,
    exclude_speakers: Optional[Iterable[Union[str, int]]] = None,
    include_speakers: Optional[Iterable[Union[str, int]]] = None,
    holdout_every: Optional[int] = None,
    holdout_output: Optional[PathLike] = None,
) -> list[wld.Record]:
    """Scan LibriSpeech directories and write a NeMo manifest, filtering speakers.

    ``include_speakers`` keeps only those speakers, ``exclude_speakers`` drops
    those (both may be given; exclusion wins). With ``holdout_every=N`` and
    ``holdout_output``, every N-th kept utterance (by key) goes to that second
    manifest instead (a validation set from the training speakers). Speaker ids are compared as
    strings (speaker = first ``-`` field of the key). Requested ids that do not
    occur in the data are logged as a warning, since they are likely typos.
    Returns the records written.

    Raises:
        DataError: from ``scan_librispeech``, or when no record is left.
    """
    dir_list = [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs)
    records = wld.scan_librispeech(*dir_list)
    present = {wld.speaker_of(r["key"]) for r in records}
    include = _speaker_set(include_speakers)
    exclude = _speaker_set(exclude_speakers)
    for label, wanted in (("include", include), ("exclude", exclude)):
        unknown = sorted(wanted - present) if wanted else []
        if unknown:
            logger.warning("%s_speakers not found in %s: %s", label, ", ".join(map(str, dir_list)), ", ".join(unknown))
    kept = [
        r
        for r in records
        if (include is None or wld.speaker_of(r["key"]) in include)
        and (exclude is None or wld.speaker_of(r["key"]) not in exclude)
    ]
    if not kept:
        raise wld.DataError(f"no utterances left in {', '.join(map(str, dir_list))} after speaker filtering")
    if (holdout_every is None) != (holdout_output is None):
        raise wld.DataError("holdout_every and holdout_output go together")
    if holdout_every is not None:
        if int(holdout_every) < 2:
            raise wld.DataError(f"holdout_every must be >= 2, got {holdout_every}")
        held = [r for i, r in enumerate(kept) if i % holdout_every == holdout_every - 1]
        kept = [r for i, r in enumerate(kept) if i % holdout_every != holdout_every - 1]
        write_manifest(held, holdout_output)
    write_manifest(kept, output)
    return kept


# --------------------------------------------------------------------------- tokenizer


def train_bpe_tokenizer(manifests: Sequence[str], output: str, vocab_size: int = 1024) -> int:
    """Train a small byte-level BPE tokenizer on the training targets of NeMo manifests and write its
    ``tokenizer.json`` to ``output`` (atomically). Returns the vocabulary size.

    The targets are the manifests' transcripts as training uses them (``whisper_llada_data.normalize_transcript``).
    Byte-level BPE covers any text, so words the manifests never saw still tokenize. The vocabulary holds
    ``<|endoftext|>`` (EOS and padding for ``processing_whisper_llada.build_llada_style_tokenizer``) and
    ``<|ctc_blank|>`` (a token no text produces: the blank of the auxiliary CTC loss, ``--ctc_blank_id``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise wld.DataError(f"vocab_size must be at least 300 (256 bytes + specials + merges), got {vocab_size}")
    texts: list[str] = []
    for manifest in manifests:
        for record in wld.read_manifest(manifest):
            texts.append(wld.normalize_transcript(record["text"]))
    if not texts:
        raise wld.DataError(f"{', '.join(manifests)}: no transcripts to train a tokenizer on")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|ctc_blank|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    out = Path(output).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, tokenizer.to_str(pretty=True))
    return tokenizer.get_vocab_size()


# --------------------------------------------------------------------------- CLI


def _read_speaker_args(values: Optional[list[str]]) -> Optional[list[str]]:
    """Expand CLI speaker arguments: ids, comma-separated ids, or ``@FILE`` lists."""
    if values is None:
        return None
    speakers: list[str] = []
    for value in values:
        if value.startswith("@"):
            list_file = Path(value[1:]).expanduser()
            if not list_file.is_file():
                raise wld.DataError(f"{list_file}: speaker list file not found")
            content = list_file.read_text(encoding="utf-8")
            lines = [line.split("#", 1)[0] for line in content.splitlines()]
            speakers.extend(s for line in lines for s in line.replace(",", " ").split())
        else:
            speakers.extend(s for s in value.split(",") if s.strip())
    return speakers


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point of ``python whisper_llada_data_prep.py`` (usage in that module's docstring)."""
    parser = argparse.ArgumentParser(prog="whisper_llada_data_prep.py", description=wld.__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser(
        "create-manifest",
        help="write a NeMo-style manifest from LibriSpeech split directories",
        description="Scan LibriSpeech split directories (SPEAKER/CHAPTER/*.flac + *.trans.txt) and write a "
        "NeMo-style JSON-lines manifest. Speaker arguments accept ids, comma-separated ids, or @FILE "
        "(one id per line, e.g. a file written by --speakers-out).",
    )
    create.add_argument("dirs", nargs="+", metavar="DIR", help="LibriSpeech split directory, e.g. .../train-clean-100")
    create.add_argument("--output", "-o", required=True, metavar="OUT.jsonl", help="manifest to write")
    create.add_argument("--include-speakers", nargs="+", metavar="ID", help="keep only these speakers")
    create.add_argument("--exclude-speakers", nargs="+", metavar="ID", help="drop these speakers (held out)")
    create.add_argument(
        "--speakers-out", metavar="FILE", help="also write the sorted speaker ids of the manifest, one per line"
    )
    create.add_argument("--holdout-every", type=int, metavar="N",
                        help="put every N-th utterance (by key) in --holdout-output instead (a validation set)")
    create.add_argument("--holdout-output", metavar="VAL.jsonl", help="manifest of the held-out utterances")
    train_tok = commands.add_parser(
        "train-tokenizer",
        help="train a small byte-level BPE tokenizer (tokenizer.json) on manifests' transcripts",
        description="Train a byte-level BPE tokenizer on the lower-cased transcripts of NeMo manifests, for a "
        "decoder trained from scratch (train_hf.py --tokenizer_file).",
    )
    train_tok.add_argument("manifests", nargs="+", metavar="MANIFEST.jsonl")
    train_tok.add_argument("--output", "-o", required=True, metavar="tokenizer.json")
    train_tok.add_argument("--vocab-size", type=int, default=1024)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "train-tokenizer":
        try:
            size = train_bpe_tokenizer(args.manifests, args.output, args.vocab_size)
        except wld.DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        logger.info("wrote %s: %d tokens", args.output, size)
        return 0

    try:
        records = create_manifest(
            args.dirs,
            args.output,
            exclude_speakers=_read_speaker_args(args.exclude_speakers),
            include_speakers=_read_speaker_args(args.include_speakers),
            holdout_every=args.holdout_every,
            holdout_output=args.holdout_output,
        )
    except (wld.DataError, AudioLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    speakers = sorted({wld.speaker_of(r["key"]) for r in records}, key=lambda s: (len(s), s))
    hours = sum(r["duration"] or 0.0 for r in records) / 3600
    if args.speakers_out:
        out = Path(args.speakers_out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f"{s}\n" for s in speakers), encoding="utf-8")
    logger.info(
        "wrote %s: %d utterances, %d speakers, %.2f hours", args.output, len(records), len(speakers), hours
    )
    return 0


__all__ = ["write_manifest", "create_manifest", "train_bpe_tokenizer", "main"]


if __name__ == "__main__":
    sys.exit(main())
