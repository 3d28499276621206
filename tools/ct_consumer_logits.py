"""A compressed-tensors checkpoint read by its reference consumers, for the compressed-tensors export test.

  python tools/ct_consumer_logits.py logits MODEL_DIR IDS_JSON OUT_FILE
      transformers with the compressed-tensors package loads MODEL_DIR on the CPU in float32, the weights
      decompressed by compressed-tensors at load (run_compressed=False; NVFP4 weights decompressed in bf16, as
      compressed-tensors does), and runs the eager forward over the rows of
      token ids in IDS_JSON with activation quantization switched off (moe-quant's forward does not quantize
      activations). The logits are written to OUT_FILE as raw little-endian float32 [rows, seq_len, vocab].

  python tools/ct_consumer_logits.py decompress MODEL_DIR OUT_DIR
      every quantized weight of MODEL_DIR decoded with compressed-tensors' own functions (unpack_fp4_from_uint8,
      dequantize) in float32, written with the other tensors as an unquantized checkpoint in OUT_DIR (config.json
      without quantization_config). For models whose transformers class cannot load the checkpoint (transformers
      5.17 merges MoE experts without their NVFP4 global scale).

The versions used are printed as JSON. Exit status 3 when transformers, compressed-tensors or torch is missing.
"""
import json
import os
import sys


def versions(**extra):
    import compressed_tensors
    import torch
    import transformers

    return {"transformers": transformers.__version__, "compressed_tensors": compressed_tensors.__version__, "torch": torch.__version__, **extra}


def logits(model_dir, ids_file, out_file):
    import torch
    from compressed_tensors.quantization import disable_quantization
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=torch.float32,
        quantization_config=CompressedTensorsConfig(run_compressed=False),
        attn_implementation="eager",
    )
    model.apply(disable_quantization)
    # compressed-tensors decompresses NVFP4 weights in bf16 (unpack_fp4_from_uint8's default dtype): cast them back
    # to the float32 the model was loaded in.
    model.float()
    model.eval()
    ids = torch.tensor(json.load(open(ids_file)), dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=ids).logits.float().contiguous()
    out.numpy().tofile(out_file)
    return versions(shape=list(out.shape))


def decompress(model_dir, out_dir):
    import torch
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from safetensors.torch import load_file, save_file

    config = json.load(open(os.path.join(model_dir, "config.json")))
    section = config.pop("quantization_config")
    (group,) = section["config_groups"].values()
    args = QuantizationArgs(**group["weights"])
    tensors = {}
    for name in sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors")):
        tensors.update(load_file(os.path.join(model_dir, name)))
    out, decoded = {}, 0
    for name, tensor in tensors.items():
        module, _, leaf = name.rpartition(".")
        if leaf == "weight_packed":
            rows, half = tensor.shape
            codes = unpack_fp4_from_uint8(tensor, rows, half * 2, dtype=torch.float32)
            scale = tensors[f"{module}.weight_scale"].to(torch.float32)
            global_scale = tensors[f"{module}.weight_global_scale"].to(torch.float32)
            out[f"{module}.weight"] = dequantize(codes, scale, args=args, dtype=torch.float32, global_scale=global_scale)
            decoded += 1
        elif leaf == "weight" and tensor.dtype == torch.float8_e4m3fn:
            scale = tensors[f"{module}.weight_scale"].to(torch.float32)
            out[name] = dequantize(tensor.to(torch.float32), scale, args=args, dtype=torch.float32)
            decoded += 1
        elif leaf not in ("weight_scale", "weight_global_scale", "input_scale", "input_global_scale"):
            out[name] = tensor
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return versions(decoded=decoded)


def main():
    try:
        import compressed_tensors  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        print(f"missing: {error}", file=sys.stderr)
        return 3
    mode, *rest = sys.argv[1:]
    result = {"logits": logits, "decompress": decompress}[mode](*rest)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
