"""The ModelOpt side of the race, as its hf_ptq.py does it minus the dataset download: load with
transformers (bf16, on the GPU), mtq.quantize with a forward loop over the same calibration ids, then
export_hf_checkpoint. Prints the stage times, tokens/s and peak memory as JSON.

    python3 modelopt_race.py MODEL_DIR OUTPUT_DIR fp8|nvfp4 CALIB_IDS.json BATCH_SIZE
"""
import json
import resource
import sys
import time

import torch


def main() -> None:
    model_dir, output, fmt, ids_path, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint
    from transformers import AutoModelForCausalLM

    ids = torch.tensor(json.load(open(ids_path)), dtype=torch.long)
    times = {}
    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda")
    model.eval()
    torch.cuda.synchronize()
    times["load"] = time.time() - t

    def forward_loop(m):
        with torch.no_grad():
            for start in range(0, ids.shape[0], batch_size):
                m(input_ids=ids[start : start + batch_size].cuda())

    cfg = mtq.FP8_DEFAULT_CFG if fmt == "fp8" else mtq.NVFP4_DEFAULT_CFG
    t = time.time()
    mtq.quantize(model, cfg, forward_loop)
    torch.cuda.synchronize()
    times["calibrate"] = time.time() - t
    t = time.time()
    with torch.inference_mode():
        export_hf_checkpoint(model, export_dir=output)
    times["quantize_write"] = time.time() - t
    times["total"] = sum(times.values())
    tokens = ids.numel()
    print(json.dumps({
        "seconds": times,
        "tokens": tokens,
        "layer_tokens_per_second": tokens * model.config.num_hidden_layers / times["calibrate"],
        "peak_gpu_allocated_bytes": torch.cuda.max_memory_allocated(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
