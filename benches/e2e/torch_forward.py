"""transformers' own forward over the race's checkpoint and calibration ids on the GPU, without observers: the
reference that moe-quant's calibration forward is measured against (layer-tokens per second).

    python3 benches/e2e/torch_forward.py MODEL_DIR CALIB_IDS.json BATCH [EXPERTS_IMPLEMENTATION ...] [--device cpu]

EXPERTS_IMPLEMENTATION is transformers' `experts_implementation` (default: grouped_mm; eager is the per-expert
loop ModelOpt calibrates with). The model is loaded in bf16 on cuda:0 (or the CPU, with all its threads) with
transformers' default attention (sdpa); one batch runs unmeasured first, then every batch through the decoder
(no lm_head, no cache), timed between two device synchronisations. Prints one JSON line per implementation.
"""

import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--device")]
    device = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--device=")), "cuda:0")
    model_dir, ids_path, batch = args[0], args[1], int(args[2])
    implementations = args[3:] or ["grouped_mm"]
    on_gpu = device.startswith("cuda")

    def synchronize() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    with open(ids_path) as f:
        ids = torch.tensor(json.load(f), dtype=torch.long)
    for implementation in implementations:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.bfloat16, device_map=device, experts_implementation=implementation
        )
        model.eval()
        batches = [ids[start : start + batch].to(device) for start in range(0, len(ids), batch)]
        with torch.inference_mode():
            model.model(input_ids=batches[0], use_cache=False)
            synchronize()
            started = time.perf_counter()
            for input_ids in batches:
                model.model(input_ids=input_ids, use_cache=False)
            synchronize()
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
                    "device": device,
                    "threads": torch.get_num_threads(),
                    "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
                }
            ),
            flush=True,
        )
        del model
        if on_gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
