"""transformers' own forward over the race's checkpoint and calibration ids on the GPU, without observers: the
reference that moe-quant's calibration forward is measured against (layer-tokens per second).

    python3 benches/e2e/torch_forward.py MODEL_DIR CALIB_IDS.json BATCH [EXPERTS_IMPLEMENTATION ...]

EXPERTS_IMPLEMENTATION is transformers' `experts_implementation` (default: grouped_mm; eager is the per-expert
loop ModelOpt calibrates with). The model is loaded in bf16 on cuda:0 with transformers' default attention
(sdpa); one batch runs unmeasured first, then every batch through the decoder (no lm_head, no cache), timed
between two device synchronisations. Prints one JSON line per implementation.
"""

import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    model_dir, ids_path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    implementations = sys.argv[4:] or ["grouped_mm"]
    with open(ids_path) as f:
        ids = torch.tensor(json.load(f), dtype=torch.long)
    for implementation in implementations:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.bfloat16, device_map="cuda:0", experts_implementation=implementation
        )
        model.eval()
        batches = [ids[start : start + batch].cuda() for start in range(0, len(ids), batch)]
        with torch.inference_mode():
            model.model(input_ids=batches[0], use_cache=False)
            torch.cuda.synchronize()
            started = time.perf_counter()
            for input_ids in batches:
                model.model(input_ids=input_ids, use_cache=False)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - started
        layers = model.config.num_hidden_layers
        tokens = ids.numel()
        print(
            json.dumps(
                {
                    "experts_implementation": implementation,
                    "attention": model.config._attn_implementation,
                    "layers": layers,
                    "tokens": tokens,
                    "seconds": seconds,
                    "layer_tokens_per_second": tokens * layers / seconds,
                    "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
                }
            ),
            flush=True,
        )
        del model
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
