"""`mia-tuner detect`: texts scored with a trained MIA-Tuner detector, each with its decision
at the detector's saved threshold."""

from __future__ import annotations

from ..config import DataConfig, ModelConfig
from .args import check_out_file
from .fields import add_dataclass_options
from .options import add_cache_options, add_defence_option, with_defence


def add_parser(commands) -> None:
    """`detect`: score texts with a trained detector."""
    detect = commands.add_parser("detect", help="score texts with a trained MIA-Tuner detector")
    detect.add_argument("--detector", required=True, help="a detector directory written by `train`")
    detect.add_argument("--trust-unverified-detector", action="store_true",
                        help="use a detector that records no hashes of its files (saved by mia-tuner "
                             "< 0.2) without checking them: damage to its adapter would go unnoticed")
    source = detect.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a text to score (repeatable)")
    source.add_argument("--file", help=".jsonl/.json/.csv/.parquet file of texts")
    add_dataclass_options(detect, DataConfig, prefix="", skip=("path", "split", "label_column", "dedupe"))
    detect.add_argument("--model", help="the base model (default: the name the detector records)")
    add_dataclass_options(detect, ModelConfig, prefix="", skip=("name", "device_map", "quantization", "gguf_file"))
    detect.add_argument("--out", help="write one JSON line per text here")
    add_defence_option(detect)
    add_cache_options(detect)


def detect_texts(args) -> list[str]:
    """The texts of `detect`: --text values or a column of --file, validated like `scores`."""
    from ..data.loading import read_columns
    from ..data.validation import validate_texts
    from ..errors import DataError

    if args.text is not None:
        texts, numbers, unit = list(args.text), None, "--text"
    else:
        columns, _, info = read_columns(args.file, None)
        if args.text_column not in columns:
            raise DataError(f"{args.file}: no column {args.text_column!r}; available: "
                            f"{sorted(columns)} (choose one with --text-column)")
        texts = list(columns[args.text_column])
        numbers, unit = (info["row_lines"], "line") if "row_lines" in info else (None, "row")
    source = "the --text values" if args.text is not None else args.file
    try:
        kept, _, skipped = validate_texts(texts, skip_invalid=args.skip_invalid,
                                          row_numbers=numbers, unit=unit)
    except DataError as error:
        raise DataError(f"{source}: {error}") from None
    if skipped:
        print(f"Skipped {skipped} row(s) with a missing or empty text (--skip-invalid)")
    return kept


def scorable_texts(texts: list[str], detector, skip_invalid: bool) -> list[str]:
    """Before any forward pass: the texts ``detector`` can score (the base pipeline needs two
    tokens; --skip-invalid skips shorter ones), texts it will cut announced."""
    from ..data.validation import MIN_TOKENS, check_token_counts

    kept, skipped = check_token_counts(
        texts, detector.pipeline.tokenizer, max_tokens=detector.pipeline.config.max_tokens,
        skip_invalid=skip_invalid, what="the texts to score",
        min_tokens=MIN_TOKENS if detector.pipeline.mode == "base" else 1)
    if skipped:
        print(f"Skipped {skipped} text(s) of fewer than {MIN_TOKENS} tokens (--skip-invalid)")
    return [texts[i] for i in kept]


def run(args) -> None:
    import json

    from ..models import load_model
    from ..tuner.detector import load_detector, read_detector_info

    check_out_file(args.out)
    texts = detect_texts(args)
    trust = args.trust_unverified_detector
    info = read_detector_info(args.detector, trust)
    name = args.model or info["base_model"]["name"]
    loaded = load_model(ModelConfig(name=name, device=args.device, dtype=args.dtype,
                                    trust_remote_code=args.trust_remote_code),
                        cache_dir=args.cache_dir)
    detector = load_detector(args.detector, with_defence(args, loaded), trust)
    texts = scorable_texts(texts, detector, args.skip_invalid)
    scores = detector.score(texts)
    rows = [{"text": t, "score": float(s), "member": bool(s >= detector.threshold),
             "threshold": detector.threshold} for t, s in zip(texts, scores)]
    for row in rows:
        preview = row["text"].replace("\n", " ")[:60]
        print(f"{row['score']:.6f}\t{'member' if row['member'] else 'non-member'}\t{preview}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
