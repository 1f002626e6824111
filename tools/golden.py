#!/usr/bin/python3
"""Golden reference fixtures: the same tiny models built in PyTorch.

Writes test/fixtures/golden/<name>.safetensors for the presets tiny, tiny-rec2 and tiny-rec2 with
rank-4 LoRA: weights, inputs, targets, logits, loss, the gradient of every parameter, and the
losses of 5 AdamW steps with gradient clipping. The TypeScript test (test/golden.test.ts) loads
the weights into our model and compares everything. Run with Debian's python3-torch:

    /usr/bin/python3 tools/golden.py

Fixture format version 1: a safetensors file; metadata keys format="mor-golden", version="1",
config (JSON, our config.json), batch, seq_len, adamw (JSON of the optimiser settings).
Tensors: input_ids, targets (I32, B*T); param.<name>, grad.<name> (F32); logits (B*T, V);
loss [1]; step_losses [6] (the loss before each of 5 AdamW steps, and after the last).
"""
import json
import math
import os
import struct

import torch

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'golden')

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
            initializer_range=0.02, recursion=None)

MATRICES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
ADAMW = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, clip=1.0, steps=5)


def matrix_path(m):
    return ('mlp.' if m in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn.') + m


def matrix_shape(c, m):
    d, hd = c['hidden_size'], c['hidden_size'] // c['num_attention_heads']
    q, kv, i = c['num_attention_heads'] * hd, c['num_key_value_heads'] * hd, c['intermediate_size']
    return {'q_proj': (q, d), 'k_proj': (kv, d), 'v_proj': (kv, d), 'o_proj': (d, q),
            'gate_proj': (i, d), 'up_proj': (i, d), 'down_proj': (d, i)}[m]


def layer_plan(c):
    """Unique layer used at each unrolled position (middle_cycle or vanilla)."""
    L = c['num_hidden_layers']
    rec = c['recursion']
    if rec is None:
        return list(range(L)), L
    assert rec['sharing'] == 'middle_cycle'
    K = (L - 2) // rec['num_recursions']
    return [0] + [1 + (p - 1) % K for p in range(1, L - 1)] + [K + 1], K + 2


def make_params(c, gen):
    """Named parameters. Norm scales are ones plus noise and LoRA B is random, so that every
    gradient path is exercised (the from-scratch init would make some trivially zero)."""
    d = c['hidden_size']
    p = {'model.embed_tokens.weight': torch.randn(c['vocab_size'], d, generator=gen) * 0.02}
    plan, n_unique = layer_plan(c)
    for u in range(n_unique):
        for norm in ('input_layernorm', 'post_attention_layernorm'):
            p[f'model.layers.{u}.{norm}.weight'] = 1 + 0.1 * torch.randn(d, generator=gen)
        for m in MATRICES:
            p[f'model.layers.{u}.{matrix_path(m)}.weight'] = torch.randn(*matrix_shape(c, m), generator=gen) * 0.02
    p['model.norm.weight'] = 1 + 0.1 * torch.randn(d, generator=gen)
    rank = (c['recursion'] or {}).get('lora_rank', 0)
    if rank:
        for pos in range(c['num_hidden_layers']):
            for m in MATRICES:
                out, inp = matrix_shape(c, m)
                r = min(rank, inp, out)
                p[f'model.lora.{pos}.{matrix_path(m)}.lora_A'] = torch.randn(r, inp, generator=gen) * 0.02
                p[f'model.lora.{pos}.{matrix_path(m)}.lora_B'] = torch.randn(out, r, generator=gen) * 0.02
    return {k: v.float().requires_grad_(True) for k, v in p.items()}


def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, pos, theta):
    # x (B, T, H, HD); rotate-half convention, angles in float32 as Hugging Face computes them
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = pos.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def forward(c, p, ids, B, T):
    d, H, KVH = c['hidden_size'], c['num_attention_heads'], c['num_key_value_heads']
    hd = d // H
    plan, _ = layer_plan(c)
    rank = (c['recursion'] or {}).get('lora_rank', 0)
    pos = torch.arange(T)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    h = p['model.embed_tokens.weight'][ids.long()].view(B, T, d)
    for l, u in enumerate(plan):
        def lin(x, m):
            y = x @ p[f'model.layers.{u}.{matrix_path(m)}.weight'].T
            if rank:
                a = p[f'model.lora.{l}.{matrix_path(m)}.lora_A']
                b = p[f'model.lora.{l}.{matrix_path(m)}.lora_B']
                y = y + (x @ a.T) @ b.T
            return y
        x = rmsnorm(h, p[f'model.layers.{u}.input_layernorm.weight'], c['rms_norm_eps'])
        q = rope(lin(x, 'q_proj').view(B, T, H, hd), pos, c['rope_theta'])
        k = rope(lin(x, 'k_proj').view(B, T, KVH, hd), pos, c['rope_theta'])
        v = lin(x, 'v_proj').view(B, T, KVH, hd)
        k = k.repeat_interleave(H // KVH, dim=2)
        v = v.repeat_interleave(H // KVH, dim=2)
        s = torch.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(hd)
        s = s.masked_fill(~mask, float('-inf'))
        a = torch.einsum('bhqk,bkhd->bqhd', s.softmax(-1), v).reshape(B, T, H * hd)
        h = h + lin(a, 'o_proj')
        x = rmsnorm(h, p[f'model.layers.{u}.post_attention_layernorm.weight'], c['rms_norm_eps'])
        h = h + lin(torch.nn.functional.silu(lin(x, 'gate_proj')) * lin(x, 'up_proj'), 'down_proj')
    h = rmsnorm(h, p['model.norm.weight'], c['rms_norm_eps'])
    return (h @ p['model.embed_tokens.weight'].T).view(B * T, -1)


def loss_of(logits, targets):
    return torch.nn.functional.cross_entropy(logits, targets.long(), ignore_index=-100)


def write_safetensors(path, tensors, metadata):
    header, chunks, off = {'__metadata__': metadata}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        dtype = {torch.float32: 'F32', torch.int32: 'I32', torch.bfloat16: 'BF16'}[t.dtype]
        # numpy has no bfloat16: its bytes are those of the same bits read as int16
        b = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {'dtype': dtype, 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    hb = json.dumps(header).encode()
    hb += b' ' * ((8 - (8 + len(hb)) % 8) % 8)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(struct.pack('<Q', len(hb)))
        f.write(hb)
        for b in chunks:
            f.write(b)
    os.replace(tmp, path)


def build(name, config, seed, B=2, T=16):
    gen = torch.Generator().manual_seed(seed)
    p = make_params(config, gen)
    ids = torch.randint(0, config['vocab_size'], (B * T,), generator=gen, dtype=torch.int32)
    targets = torch.randint(0, config['vocab_size'], (B * T,), generator=gen, dtype=torch.int32)
    targets[3] = -100  # an ignored target
    targets[B * T - 1] = -100

    logits = forward(config, p, ids, B, T)
    loss = loss_of(logits, targets)
    loss.backward()
    grads = {k: v.grad.clone() for k, v in p.items()}
    out = {'input_ids': ids, 'targets': targets, 'logits': logits, 'loss': loss.reshape(1)}
    out.update({f'param.{k}': v.detach().clone() for k, v in p.items()})  # before the optimiser moves them
    out.update({f'grad.{k}': v for k, v in grads.items()})

    # 5 AdamW steps with global-norm clipping, weight decay on matrices only.
    names = list(p.keys())
    decay = [p[k] for k in names if p[k].dim() >= 2]
    no_decay = [p[k] for k in names if p[k].dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': ADAMW['weight_decay']},
                             {'params': no_decay, 'weight_decay': 0.0}],
                            lr=ADAMW['lr'], betas=(ADAMW['beta1'], ADAMW['beta2']), eps=ADAMW['eps'])
    losses = []
    for _ in range(ADAMW['steps']):
        opt.zero_grad()
        l = loss_of(forward(config, p, ids, B, T), targets)
        losses.append(l.item())
        l.backward()
        torch.nn.utils.clip_grad_norm_(list(p.values()), ADAMW['clip'])
        opt.step()
    with torch.no_grad():
        losses.append(loss_of(forward(config, p, ids, B, T), targets).item())
    out['step_losses'] = torch.tensor(losses, dtype=torch.float32)

    meta = {'format': 'mor-golden', 'version': '1', 'config': json.dumps(config),
            'batch': str(B), 'seq_len': str(T), 'adamw': json.dumps(ADAMW),
            'torch': torch.__version__}
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f'{name}.safetensors')
    write_safetensors(path, out, meta)
    print(f'{path}: loss {loss.item():.6f}, step losses {[round(x, 6) for x in losses]}')


def main():
    torch.manual_seed(0)
    build('tiny', dict(TINY), seed=1)
    rec2 = dict(TINY, recursion=dict(num_recursions=2, sharing='middle_cycle', lora_rank=0))
    build('tiny-rec2', rec2, seed=2)
    rec2_lora = dict(TINY, recursion=dict(num_recursions=2, sharing='middle_cycle', lora_rank=4))
    build('tiny-rec2-lora', rec2_lora, seed=3)


if __name__ == '__main__':
    main()
