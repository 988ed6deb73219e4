#!/usr/bin/env python3
"""Writes a second reference fixture in the layout of Tests/Fixtures/tiny-sd1, with other sizes, so the
parity tests can be run against it (CD_FIXTURES=DIR swift test ...): two UNet levels of attention with
layers_per_block 2, per-level head counts, linear projections and two transformer layers (SD2 style),
a 3-layer GELU text encoder of width 24, a 2-level VAE (scale factor 2). Every number is computed by
diffusers/transformers in float32 on CPU. Needs the reference venv (../shared/tools/setup-refenv.sh).

Usage: make_alt_fixture.py OUT_DIR [TOKENIZER_DIR]   (TOKENIZER_DIR: a CLIP tokenizer folder to copy;
default Tests/Fixtures/tiny-sd1/model/tokenizer, whose cases/tokenizer.json is copied too)
Not used by the test suite itself: the tests never need Python.
"""
import json, os, shutil, sys
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

out = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
tok_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "../Tests/Fixtures/tiny-sd1/model/tokenizer")
torch.manual_seed(1234)
torch.set_num_threads(1)

unet = UNet2DConditionModel(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 32, 48),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=24, attention_head_dim=(2, 4, 6), norm_num_groups=8, use_linear_projection=True,
    transformer_layers_per_block=2)
text_encoder = CLIPTextModel(CLIPTextConfig(
    vocab_size=49408, hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=3,
    max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407,
    pad_token_id=49407))
vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=2,
                    latent_channels=4, norm_num_groups=4, sample_size=16)
# Random init leaves norms at 1/0; perturb every parameter so no path is an identity.
for m in (unet, text_encoder, vae):
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
                          steps_offset=1, clip_sample=False, timestep_spacing="trailing")
# Kept in the saved config (as SD 1.x configs do) so DDIM.from_config picks up set_alpha_to_one = False.
scheduler.register_to_config(set_alpha_to_one=False, skip_prk_steps=True)
tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
os.makedirs(os.path.join(out, "cases"), exist_ok=True)
pipe.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
shutil.copy(os.path.join(tok_dir, "../../cases/tokenizer.json"), os.path.join(out, "cases/tokenizer.json"))

def save(name, tensors, meta):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(out, "cases", name + ".safetensors"))
    with open(os.path.join(out, "cases", name + ".json"), "w") as f:
        json.dump(dict(meta, name=name, tensors={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in tensors.items()}), f, indent=1)

def ids(prompts):
    return tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

with torch.no_grad():
    # text encoder
    input_ids = ids(["a photo of an astronaut riding a horse on mars", "A red cube on top of a blue sphere, 4k!"])
    te = text_encoder(input_ids, output_hidden_states=True)
    t = {"input_ids": input_ids, "last_hidden_state": te.last_hidden_state}
    for i, h in enumerate(te.hidden_states):
        t[f"hidden_states.{i}"] = h
    save("text_encoder", t, {})

    # UNet with intermediates
    seen = {}
    def hook(name):
        def f(_m, _i, o):
            seen[name] = (o[0] if isinstance(o, tuple) else o).clone()
        return f
    hooks = [unet.time_proj.register_forward_hook(hook("time_proj")), unet.time_embedding.register_forward_hook(hook("time_embedding")),
             unet.conv_in.register_forward_hook(hook("conv_in")), unet.mid_block.register_forward_hook(hook("mid_block"))]
    hooks += [b.register_forward_hook(hook(f"down_blocks.{i}")) for i, b in enumerate(unet.down_blocks)]
    hooks += [b.register_forward_hook(hook(f"up_blocks.{i}")) for i, b in enumerate(unet.up_blocks)]
    sample, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 24)
    timesteps = torch.tensor([10, 999], dtype=torch.int64)
    t = {"sample": sample, "timesteps": timesteps, "encoder_hidden_states": ctx, "out": unet(sample, timesteps, ctx).sample}
    t.update(seen)
    for h in hooks:
        h.remove()
    save("unet_forward", t, {})

    # VAE
    rgb = (np.random.RandomState(5).rand(16, 16, 3) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(os.path.join(out, "cases/vae_input.png"))
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    enc = vae.encoder(image)
    moments = vae.quant_conv(enc)
    dist = vae.encode(image).latent_dist
    save("vae_encode", {"image": image, "encoder_out": enc, "moments": moments, "latent_mean": dist.mean,
                        "latent_logvar": dist.logvar, "latent_std": dist.std}, {"scaling_factor": vae.config.scaling_factor})
    z = torch.randn(1, 4, 8, 8)
    save("vae_decode", {"z": z, "out": vae.decode(z).sample, "z_mean": dist.mean, "out_of_mean": vae.decode(dist.mean).sample}, {})

    # schedulers (trailing spacing from the saved config)
    cfg = dict(pipe.scheduler.config)
    t = {"betas": scheduler.betas, "alphas_cumprod": scheduler.alphas_cumprod}
    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    ts = torch.tensor([17, 951], dtype=torch.int64)
    t.update({"add_noise.original": x0, "add_noise.noise": noise, "add_noise.timesteps": ts, "add_noise.out": scheduler.add_noise(x0, noise, ts)})
    s, mo = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    t.update({"step.sample": s, "step.model_output": mo})
    ddim = DDIMScheduler.from_config(cfg)
    ddim.set_timesteps(4)
    t["ddim.timesteps"] = ddim.timesteps
    for i, ti in enumerate(ddim.timesteps):
        r = ddim.step(mo, ti, s)
        t[f"ddim.step{i}.prev_sample"], t[f"ddim.step{i}.pred_original_sample"] = r.prev_sample, r.pred_original_sample
    eu = EulerDiscreteScheduler.from_config(cfg)
    eu.set_timesteps(4)
    t.update({"euler.timesteps": eu.timesteps, "euler.sigmas": eu.sigmas, "euler.init_noise_sigma": torch.tensor([float(eu.init_noise_sigma)])})
    for i, ti in enumerate(eu.timesteps):
        t[f"euler.step{i}.scaled_model_input"] = eu.scale_model_input(s, ti)
        t[f"euler.step{i}.prev_sample"] = eu.step(mo, ti, s).prev_sample
    save("schedulers", t, {})

    # guided sampling, as StableDiffusionPipeline runs it
    prompt, negative, steps, guidance = "a watercolor painting of a fox in the snow", "", 4, 7.5
    embeds = torch.cat([text_encoder(ids([negative]))[0], text_encoder(ids([prompt]))[0]])
    for name, cls in (("ddim_sample", DDIMScheduler), ("euler_sample", EulerDiscreteScheduler)):
        sch = cls.from_config(cfg)
        sch.set_timesteps(steps)
        lat0 = torch.randn(1, 4, 8, 8)
        lat = lat0 * sch.init_noise_sigma
        t = {"latents_initial": lat0, "init_noise_sigma": torch.tensor([float(sch.init_noise_sigma)]), "prompt_embeds": embeds,
             "timesteps": sch.timesteps}
        for i, ti in enumerate(sch.timesteps):
            inp = sch.scale_model_input(torch.cat([lat] * 2), ti)
            o = unet(inp, ti, embeds).sample
            u, c = o.chunk(2)
            pred = u + guidance * (c - u)
            lat = sch.step(pred, ti, lat).prev_sample
            t.update({f"step{i}.unet_input": inp, f"step{i}.unet_output": o, f"step{i}.noise_pred": pred, f"step{i}.latents": lat})
        dec_in = lat / vae.config.scaling_factor
        dec = vae.decode(dec_in).sample
        t.update({"vae_decode_input": dec_in, "vae_decode_output": dec, "image": (dec / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)})
        save(name, t, {"prompt": prompt, "negative_prompt": negative, "num_inference_steps": steps, "guidance_scale": guidance})
print("wrote", out)
