//! Writes the synthetic checkpoint of the memory benchmark (benches/memory): Qwen3-30B-A3B's shapes (H 2048,
//! 128 experts, top-8, I 768, 32 heads, 4 KV heads, head_dim 128) with a small vocabulary and as many decoder
//! layers as asked, hub per-expert layout, pseudo-random bf16 weights (normal-ish, std 0.02; norms 1) written
//! as real bytes (no sparse file, no zeros), sharded at about 5 GB with `model.safetensors.index.json`, plus
//! `config.json` (model_type qwen3_moe) and `calib_ids.json` (seeded random ids, SAMPLES × SEQ_LEN).
//!
//! usage: make_big_checkpoint OUT_DIR [LAYERS|auto] [VOCAB] [SAMPLES] [SEQ_LEN]
//!
//! `auto` (the default) picks the fewest layers whose checkpoint is at least 5% larger than this machine's
//! RAM (`MemTotal` of /proc/meminfo). Prints one JSON line: layers, bytes per layer, total bytes, shards,
//! MemTotal, seconds. Values come from a table of 65,536 normal samples (Box–Muller) indexed by a
//! xorshift64* stream, 4 values per 64-bit draw, so generation runs at disk speed; a second thread writes.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

const H: usize = 2048;
const E: usize = 128;
const TOP_K: usize = 8;
const I: usize = 768;
const HEADS: usize = 32;
const KV: usize = 4;
const D: usize = 128;
const MAX_SHARD: u64 = 5_000_000_000;
/// Bytes generated per write (the writer thread holds at most two of these in flight).
const CHUNK: usize = 64 << 20;

fn main() {
    if let Err(message) = run() {
        eprintln!("make_big_checkpoint: {message}");
        std::process::exit(1);
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

/// bf16 bits of `x` (round to nearest even; finite inputs only).
fn bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

fn mem_total_bytes() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).ok_or("/proc/meminfo has no MemTotal")?;
    let kib: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or("unreadable MemTotal")?;
    Ok(kib * 1024)
}

/// The hub tensor list of a Qwen3-MoE checkpoint in file order (as benches/e2e/prepare.mjs builds it).
fn tensors(layers: usize, vocab: usize) -> Vec<(String, Vec<usize>)> {
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![vocab, H])];
    for l in 0..layers {
        let p = format!("model.layers.{l}.");
        out.push((format!("{p}input_layernorm.weight"), vec![H]));
        out.push((format!("{p}post_attention_layernorm.weight"), vec![H]));
        out.push((format!("{p}self_attn.q_proj.weight"), vec![HEADS * D, H]));
        out.push((format!("{p}self_attn.k_proj.weight"), vec![KV * D, H]));
        out.push((format!("{p}self_attn.v_proj.weight"), vec![KV * D, H]));
        out.push((format!("{p}self_attn.o_proj.weight"), vec![H, HEADS * D]));
        out.push((format!("{p}self_attn.q_norm.weight"), vec![D]));
        out.push((format!("{p}self_attn.k_norm.weight"), vec![D]));
        out.push((format!("{p}mlp.gate.weight"), vec![E, H]));
        for e in 0..E {
            out.push((format!("{p}mlp.experts.{e}.gate_proj.weight"), vec![I, H]));
            out.push((format!("{p}mlp.experts.{e}.up_proj.weight"), vec![I, H]));
            out.push((format!("{p}mlp.experts.{e}.down_proj.weight"), vec![H, I]));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![H]));
    out.push(("lm_head.weight".to_string(), vec![vocab, H]));
    out
}

fn bytes_of(shape: &[usize]) -> u64 {
    shape.iter().product::<usize>() as u64 * 2
}

fn config(layers: usize, vocab: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen3MoeForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "decoder_sparse_step": 1,
        "eos_token_id": 0,
        "head_dim": D,
        "hidden_act": "silu",
        "hidden_size": H,
        "initializer_range": 0.02,
        "intermediate_size": 6144,
        "max_position_embeddings": 40960,
        "max_window_layers": layers,
        "mlp_only_layers": [],
        "model_type": "qwen3_moe",
        "moe_intermediate_size": I,
        "norm_topk_prob": true,
        "num_attention_heads": HEADS,
        "num_experts": E,
        "num_experts_per_tok": TOP_K,
        "num_hidden_layers": layers,
        "num_key_value_heads": KV,
        "output_router_logits": false,
        "rms_norm_eps": 1e-6,
        "rope_scaling": null,
        "rope_theta": 1_000_000.0,
        "router_aux_loss_coef": 0.001,
        "sliding_window": null,
        "tie_word_embeddings": false,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0",
        "use_cache": true,
        "use_sliding_window": false,
        "vocab_size": vocab
    })
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T, what: &str) -> Result<T, String> {
    match args.get(i) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| format!("{what}: expected a number, got {text:?}")),
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: make_big_checkpoint OUT_DIR [LAYERS|auto] [VOCAB] [SAMPLES] [SEQ_LEN]";
    let out = Path::new(args.first().ok_or(usage)?);
    let vocab: usize = arg(&args, 2, 1024, "VOCAB")?;
    let samples: usize = arg(&args, 3, 2, "SAMPLES")?;
    let seq_len: usize = arg(&args, 4, 16, "SEQ_LEN")?;
    let mem_total = mem_total_bytes()?;
    let per_layer: u64 =
        tensors(1, vocab).iter().map(|(_, s)| bytes_of(s)).sum::<u64>() - 2 * bytes_of(&[vocab, H]) - 2 * H as u64;
    let fixed = tensors(0, vocab).iter().map(|(_, s)| bytes_of(s)).sum::<u64>();
    let layers = match args.get(1).map(String::as_str) {
        None | Some("auto") => (mem_total + mem_total / 20 - fixed).div_ceil(per_layer) as usize,
        Some(text) => text.parse().map_err(|_| format!("LAYERS: expected a number or auto, got {text:?}"))?,
    };
    let list = tensors(layers, vocab);
    let total: u64 = list.iter().map(|(_, s)| bytes_of(s)).sum();
    let free = free_bytes(out)?;
    if total + (1 << 30) > free {
        return Err(format!("{total} bytes needed, {free} free under {}", out.display()));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let started = Instant::now();

    // Shards of at most MAX_SHARD bytes of data, in file order.
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut shard_bytes = 0u64;
    for (i, (_, shape)) in list.iter().enumerate() {
        let size = bytes_of(shape);
        if shard_bytes > 0 && shard_bytes + size > MAX_SHARD {
            shards.push(Vec::new());
            shard_bytes = 0;
        }
        shard_bytes += size;
        if let Some(last) = shards.last_mut() {
            last.push(i);
        }
    }

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let table: Vec<u16> = (0..65536)
        .map(|_| {
            let (u, v) = (rng.uniform(), rng.uniform());
            let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            bf16((z * 0.02) as f32)
        })
        .collect();
    let one = bf16(1.0).to_le_bytes();

    let mut weight_map = serde_json::Map::new();
    let count = shards.len();
    for (k, members) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{count:05}.safetensors", k + 1);
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
        let mut offset = 0u64;
        for &i in members {
            let (tensor, shape) = &list[i];
            let size = bytes_of(shape);
            header.insert(
                tensor.clone(),
                serde_json::json!({ "dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size] }),
            );
            weight_map.insert(tensor.clone(), serde_json::Value::String(name.clone()));
            offset += size;
        }
        let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| e.to_string())?;
        json.resize(json.len().div_ceil(8) * 8, b' ');
        let path = out.join(&name);
        let tmp = out.join(format!(".{name}.tmp"));
        let mut file = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        file.write_all(&(json.len() as u64).to_le_bytes()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        file.write_all(&json).map_err(|e| format!("{}: {e}", tmp.display()))?;

        // Generate on this thread, write on another: two chunks in flight at most.
        let (send, receive) = sync_channel::<Vec<u8>>(1);
        let written = std::thread::scope(|scope| -> Result<(), String> {
            let writer = scope.spawn(move || -> Result<File, String> {
                for chunk in receive {
                    file.write_all(&chunk).map_err(|e| format!("{}: {e}", tmp.display()))?;
                }
                Ok(file)
            });
            let mut chunk = Vec::with_capacity(CHUNK);
            for &i in members {
                let (tensor, shape) = &list[i];
                let mut left = bytes_of(shape) as usize;
                let norm = tensor.ends_with("norm.weight");
                while left > 0 {
                    let n = (CHUNK - chunk.len()).min(left);
                    if norm {
                        chunk.extend(std::iter::repeat_n(one, n / 2).flatten());
                    } else {
                        // n is even; 4 values (8 bytes) per draw, the last draw possibly cut.
                        let mut todo = n / 2;
                        while todo > 0 {
                            let draw = rng.next();
                            for j in 0..todo.min(4) {
                                let index = (draw >> (16 * j)) as u16 as usize;
                                chunk.extend_from_slice(&table[index].to_le_bytes());
                            }
                            todo -= todo.min(4);
                        }
                    }
                    left -= n;
                    if chunk.len() == CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                        if send.send(full).is_err() {
                            break;
                        }
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = send.send(chunk);
            }
            drop(send);
            let file = writer.join().map_err(|_| "the writer thread panicked".to_string())??;
            file.sync_all().map_err(|e| format!("sync: {e}"))
        });
        written?;
        std::fs::rename(out.join(format!(".{name}.tmp")), &path).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!(
            "{name}: {} tensors, {:.2} GB ({:.0} s)",
            members.len(),
            offset as f64 / 1e9,
            started.elapsed().as_secs_f64()
        );
    }
    let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    write_json(&out.join("model.safetensors.index.json"), &index)?;
    write_json(&out.join("config.json"), &config(layers, vocab))?;
    let ids: Vec<Vec<u64>> = (0..samples).map(|_| (0..seq_len).map(|_| rng.next() % vocab as u64).collect()).collect();
    write_json(&out.join("calib_ids.json"), &serde_json::json!(ids))?;
    let summary = serde_json::json!({
        "layers": layers,
        "layer_bytes": per_layer,
        "checkpoint_bytes": total,
        "shards": count,
        "mem_total_bytes": mem_total,
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{summary}");
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

/// Free bytes of the file system holding `dir` (or its nearest existing ancestor).
fn free_bytes(dir: &Path) -> Result<u64, String> {
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent().ok_or("no existing ancestor")?;
    }
    let output = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(probe)
        .output()
        .map_err(|e| format!("df: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| "df: unreadable output".to_string())
}
