#!/usr/bin/env python3
"""Build fixtures/vectors/chat.json: conversations rendered by transformers' `apply_chat_template`, the oracle for
the chat-template rendering of calibration conversations (crates/core/tests/calib_data.rs; dev tooling, not a
runtime dependency).

Regenerate (from the repository root):

    python -m venv .venv-tools && .venv-tools/bin/pip install "transformers>=5,<6" jinja2 \
        && .venv-tools/bin/python tools/make_chat_vectors.py

Deterministic, CPU only, under a second; no network (the tokenizer is fixtures/qwen3_moe/hub's own).

The template below is written for this test to use what real chat templates use: `namespace`, slicing,
`loop.index0`, `is string`, `trim`/`strip`, `map(attribute=…)`/`join`, `dict.get`, `raise_exception`, special
tokens from tokenizer_config.json (`bos_token`, `eos_token`) and `add_generation_prompt`. Each case is rendered
with `tokenize=False, add_generation_prompt=False`, as calibration renders conversations; a case whose
rendering raises stores the message of the exception instead.

File layout: {"template": str, "bos_token": str, "eos_token": str,
              "cases": [{"name", "messages", "text" | "error"}]}
"""

import json
import shutil
import tempfile
from pathlib import Path

from jinja2.exceptions import TemplateError
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "fixtures" / "qwen3_moe" / "hub"
OUT = ROOT / "fixtures" / "vectors" / "chat.json"

TEMPLATE = """\
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = 'You are a helpful assistant.' %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token + '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}
{%- set ns = namespace(turns=0, last='') %}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['content'] is string %}
        {%- set content = message['content'].strip() %}
    {%- else %}
        {%- set content = message['content'] | map(attribute='text') | join('\\n') %}
    {%- endif %}
    {%- if message.get('reasoning_content') %}
        {%- set content = '<think>\\n' + message['reasoning_content'].strip() + '\\n</think>\\n\\n' + content %}
    {%- endif %}
    {%- set ns.turns = ns.turns + 1 %}
    {%- set ns.last = message['role'] %}
    {{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- elif ns.last == 'assistant' %}
    {{- eos_token }}
{%- endif %}
"""

CASES = [
    ("one user turn", [{"role": "user", "content": "  What is a mixture of experts?  "}]),
    (
        "system, user, assistant",
        [
            {"role": "system", "content": " Answer briefly. "},
            {"role": "user", "content": "Why quantize?"},
            {"role": "assistant", "content": "Less memory, faster serving."},
        ],
    ),
    (
        "content as a list of parts, and reasoning",
        [
            {"role": "user", "content": [{"type": "text", "text": "First part."}, {"type": "text", "text": "Second part."}]},
            {"role": "assistant", "content": "Done.", "reasoning_content": "  The user gave two parts.  "},
        ],
    ),
    ("roles out of order", [{"role": "assistant", "content": "I speak first."}]),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(SOURCE / name, Path(tmp) / name)
        config_path = Path(tmp) / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = TEMPLATE
        config_path.write_text(json.dumps(config))
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        cases = []
        for name, messages in CASES:
            case = {"name": name, "messages": messages}
            try:
                case["text"] = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
            except TemplateError as error:  # the template's raise_exception
                case["error"] = str(error)
            cases.append(case)
    vectors = {"template": TEMPLATE, "bos_token": config["bos_token"], "eos_token": config["eos_token"], "cases": cases}
    OUT.write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
