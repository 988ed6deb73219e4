# Reference measurement: wall time of ONE training step of the diffusers Custom Diffusion recipe
# (examples/custom_diffusion/train_custom_diffusion.py, --freeze_model crossattn_kv, --modifier_token <new1>,
# --hflip, no prior preservation, fp32) on CPU, with SD1.5-size models built from config with RANDOM weights
# (nothing is downloaded). Unlike our trainer, the recipe runs its PIL data pipeline and VAE-encodes the image
# on every step, so the timed step covers the whole path: decode + random-scale/crop/flip + tokenize + collate,
# vae.encode, noise/scheduler, text encoder + UNet forward, masked MSE, backward, embedding-grad masking,
# grad clipping, AdamW step, zero_grad.
#
# Run:  /tmp/refenv/bin/python bench/diffusers_recipe_step.py --res 512          (full size, slow on CPU)
#       /tmp/refenv/bin/python bench/diffusers_recipe_step.py --res 128 --tiny   (smoke test, seconds)
#
# This is a reference measurement only, NOT a project dependency. It needs the Python env /tmp/refenv
# (torch, diffusers, transformers) created by ../shared/tools/setup-refenv.sh.
import argparse, io, resource, time
import numpy as np, torch
import torch.nn.functional as F
from PIL import Image
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler

p = argparse.ArgumentParser()
p.add_argument("--res", type=int, default=512); p.add_argument("--batch", type=int, default=1)
p.add_argument("--iters", type=int, default=3); p.add_argument("--threads", type=int, default=2)
p.add_argument("--tiny", action="store_true", help="tiny channel counts for all three models (smoke test)")
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(0); rng = np.random.default_rng(0)

# ---- tokenizer: a real CLIPTokenizer (fast, tokenizers backend) built from a local byte-level vocab with no
# merges (so words split into characters; the sequence is padded to 77 either way). Filler entries pad the vocab
# so that <|startoftext|> = 49406, <|endoftext|> = 49407 and the added modifier token <new1> = 49408, as in SD1.5.
chars = sorted(pre_tokenizers.ByteLevel.alphabet())
vocab = chars + [c + "</w>" for c in chars]
vocab += [f"<|fill{i}|>" for i in range(49406 - len(vocab))] + ["<|startoftext|>", "<|endoftext|>"]
tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[], model_max_length=77)
tokenizer.add_tokens("<new1>"); modifier_token_id = tokenizer.convert_tokens_to_ids("<new1>")
instance_prompt = "photo of a <new1> dog"

# ---- models, built from config with random weights
if a.tiny:
    ch, vae_ch, lpb, head_dim = (32, 64, 64, 64), (32, 64, 64, 64), 1, 2
    tcfg = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, projection_dim=64)
else:
    ch, vae_ch, lpb, head_dim = (320, 640, 1280, 1280), (128, 256, 512, 512), 2, 8
    tcfg = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, projection_dim=768)
text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu", **tcfg))
text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # 49409 rows, as the recipe
vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=vae_ch,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=lpb if a.tiny else 2, sample_size=512, scaling_factor=0.18215)
unet = UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, layers_per_block=lpb,
    block_out_channels=ch, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=tcfg["hidden_size"],
    attention_head_dim=head_dim)
noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")

# ---- freezing as the recipe: VAE and UNet frozen; text encoder frozen except the token embedding;
# UNet cross-attention (attn2) to_k / to_v trainable (see deviation note: trained in place, no custom processors).
vae.requires_grad_(False); unet.requires_grad_(False)
text_encoder.requires_grad_(False)
token_embedding = text_encoder.get_input_embeddings(); token_embedding.requires_grad_(True)
unet_params = []
for n, m in unet.named_parameters():
    if "attn2.to_k" in n or "attn2.to_v" in n: m.requires_grad_(True); unet_params.append(m)
print("trainable unet", sum(q.numel() for q in unet_params), "embedding", token_embedding.weight.numel(),
      "total unet", sum(q.numel() for q in unet.parameters()), "vae", sum(q.numel() for q in vae.parameters()),
      "text", sum(q.numel() for q in text_encoder.parameters()))
optimizer = torch.optim.AdamW(list(token_embedding.parameters()) + unet_params, lr=1e-5,
                              betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
lr_scheduler = get_scheduler("constant", optimizer=optimizer)
clip_params = list(text_encoder.parameters()) + unet_params  # recipe clips text_encoder.parameters() + custom layers
unet.train(); text_encoder.train()

# ---- data: 4 random-noise images larger than res, kept as in-memory JPEG bytes; each step decodes one
# (the recipe does Image.open from disk each step) and applies the recipe's instance transform.
size = a.res; mask_size = size // 8  # recipe: mask_size = latent side from a VAE probe encode = res / 8
images = []
for _ in range(4):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size * 560 // 512, size * 640 // 512, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    images.append(buf.getvalue())

def example(idx):
    img = Image.open(io.BytesIO(images[idx % len(images)]))
    if img.mode != "RGB": img = img.convert("RGB")
    if rng.uniform() < 0.5: img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # RandomHorizontalFlip(0.5)
    # random scale: 2/3 of the time shrink into [size/3, size], else zoom to [1.2, 1.4) * size
    scale = int(rng.integers(size // 3, size + 1)) if rng.uniform() < 0.66 else int(rng.integers(int(1.2 * size), int(1.4 * size)))
    factor = size // mask_size
    outer, inner = (scale, size) if scale > size else (size, scale)
    top, left = int(rng.integers(0, outer - inner + 1)), int(rng.integers(0, outer - inner + 1))
    arr = (np.asarray(img.resize((scale, scale), resample=Image.BILINEAR), dtype=np.uint8) / 127.5 - 1.0).astype(np.float32)
    if scale > size:  # zoomed in: random crop, whole latent valid
        canvas = arr[top:top + size, left:left + size, :]
        mask = np.ones((mask_size, mask_size))
    else:  # shrunk: paste into a zero canvas, mask the pasted region (minus a 1-latent border)
        canvas = np.zeros((size, size, 3), dtype=np.float32); canvas[top:top + scale, left:left + scale, :] = arr
        mask = np.zeros((mask_size, mask_size))
        mask[top // factor + 1:(top + scale) // factor - 1, left // factor + 1:(left + scale) // factor - 1] = 1.0
    prompt = instance_prompt
    if scale < 0.6 * size: prompt = str(rng.choice(["a far away ", "very small "])) + prompt
    elif scale > size: prompt = str(rng.choice(["zoomed in ", "close up "])) + prompt
    ids = tokenizer(prompt, truncation=True, padding="max_length", max_length=tokenizer.model_max_length,
                    return_tensors="pt").input_ids
    return torch.from_numpy(canvas).permute(2, 0, 1), torch.from_numpy(mask), ids

def batch_at(step):
    ex = [example(step * a.batch + i) for i in range(a.batch)]  # collate as the recipe's collate_fn
    pix = torch.stack([e[0] for e in ex]).to(memory_format=torch.contiguous_format).float()
    mask = torch.stack([e[1] for e in ex]).to(memory_format=torch.contiguous_format).float().unsqueeze(1)
    return pix, mask, torch.cat([e[2] for e in ex], dim=0)

ts, split = [], []
for i in range(a.iters + 1):
    t0 = time.perf_counter()
    pixel_values, mask, input_ids = batch_at(i)
    t1 = time.perf_counter()
    latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
    t2 = time.perf_counter()
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    encoder_hidden_states = text_encoder(input_ids)[0]
    model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
    loss = F.mse_loss(model_pred.float(), noise.float(), reduction="none")  # epsilon target, masked mean
    loss = ((loss * mask).sum([1, 2, 3]) / mask.sum([1, 2, 3])).mean()
    loss.backward()
    g = token_embedding.weight.grad  # keep only the modifier token's embedding gradient
    g.data[torch.arange(len(tokenizer)) != modifier_token_id, :] = 0
    torch.nn.utils.clip_grad_norm_(clip_params, 1.0)
    optimizer.step(); lr_scheduler.step(); optimizer.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    ts.append(t3 - t0); split.append((t1 - t0, t2 - t1, t3 - t2))
best = min(range(1, len(ts)), key=lambda k: ts[k]) if len(ts) > 1 else 0
d, v, r = split[best]
print(f"res {a.res} batch {a.batch}{' tiny' if a.tiny else ''} threads {a.threads} step seconds (first is warm-up): "
      f"{[round(s, 2) for s in ts]} min {ts[best]:.2f} (data {d:.3f}, vae encode {v:.2f}, rest {r:.2f})")
print("loss", round(loss.item(), 4), "peak RSS GiB", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2))
